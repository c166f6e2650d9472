"""Reference models of a segmentation model: its recipe read from a privaudit segmentation
checkpoint, and its replay on a population sample (``privaudit references`` on a segmentation
model; the calibrated attacks, LiRA and the loss-map attack then use them).

Recipes (``Recipe`` with ``task = "segmentation"``):

* ``segmentation``: regular training (``training.segmentation.train_segmentation``): the network,
  classes, input normalisation and ignore index, the training config and the training-set size;
* ``dpsgd``: DP-SGD from scratch with the noise multiplier actually used, the clipping norm, δ
  and the accountant (never the target ε, so references spend the same ε);
* ``argmax``, ``gauss``, ``dmp``: a pipeline on the teacher's recipe (``defense.teacher.recipe``),
  replayed through ``privaudit.defenses.defend`` with the recorded parameters.

Only privaudit segmentation checkpoints record a recipe; other segmentation files are refused with
one line. A model trained from a user-supplied pretrained backbone cannot be replayed (the
backbone file is not part of the checkpoint).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from privaudit import defaults
from privaudit.errors import CheckpointError, InputError
from privaudit.models.segnets import SegArch, SegInfo
from privaudit.references.recipe import Recipe, RecipeFlags, _no_flags, _number, _opt_int, _training_set
from privaudit.training.segmentation import SegTrainConfig

SEG_KINDS = ("segmentation", "dpsgd", "argmax", "gauss", "dmp")
SEG_PIPELINES = ("argmax", "gauss", "dmp")
SEG_TRAIN_TYPES: dict[str, tuple[type, ...]] = {"epochs": (int,), "batch_size": (int,), "lr": (int, float), "beta1": (int, float),
                                                "decay_epochs": (int, type(None)), "augment": (bool,), "amp": (bool,)}


def seg_meta(model: Any) -> dict[str, Any]:
    """A loaded segmentation model's metadata in the form ``defense.teacher.recipe`` records a teacher's."""
    from privaudit.defenses.segmentation import seg_teacher_record

    return {**seg_teacher_record(model), "path": model.path, "sha256": model.sha256}


def read_seg_recipe(model: Any, *, flags: RecipeFlags | None = None, teacher: Any = None) -> Recipe:
    """The recipe of a segmentation ``model`` (a privaudit checkpoint, which records all of it)."""
    if teacher is not None:
        raise InputError(f"--teacher is for generators made before privaudit recorded their teacher's recipe; {model.path} records it: drop --teacher")
    _no_flags(flags or RecipeFlags(), model.path, "a segmentation checkpoint")
    return _from_meta(seg_meta(model), who=model.path)


def _seg_config(d: Any, who: str) -> SegTrainConfig:
    if not isinstance(d, dict):
        raise CheckpointError(f"{who} does not record its training config (provenance.training); references cannot replay it: retrain it with this privaudit")
    values: dict[str, Any] = {}
    for name, types in SEG_TRAIN_TYPES.items():
        if name not in d:
            continue
        v = d[name]
        if (isinstance(v, bool) and bool not in types) or not isinstance(v, types):
            raise CheckpointError(f"{who} records an invalid training {name} {v!r:.60}; re-save the model with privaudit")
        values[name] = float(v) if float in types and not isinstance(v, bool) else v
    try:
        cfg = SegTrainConfig(**values)
        cfg.validate()
    except InputError as exc:
        raise CheckpointError(f"{who} records an invalid training config ({str(exc).split(';')[0]}); re-save the model with privaudit") from None
    return replace(cfg, seed=defaults.SEED, device=defaults.DEVICE)


def _from_meta(meta: dict[str, Any], *, who: str, source: str = "model") -> Recipe:
    if meta.get("format") != "privaudit":
        raise InputError(f"{who} is a {meta.get('format')} segmentation model, which does not record its training recipe; privaudit references replays "
                         "privaudit segmentation checkpoints (train one with privaudit train --task segmentation), or use --shadow for the loss-map attack")
    arch = SegArch.from_dict(meta.get("arch"), who)
    info = SegInfo.from_dict(meta.get("segmentation"), who)
    defense = meta.get("defense") if isinstance(meta.get("defense"), dict) else {"method": "none"}
    method = defense.get("method", "none")
    size = _opt_int(meta.get("image_size"), "image_size", who)
    if not size:
        raise CheckpointError(f"{who} does not record its image size; retrain it with this privaudit")
    base_params = {"segmentation": {k: v for k, v in info.to_dict().items() if k != "palette"}}
    if method == "none":
        training = meta.get("training") if isinstance(meta.get("training"), dict) else None
        if meta.get("backbone_weights"):
            raise InputError(f"{who} was trained from a pretrained backbone you supplied; references cannot replay that yet: use --shadow for the loss-map attack")
        trained_on = _training_set(meta.get("trained_on"), who)
        if trained_on is None:
            raise CheckpointError(f"{who} does not record its training set (provenance.trained_on); retrain it with this privaudit")
        return Recipe(kind="segmentation", arch=arch, image_size=size, direction=None, train_count=trained_on.count,  # type: ignore[arg-type]
                      training=_seg_config(training, who), params=base_params, trained_on=trained_on, source=source, task="segmentation")
    if method == "dpsgd":
        training = meta.get("training")
        trained_on = _training_set(meta.get("trained_on"), who)
        if trained_on is None or not isinstance(training, dict):
            raise CheckpointError(f"{who} is a DP-SGD model that does not record its training set or config; retrain it with this privaudit")
        params = {**base_params,
                  "noise_multiplier": _number(defense.get("noise_multiplier"), "defense.noise_multiplier", who, minimum=0.0),
                  "max_grad_norm": _number(defense.get("max_grad_norm"), "defense.max_grad_norm", who, minimum=0.0),
                  "delta": _number(defense.get("delta"), "defense.delta", who, minimum=0.0),
                  "accountant": str(defense.get("accountant", defaults.DP_ACCOUNTANT))}
        return Recipe(kind="dpsgd", arch=arch, image_size=size, direction=None, train_count=trained_on.count, training=_seg_config(training, who),  # type: ignore[arg-type]
                      params=params, trained_on=trained_on, source=source, task="segmentation")
    if method in SEG_PIPELINES:
        rec = defense.get("teacher") if isinstance(defense.get("teacher"), dict) else {}
        t_meta = rec.get("recipe")
        if not isinstance(t_meta, dict):
            raise CheckpointError(f"{who} is a {method} model that does not record its teacher's recipe; re-create it with privaudit defend")
        teacher = _from_meta({**t_meta, "path": rec.get("path"), "sha256": rec.get("sha256")}, who=f"{who} (its teacher)", source=source)
        if method in ("argmax", "gauss"):
            params = dict(base_params)
            if method == "gauss":
                params["sigma"] = _number(defense.get("sigma"), "defense.sigma", who, minimum=0.0)
            return Recipe(kind=method, arch=arch, image_size=size, direction=None, train_count=teacher.train_count, params=params, teacher=teacher,  # type: ignore[arg-type]
                          source=source, task="segmentation")
        proxy = defense.get("proxy") if isinstance(defense.get("proxy"), dict) else {}
        proxy_count = _opt_int(proxy.get("count"), "defense.proxy.count", who)
        if not proxy_count:
            raise CheckpointError(f"{who} does not record the size of its proxy set (defense.proxy.count); re-create it with privaudit defend")
        params = {**base_params, "proxy_count": proxy_count, "proxy_layout": str(proxy.get("layout") or defaults.PROXY_LAYOUT)}
        return Recipe(kind="dmp", arch=arch, image_size=size, direction=None, train_count=teacher.train_count, training=_seg_config(meta.get("training"), who),  # type: ignore[arg-type]
                      params=params, teacher=teacher, source=source, task="segmentation")
    raise CheckpointError(f"{who} records the defense {method!r}, which privaudit references cannot replay for segmentation models; build references "
                          f"for one of: {', '.join(SEG_KINDS)} models")


def describe(recipe: Recipe) -> str:
    """One line for a summary table."""
    a: SegArch = recipe.arch  # type: ignore[assignment]
    t = recipe.training
    run = f"{t.epochs} epoch{'s' if t.epochs != 1 else ''}, batch {t.batch_size}, lr {t.lr:g}" if t is not None else ""
    if recipe.kind == "argmax":
        return "argmax (labels only), on the teacher's weights"
    if recipe.kind == "gauss":
        return f"gauss, posterior noise σ={recipe.params['sigma']:g}, on the teacher's weights"  # type: ignore[index]
    if recipe.kind == "dmp":
        return f"dmp student {a.describe()}, {run}, on {recipe.params['proxy_count']} proxy photos"  # type: ignore[index]
    if recipe.kind == "dpsgd":
        return f"dpsgd {a.describe()}, {run}, σ {recipe.params['noise_multiplier']:g}, C {recipe.params['max_grad_norm']:g}, on {recipe.train_count} pairs at {recipe.image_size} px"  # type: ignore[index]
    return f"segmentation {a.describe()}, {run}, on {recipe.train_count} pairs at {recipe.image_size} px"


def read_pairs(folder: str | Path, recipe: Recipe, what: str) -> Any:
    """Segmentation pairs in ``folder`` as the recipe's root was trained on them (classes, size, ignore index)."""
    from privaudit.data.labels import load_segmentation_pairs

    root = recipe.root
    info = root.params["segmentation"]  # type: ignore[index]
    return load_segmentation_pairs(folder, num_classes=int(info["num_classes"]), size=root.image_size, ignore_index=int(info["ignore_index"]), what=what)


def read_proxy(proxy: str | Path, student: Recipe) -> Any:
    from privaudit.data.images import load_inputs

    return load_inputs(proxy, direction="AtoB", size=student.image_size, layout=student.params["proxy_layout"], what="--proxy")  # type: ignore[index]


def replay(recipe: Recipe, sample: Any, out: Path, seed: int, teacher: Path | None, *, proxy: Path | None, device: str, resume: bool,
           on_step: Callable[[int, int, int, dict[str, float]], None]) -> None:
    """Write ``out``: one step of a segmentation recipe replayed on ``sample`` with ``seed``."""
    from privaudit.defenses import defend
    from privaudit.defenses.argmax import ArgmaxOptions
    from privaudit.defenses.gauss import GaussOptions
    from privaudit.defenses.segmentation import SegDistillOptions, SegDPSGDOptions
    from privaudit.training.segmentation import train_segmentation

    a: SegArch = recipe.arch  # type: ignore[assignment]
    info = recipe.params["segmentation"]  # type: ignore[index]
    quiet = {"on_warning": lambda line: None}
    if recipe.kind == "segmentation":
        cfg = replace(recipe.training, seed=seed, device=device)  # type: ignore[type-var]
        u = a.unet
        train_segmentation(sample, out, num_classes=a.num_classes, arch=a.name, size=recipe.image_size, ngf=u.ngf if u else defaults.SEG_NGF,
                           num_downs=u.num_downs if u else None, dropout=bool(u.use_dropout) if u else False, normalize=info["normalization"]["name"],
                           ignore_index=int(info["ignore_index"]), classes=list(info["classes"]), config=cfg, resume=resume, on_step=on_step)
    elif recipe.kind == "dpsgd":
        t, p, u = recipe.training, recipe.params, a.unet
        assert t is not None and p is not None
        options = SegDPSGDOptions(epochs=t.epochs, decay_epochs=t.decay_epochs, batch_size=t.batch_size, lr=t.lr, augment=t.augment, num_classes=a.num_classes,
                                  arch=a.name, ngf=u.ngf if u else defaults.SEG_NGF, num_downs=u.num_downs if u else None,
                                  normalize=info["normalization"]["name"], ignore_index=int(info["ignore_index"]), noise_multiplier=p["noise_multiplier"],
                                  max_grad_norm=p["max_grad_norm"], delta=p["delta"], accountant=p["accountant"])
        defend("dpsgd", out=out, train_data=sample, options=options, size=recipe.image_size, seed=seed, device=device, resume=resume, on_step=on_step,
               task="segmentation", **quiet)
    elif recipe.kind == "dmp":
        t = recipe.training
        assert t is not None and recipe.teacher is not None
        ta: SegArch = recipe.teacher.arch  # type: ignore[assignment]
        u = a.unet
        same = ta.unet is not None and u is not None and (u.ngf, u.num_downs) == (ta.unet.ngf, ta.unet.num_downs)
        options = SegDistillOptions(epochs=t.epochs, decay_epochs=t.decay_epochs, batch_size=t.batch_size, lr=t.lr, augment=t.augment,
                                    ngf=None if same or u is None else u.ngf, num_downs=None if same or u is None else u.num_downs,
                                    proxy_layout=recipe.params["proxy_layout"])  # type: ignore[index]
        defend("dmp", out=out, teacher=teacher, proxy=proxy, options=options, size=recipe.image_size, seed=seed, device=device, resume=resume,
               on_step=on_step, task="segmentation", **quiet)
    elif recipe.kind == "gauss":
        defend("gauss", out=out, teacher=teacher, options=GaussOptions(sigma=recipe.params["sigma"]), size=recipe.image_size, seed=seed,  # type: ignore[index]
               device=device, task="segmentation", **quiet)
    elif recipe.kind == "argmax":
        defend("argmax", out=out, teacher=teacher, options=ArgmaxOptions(), size=recipe.image_size, seed=seed, device=device, task="segmentation", **quiet)
    else:
        raise InputError(f"cannot replay a segmentation {recipe.kind} recipe")


def finished_seed(recipe: Recipe, prov: dict[str, Any]) -> Any:
    """The seed a finished segmentation checkpoint records (regular and DP-SGD training alike)."""
    return (prov.get("training") or {}).get("seed")
