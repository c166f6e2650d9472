"""The recipe of a target model: everything a reference model must replay to be a sample of the
same training process (LiRA's "shadow models", Carlini et al. 2022).

A recipe is read from what a model records, and from flags for what it does not:

* a privaudit checkpoint of regular training (``defense.method == "none"``): the U-Net, the image
  size, the direction, the training config (``provenance.training``, a ``TrainConfig`` dict) and
  the training-set size (``provenance.trained_on.count``);
* DP-SGD (``dpsgd``): the same, plus the noise multiplier σ actually used (never the target ε, so
  references spend the same ε), the clipping norm, δ and the accountant;
* a defended model (``akd``, ``dmp``, ``gauss``): a pipeline, i.e. the teacher's recipe (recorded in
  ``defense.teacher.recipe`` since issue 12; older checkpoints: ``--teacher TEACHER.pt``; older
  Gauss checkpoints: ``provenance.teacher_provenance``) and the defense with its parameters (AKD/DMP:
  the student's training config and architecture, λ, the proxy set's size and layout; Gauss: σ);
* a bare pix2pix state_dict or an exported model: the architecture (inferred, or ``--ngf`` ...) and
  the rest from flags (``RecipeFlags``), with one error naming what is missing.

``Recipe.recipe_key()`` is a stable hash of what determines a reference's training (not the seed,
the device, or where the target's private data lives), so pipelines that start from the same
teacher recipe (AKD and DMP of one teacher) can share their reference teachers.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from privaudit import defaults
from privaudit.errors import CheckpointError, InputError
from privaudit.models.arch import NORMS, ModelSpec, UnetArch, check_size
from privaudit.training.config import TrainConfig

if TYPE_CHECKING:
    from privaudit.models.loaded import LoadedModel

KINDS = ("pix2pix", "dpsgd", "akd", "dmp", "gauss")
PIPELINES = ("akd", "dmp", "gauss")
# TrainConfig fields that do not change what a reference learns, or that each reference sets itself.
NOT_IN_KEY = ("seed", "device", "precision", "deterministic")
# Every recipe recorded before --precision carried ``"amp": true`` (bf16 autocast on CUDA, always
# on); keys keep it, so that reference folders and teacher caches built before stay valid.
LEGACY_KEY = {"amp": True}
DP_PARAMS = ("noise_multiplier", "max_grad_norm", "delta", "accountant")


@dataclass(frozen=True)
class RecipeFlags:
    """What the command line supplies for a model that does not record its recipe (None: not given).

    For a model that records a value, a flag may repeat it but not contradict it: references replay
    the recorded recipe."""

    epochs: int | None = None
    decay_epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    lambda_l1: float | None = None
    ndf: int | None = None
    augment: bool | None = None
    size: int | None = None
    direction: str | None = None
    ngf: int | None = None
    num_downs: int | None = None
    norm: str | None = None
    train_count: int | None = None

    def given(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


FLAG_NAMES = {"epochs": "--epochs", "decay_epochs": "--decay-epochs", "batch_size": "--batch-size", "lr": "--lr", "lambda_l1": "--lambda-l1", "ndf": "--ndf",
              "augment": "--augment/--no-augment", "size": "--size", "direction": "--direction", "ngf": "--ngf", "num_downs": "--num-downs", "norm": "--norm",
              "train_count": "--train-count"}
TRAIN_FLAGS = ("epochs", "decay_epochs", "batch_size", "lr", "lambda_l1", "ndf", "augment")


@dataclass(frozen=True)
class TrainingSet:
    """The private pairs a model was trained on, as its checkpoint records them: where they were
    (``path``, as given to training), how many, and their content hash (``data_fingerprint``)."""

    path: str | None
    count: int
    sha256: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "count": self.count, "sha256": self.sha256}


@dataclass(frozen=True, eq=False)
class Recipe:
    """How a model was made, as far as a reference model must replay it.

    ``kind``: pix2pix (regular training), dpsgd, or a pipeline on ``teacher`` (akd, dmp, gauss).
    ``arch``, ``image_size``, ``direction``: the model this step produces. ``train_count``: the
    size of the private training set (a pipeline: its teacher's). ``training``: the config of this
    step's training (pix2pix: the teacher's; akd/dmp: the student's; dpsgd: its inner pix2pix
    config; gauss: None), with seed 0 and device auto (each reference sets its own). ``params``: the
    defense's parameters (akd/dmp: proxy_count, proxy_layout; gauss: sigma; dpsgd: noise_multiplier,
    max_grad_norm, delta, accountant). ``trained_on``: where the private pairs were (for the
    offline overlap check; not part of the key). ``source``: where the recipe came from.
    """

    kind: str
    arch: UnetArch
    image_size: int
    direction: str
    train_count: int
    training: TrainConfig | None = None
    params: dict[str, Any] | None = None
    teacher: "Recipe | None" = None
    trained_on: TrainingSet | None = None
    source: str = "model"
    task: str = "translation"  # "segmentation": arch is a SegArch, training a SegTrainConfig (references.segmentation)

    def key_dict(self) -> dict[str, Any]:
        """What determines a reference's training: the recipe without seed, device, source and the
        target's data location."""
        d: dict[str, Any] = {"kind": self.kind, "arch": self.arch.to_dict(), "image_size": self.image_size, "direction": self.direction,
                             "train_count": self.train_count}
        if self.task != "translation":  # generator recipes keep their keys (and recipe_key) unchanged
            d["task"] = self.task
        if self.training is not None:
            d["training"] = {**{k: v for k, v in self.training.to_dict().items() if k not in NOT_IN_KEY}, **LEGACY_KEY}
        if self.params:
            d["params"] = dict(sorted(self.params.items()))
        if self.teacher is not None:
            d["teacher"] = self.teacher.key_dict()
        return d

    def recipe_key(self) -> str:
        """A stable 16-hex-digit hash of ``key_dict()`` (canonical JSON)."""
        text = json.dumps(self.key_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Recipe) and self.key_dict() == other.key_dict()

    def __hash__(self) -> int:
        return hash(self.recipe_key())

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``recipe``: ``key_dict()`` plus recipe_key, source and trained_on, nested for the teacher."""
        d = self.key_dict()
        if self.teacher is not None:
            d["teacher"] = self.teacher.to_dict()
        d["recipe_key"] = self.recipe_key()
        d["source"] = self.source
        d["trained_on"] = self.trained_on.to_dict() if self.trained_on is not None else None
        return d

    @property
    def root(self) -> "Recipe":
        """The step that trained on the private pairs: the innermost teacher (itself when no pipeline)."""
        return self.teacher.root if self.teacher is not None else self

    @property
    def own_epochs(self) -> int:
        return self.training.epochs if self.training is not None else 0

    @property
    def epochs(self) -> int:
        """Training epochs of the whole pipeline (teacher and student)."""
        return self.own_epochs + (self.teacher.epochs if self.teacher is not None else 0)

    @property
    def needs_proxy(self) -> bool:
        return self.kind in ("akd", "dmp") or (self.teacher is not None and self.teacher.needs_proxy)

    def describe(self) -> str:
        """One line for a summary table (this step only; a pipeline's teacher describes itself)."""
        if self.task == "segmentation":
            from privaudit.references.segmentation import describe

            return describe(self)
        a = self.arch
        net = f"U-Net(num_downs={a.num_downs}, ngf={a.ngf}, {a.norm})"
        if self.kind == "gauss":
            return f"gauss, output noise σ={self.params['sigma']:g}, on the teacher's weights"  # type: ignore[index]
        t = self.training
        run = f"{t.epochs} epoch{'s' if t.epochs != 1 else ''}, batch {t.batch_size}, lr {t.lr:g}" if t is not None else ""
        if self.kind in ("akd", "dmp"):
            p = self.params or {}
            extra = ""
            if p.get("distill_data"):
                dd = p["distill_data"]
                extra += f" + {dd['augment_copies']}x augmented" if dd["augment_copies"] else ""
                extra += f" + {dd['recombine_copies']}x {dd['recombine']}" if dd["recombine"] != "none" else ""
            if p.get("objective"):
                extra += ", " + ", ".join(f"{k} {v:g}" for k, v in p["objective"].items())
            return f"{self.kind} student {net}, {run}, λ {t.lambda_l1:g}, on {p['proxy_count']} proxy inputs{extra}"  # type: ignore[union-attr]
        if self.kind == "dpsgd":
            return f"dpsgd {net}, {run}, σ {self.params['noise_multiplier']:g}, C {self.params['max_grad_norm']:g}, on {self.train_count} pairs at {self.image_size} px {self.direction}"  # type: ignore[index]
        return f"pix2pix {net}, {run}, on {self.train_count} pairs at {self.image_size} px {self.direction}"


# ----------------------------------------------------------------------------------------------
# reading a recipe


def model_meta(model: "LoadedModel") -> dict[str, Any]:
    """A loaded model's metadata in the form ``defense.teacher.recipe`` records a teacher's (see
    ``privaudit.defenses.base.teacher_record``), so one parser reads both."""
    from privaudit.defenses.base import teacher_record

    return {**teacher_record(model), "path": model.path, "sha256": model.sha256}


def read_recipe(model: "LoadedModel", *, flags: RecipeFlags | None = None, teacher: "LoadedModel | None" = None) -> Recipe:
    """The recipe of ``model`` (see the module docstring). ``flags`` fill in what the model does not
    record (and may not contradict what it does); ``teacher`` is the teacher of an akd/dmp/gauss
    model whose checkpoint predates ``defense.teacher.recipe``. Raises ``InputError`` naming the
    missing flag or ``--teacher``, ``CheckpointError`` for a malformed record."""
    flags = flags or RecipeFlags()
    if getattr(model, "task", "translation") == "segmentation":
        from privaudit.references.segmentation import read_seg_recipe

        return read_seg_recipe(model, flags=flags, teacher=teacher)
    meta = model_meta(model)
    teacher_meta = model_meta(teacher) if teacher is not None else None
    recipe = _from_meta(meta, flags, who=model.path, teacher_meta=teacher_meta)
    if teacher is not None and not _uses_teacher_flag(recipe):
        raise InputError(f"--teacher is for a defended model (akd, dmp, gauss) whose checkpoint does not record its teacher's recipe; {model.path} "
                         f"{'records it' if recipe.kind in PIPELINES else f'is a {recipe.kind} model'}: drop --teacher")
    return recipe


def _uses_teacher_flag(recipe: Recipe) -> bool:
    return recipe.source == "--teacher" or (recipe.teacher is not None and _uses_teacher_flag(recipe.teacher))


def _from_meta(meta: dict[str, Any], flags: RecipeFlags, *, who: str, teacher_meta: dict[str, Any] | None,
               inherit: dict[str, Any] | None = None, source: str = "model") -> Recipe:
    fmt = meta.get("format")
    defense = meta.get("defense") if isinstance(meta.get("defense"), dict) else {"method": "none"}
    method = defense.get("method", "none")
    if fmt != "privaudit" or method == "none":
        return _pix2pix(meta, flags, who=who, inherit=inherit or {}, source=source)
    if method == "dpsgd":
        return _dpsgd(meta, defense, flags, who=who, source=source)
    if method in PIPELINES:
        return _pipeline(meta, defense, method, flags, who=who, teacher_meta=teacher_meta, source=source)
    raise CheckpointError(f"{who} records the defense {method!r}, which privaudit references cannot replay; build references for one of: "
                          f"{', '.join(k for k in KINDS)} models")


def _pix2pix(meta: dict[str, Any], flags: RecipeFlags, *, who: str, inherit: dict[str, Any], source: str) -> Recipe:
    """Regular pix2pix training, from the record and the flags."""
    used_flags = False
    size, f1 = _merged(_opt_int(meta.get("image_size"), "image_size", who) or inherit.get("image_size"), flags.size, "size", who)
    direction, f2 = _merged(meta.get("direction") or inherit.get("direction"), flags.direction, "direction", who)
    used_flags |= f1 or f2
    if direction is not None and direction not in ("AtoB", "BtoA"):
        raise InputError(f"invalid --direction {direction!r}; use AtoB (left half is the input) or BtoA (right half is the input)")
    arch, f3 = _arch(meta, flags, size, who=who)
    used_flags |= f3
    trained_on = _training_set(meta.get("trained_on"), who)
    count, f4 = _merged(trained_on.count if trained_on else None, flags.train_count, "train_count", who)
    used_flags |= f4
    recorded = meta.get("training")
    if recorded is not None:
        cfg = _train_config(recorded, who)
        for name in TRAIN_FLAGS:
            value = getattr(flags, name)
            if value is not None and not _same(getattr(cfg, name) if name != "decay_epochs" else cfg.n_decay, value):
                raise InputError(f"{who} records {FLAG_NAMES[name]} {_show(getattr(cfg, name) if name != 'decay_epochs' else cfg.n_decay)}; "
                                 f"references replay the recorded recipe: drop {FLAG_NAMES[name]}")
    else:
        cfg = _config_from_flags(flags)
        used_flags = True
    missing = [FLAG_NAMES[n] + hint for n, v, hint in (
        ("epochs", cfg.epochs if cfg is not None else None, f" (pix2pix trains {defaults.EPOCHS})"),
        ("size", size, " (the image size it was trained at)"),
        ("direction", direction, " (AtoB or BtoA)"),
        ("train_count", count, " (how many pairs it was trained on)"),
    ) if v is None]
    if missing:
        from privaudit.data.checks import FORMAT_NAMES

        kind = FORMAT_NAMES.get(str(meta.get("format")), "a model")
        raise InputError(f"{who} is {kind} that does not record its training recipe; pass {', '.join(missing)}")
    assert cfg is not None and size is not None and direction is not None and count is not None
    if count < 1:
        raise InputError(f"--train-count must be at least 1, not {count}")
    check_size(int(size), arch.num_downs)
    return Recipe(kind="pix2pix", arch=arch, image_size=int(size), direction=str(direction), train_count=int(count), training=_neutral(cfg),
                  trained_on=trained_on, source=_source(source, used_flags))


def _dpsgd(meta: dict[str, Any], defense: dict[str, Any], flags: RecipeFlags, *, who: str, source: str) -> Recipe:
    _no_flags(flags, who, "a DP-SGD model")
    recorded = meta.get("training")
    if not isinstance(recorded, dict) or not isinstance(recorded.get("train"), dict):
        raise CheckpointError(f"{who} is a DP-SGD model that does not record its training config (provenance.training.train); "
                              "references cannot replay it: retrain it with this privaudit")
    cfg = _train_config(recorded["train"], who)
    arch = _recorded_arch(meta, who)
    size = _opt_int(meta.get("image_size"), "image_size", who)
    trained_on = _training_set(meta.get("trained_on"), who)
    if not size or trained_on is None or meta.get("direction") not in ("AtoB", "BtoA"):
        raise CheckpointError(f"{who} is a DP-SGD model that does not record its image size, direction or training-set size; retrain it with this privaudit")
    sigma = _number(defense.get("noise_multiplier"), "defense.noise_multiplier", who, minimum=0.0)
    params = {
        "noise_multiplier": sigma,
        "max_grad_norm": _number(defense.get("max_grad_norm", recorded.get("max_grad_norm")), "defense.max_grad_norm", who, minimum=0.0),
        "delta": _number(defense.get("delta"), "defense.delta", who, minimum=0.0),
        "accountant": str(defense.get("accountant", recorded.get("accountant", defaults.DP_ACCOUNTANT))),
    }
    return Recipe(kind="dpsgd", arch=arch, image_size=size, direction=meta["direction"], train_count=trained_on.count, training=_neutral(cfg), params=params,
                  trained_on=trained_on, source=source)


def _pipeline(meta: dict[str, Any], defense: dict[str, Any], method: str, flags: RecipeFlags, *, who: str, teacher_meta: dict[str, Any] | None,
              source: str) -> Recipe:
    """akd, dmp, gauss: the teacher's recipe, then the defense with its recorded parameters."""
    rec_teacher = defense.get("teacher") if isinstance(defense.get("teacher"), dict) else {}
    t_meta, t_source, t_who = rec_teacher.get("recipe"), "model", f"{who} (its teacher)"
    if not isinstance(t_meta, dict) and method == "gauss" and isinstance(meta.get("teacher_provenance"), dict):
        # Gauss checkpoints have always kept the teacher's provenance; the weights, and so the U-Net, are the teacher's.
        tp = meta["teacher_provenance"]
        t_meta = {"format": "privaudit", "arch": meta.get("arch"), "image_size": meta.get("image_size"), "direction": meta.get("direction"),
                  "defense": {"method": "none"}, "training": tp.get("training"), "trained_on": tp.get("trained_on")}
        if tp.get("training") is None:
            t_meta = None
    if not isinstance(t_meta, dict):
        if teacher_meta is None:
            raise InputError(f"{who} is a {method} model whose checkpoint does not record its teacher's recipe (made before privaudit recorded it); "
                             "pass --teacher TEACHER.pt, the model it was made from")
        recorded_sha = rec_teacher.get("sha256")
        if isinstance(recorded_sha, str) and recorded_sha != teacher_meta.get("sha256"):
            raise InputError(f"--teacher {teacher_meta.get('path')} is not the teacher {who} was made from (its sha256 differs from the recorded "
                             f"{recorded_sha[:12]}…, {rec_teacher.get('path')}); pass that model")
        t_meta, t_source, t_who = teacher_meta, "--teacher", str(teacher_meta.get("path"))
    inherit = {"image_size": _opt_int(meta.get("image_size"), "image_size", who), "direction": meta.get("direction")}
    teacher = _from_meta(t_meta, flags, who=t_who, teacher_meta=None, inherit=inherit, source=t_source)
    arch = _recorded_arch(meta, who)
    size = _opt_int(meta.get("image_size"), "image_size", who) or teacher.image_size
    direction = meta.get("direction") or teacher.direction
    if method == "gauss":
        sigma = _number(defense.get("sigma"), "defense.sigma", who, minimum=0.0)
        if arch != teacher.arch:
            raise CheckpointError(f"{who} is a Gauss model whose U-Net differs from its teacher's recorded one; the record is inconsistent, re-create it with privaudit defend")
        return Recipe(kind="gauss", arch=arch, image_size=size, direction=direction, train_count=teacher.train_count, params={"sigma": sigma},
                      teacher=teacher, source=source)
    recorded = meta.get("training")
    if not isinstance(recorded, dict):
        raise CheckpointError(f"{who} is a {method} student that does not record its training config (provenance.training); re-create it with privaudit defend")
    cfg = _train_config(recorded, who)
    proxy = defense.get("proxy") if isinstance(defense.get("proxy"), dict) else {}
    proxy_count = _opt_int(proxy.get("count"), "defense.proxy.count", who)
    if not proxy_count:
        raise CheckpointError(f"{who} does not record the size of its proxy set (defense.proxy.count); re-create it with privaudit defend")
    params = {"proxy_count": proxy_count, "proxy_layout": str(proxy.get("layout") or defaults.PROXY_LAYOUT), **_distill_params(defense, method, who)}
    return Recipe(kind=method, arch=arch, image_size=size, direction=direction, train_count=teacher.train_count, training=_neutral(cfg), params=params,
                  teacher=teacher, source=source)


# ----------------------------------------------------------------------------------------------
# typed reading of untrusted records


def _distill_params(defense: dict[str, Any], method: str, who: str) -> dict[str, Any]:
    """An akd/dmp student's distillation set and objective beyond the AKD paper's (``defense.distill_data``,
    ``defense.objective``), checked as ``privaudit defend`` checks its flags. A checkpoint without them
    (all made before they existed, and every student of the paper's recipe) adds nothing, so its
    recipe and its recipe key stay what they were."""
    from privaudit.defenses.distill_data import DistillData
    from privaudit.training.pix2pix import PLAIN_OBJECTIVE, Objective

    out: dict[str, Any] = {}
    dd, obj = defense.get("distill_data"), defense.get("objective")
    try:
        if dd is not None:
            if not isinstance(dd, dict) or not isinstance(dd.get("augment_ops", []), list):
                raise InputError("not a record of the distillation set")
            data = DistillData(input_kind=dd.get("input_kind", "auto"), augment_copies=dd.get("augment_copies", 0),
                               augment_ops=tuple(dd["augment_ops"]) if dd.get("augment_ops") else None, recombine=dd.get("recombine", "none"),
                               recombine_copies=dd.get("recombine_copies") or 1)
            data.validate()
            if data.input_kind == "auto" or not data.active:
                raise InputError("the input kind or what was generated is missing")
            data.check_kind()
            out["distill_data"] = data.record()
        if obj is not None:
            if not isinstance(obj, dict) or set(obj) - {"feature_matching", "num_D", "ema"}:
                raise InputError("not a record of the objective")
            objective = Objective(**{**PLAIN_OBJECTIVE, **obj})  # a key not recorded is the plain value, whatever the defaults
            objective.validate(adversarial=method == "akd")
            if objective.record():
                out["objective"] = objective.record()
    except (InputError, TypeError) as exc:
        raise CheckpointError(f"{who} records an invalid distillation setting ({str(exc).split(';')[0]}); re-create it with privaudit defend") from None
    return out


def _source(source: str, used_flags: bool) -> str:
    return f"{source} and flags" if used_flags else source


def _neutral(cfg: TrainConfig) -> TrainConfig:
    """The config without the run's own seed and how it used its device (each reference sets them)."""
    return replace(cfg, seed=defaults.SEED, device=defaults.DEVICE, precision=defaults.PRECISION, deterministic=defaults.DETERMINISTIC)


def _show(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _merged(recorded: Any, flag: Any, name: str, who: str) -> tuple[Any, bool]:
    """The recorded value, or the flag when nothing is recorded; a contradicting flag is refused."""
    if recorded is not None:
        if flag is not None and not _same(recorded, flag):
            raise InputError(f"{who} records {FLAG_NAMES[name]} {_show(recorded)}; references replay the recorded recipe: drop {FLAG_NAMES[name]} {_show(flag)}")
        return recorded, False
    return flag, flag is not None


def _no_flags(flags: RecipeFlags, who: str, what: str) -> None:
    given = flags.given()
    for name, value in given.items():
        raise InputError(f"{who} is {what}, which records its whole recipe; drop {FLAG_NAMES[name]} {_show(value)}")


def _opt_int(v: Any, field: str, who: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise CheckpointError(f"{who} records an invalid {field} {v!r:.60}; it must be a whole number >= 0, re-save the model with privaudit")
    return v or None


def _number(v: Any, field: str, who: str, *, minimum: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < minimum:
        raise CheckpointError(f"{who} records an invalid {field} {v!r:.60}; it must be a finite number >= {minimum:g}, re-create the model with privaudit")
    return float(v)


def _training_set(v: Any, who: str) -> TrainingSet | None:
    if not isinstance(v, dict) or v.get("count") is None:
        return None
    count = _opt_int(v.get("count"), "provenance.trained_on.count", who)
    if not count:
        raise CheckpointError(f"{who} records an empty training set (provenance.trained_on.count 0); re-save the model with privaudit")
    path, sha = v.get("path"), v.get("sha256")
    return TrainingSet(path=path if isinstance(path, str) else None, count=count, sha256=sha if isinstance(sha, str) else None)


TRAIN_TYPES: dict[str, tuple[type, ...]] = {"epochs": (int,), "batch_size": (int,), "lr": (int, float), "beta1": (int, float), "lambda_l1": (int, float),
                                            "decay_epochs": (int, type(None)), "augment": (bool,), "adversarial": (bool,), "ndf": (int,)}
# Recorded, type-checked, but not replayed: how the target's run used its device (``precision``,
# ``deterministic``; ``amp`` in records before --precision). Each reference uses the references
# command's own settings.
RUN_TYPES: dict[str, tuple[type, ...]] = {"precision": (str,), "deterministic": (bool,), "amp": (bool,)}


def _train_config(d: Any, who: str) -> TrainConfig:
    """A ``TrainConfig`` from a recorded dict, every field type-checked (the file comes from anyone)."""
    if not isinstance(d, dict):
        raise CheckpointError(f"{who} records a malformed training config {d!r:.60}; re-save the model with privaudit")
    for name, types in RUN_TYPES.items():
        v = d.get(name)
        if name in d and ((isinstance(v, bool) and bool not in types) or not isinstance(v, types)):
            raise CheckpointError(f"{who} records an invalid training {name} {v!r:.60}; re-save the model with privaudit")
    values: dict[str, Any] = {}
    for name, types in TRAIN_TYPES.items():
        if name not in d:
            continue
        v = d[name]
        if (isinstance(v, bool) and bool not in types) or not isinstance(v, types):
            raise CheckpointError(f"{who} records an invalid training {name} {v!r:.60}; re-save the model with privaudit")
        values[name] = float(v) if float in types and not isinstance(v, bool) and v is not None else v
    try:
        cfg = TrainConfig(**values)
        cfg.validate()
    except InputError as exc:
        raise CheckpointError(f"{who} records an invalid training config ({str(exc).split(';')[0]}); re-save the model with privaudit") from None
    return cfg


def _config_from_flags(flags: RecipeFlags) -> TrainConfig | None:
    if flags.epochs is None:
        return None
    values = {k: getattr(flags, k) for k in TRAIN_FLAGS if getattr(flags, k) is not None}
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg


def _recorded_arch(meta: dict[str, Any], who: str) -> UnetArch:
    arch = meta.get("arch")
    if not isinstance(arch, dict) or arch.get("type") != "unet":
        raise CheckpointError(f"{who} records no U-Net architecture; privaudit references replays pix2pix U-Nets only")
    a = UnetArch.from_dict(arch)
    a.validate()
    return a


def _arch(meta: dict[str, Any], flags: RecipeFlags, size: int | None, *, who: str) -> tuple[UnetArch, bool]:
    """The U-Net: recorded (privaudit) or inferred (pix2pix state_dict), else built from the flags
    (an exported model: references are pix2pix U-Nets of ``--ngf``/``--num-downs``/``--norm``)."""
    arch = meta.get("arch")
    if isinstance(arch, dict) and arch.get("type") == "unet":
        a = UnetArch.from_dict(arch)
        for name, value in (("ngf", flags.ngf), ("num_downs", flags.num_downs), ("norm", flags.norm)):
            if value is not None and getattr(a, name) != value:
                raise InputError(f"{who} is a U-Net with {name} {getattr(a, name)}; references replay its architecture: drop {FLAG_NAMES[name]} {value}")
        return a, False
    if flags.ngf is None:
        raise InputError(f"{who} is a {meta.get('format')} model, whose architecture privaudit cannot read; references are pix2pix U-Nets: "
                         "pass --ngf (and --num-downs, --norm) to describe the one it is")
    if flags.norm is not None and flags.norm not in NORMS:
        raise InputError(f"invalid --norm {flags.norm!r}; use batch, instance or none")
    if size is None:
        raise InputError(f"{who} does not record its image size; pass --size (the image size it was trained at)")
    spec = ModelSpec(num_downs=flags.num_downs, ngf=flags.ngf, norm=flags.norm or defaults.NORM)
    return spec.build(size), True
