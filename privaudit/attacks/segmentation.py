"""Membership inference against semantic segmentation models (Segmentations-Leak, He et al.,
ECCV 2020), reported side by side like the generator attacks:

* ``loss``: the per-image cross-entropy over valid pixels, the analogue of the reconstruction
  loss; score = −CE;
* ``label-only``: for a model that releases only its argmax labels, the image's pixel accuracy
  (``--label-score accuracy``) or mean IoU (``iou``) against the ground truth; score = that value;
* ``loss-map``: the structured attack, a small CNN (``attacks.lossmap``) classifying the per-pixel
  loss maps, trained on a shadow model's maps of its own members and non-members: a ``--shadow``
  model with its member and non-member folders, or the online references of ``--references``
  (each reference's IN samples are its members, its OUT samples its non-members);
* with ``--references``: the calibrated attacks (calibrated, LiRA offline/online) on the per-image
  cross-entropy, and the reference-only distribution check (``attacks.suite``).

``attack_segmentation`` is what ``privaudit attack`` calls for a segmentation model; the report is
``privaudit.report/2`` (every attack in ``attacks``, the strongest in ``attack``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from privaudit import defaults
from privaudit.attacks.metrics import attack_metrics, bootstrap_tpr_ci
from privaudit.attacks.reconstruction import AttackConfig, AttackResult, dp_delta
from privaudit.attacks.epsilon import epsilon_lower_bound
from privaudit.attacks.suite import SEG_ATTACK_NAMES, measure, report_sections, run_suite
from privaudit.data.checks import AuditSets, check_count, check_disjoint, pair_hashes
from privaudit.errors import CheckpointError, InputError
from privaudit.models.loaded import LoadedModel
from privaudit.models.seginference import SegPass, segment
from privaudit.models.segnets import SegSpec
from privaudit.report.build import base_report, dp_audit
from privaudit.report.schema import REPORT_SCHEMA_2

if TYPE_CHECKING:
    from privaudit.references.load import References

LABEL_SCORES = ("accuracy", "iou")
CALIBRATED_NAMES = ("calibrated", "lira-offline", "lira-online", "reference-only")


@dataclass(frozen=True)
class SegAttackOptions:
    """The segmentation attacks' own settings: the label-only score, the shadow model of the
    loss-map attack (``shadow`` with its ``shadow_members`` and ``shadow_nonmembers``) and that
    attack's CNN (map side, training epochs)."""

    label_score: str = defaults.LABEL_SCORE
    shadow: str | None = None
    shadow_members: str | None = None
    shadow_nonmembers: str | None = None
    lossmap_size: int = defaults.LOSSMAP_SIZE
    lossmap_epochs: int = defaults.LOSSMAP_EPOCHS

    def validate(self) -> None:
        if self.label_score not in LABEL_SCORES:
            raise InputError(f"unknown --label-score {self.label_score!r}; use accuracy (pixel accuracy) or iou (the image's mean IoU)")
        given = [v is not None for v in (self.shadow, self.shadow_members, self.shadow_nonmembers)]
        if any(given) and not all(given):
            raise InputError("the loss-map attack's shadow needs all three of --shadow MODEL, --shadow-members DIR and --shadow-nonmembers DIR")
        if self.lossmap_size < 4:
            raise InputError(f"--lossmap-size must be at least 4 pixels, not {self.lossmap_size}")
        if self.lossmap_epochs < 1:
            raise InputError(f"--lossmap-epochs must be at least 1, not {self.lossmap_epochs}")


def load_seg_sets(model: LoadedModel, members: str | Path, nonmembers: str | Path, *, size: int | None, allow_small: bool = False,
                  what: tuple[str, str] = ("members", "non-members")) -> AuditSets:
    """Photos and label maps of members and non-members for ``model`` (its classes, ignore index and
    palette), at ``size`` (default: the model's recorded size, else the images' own); refuses too
    few pairs (unless ``allow_small``) and a pair in both sets."""
    from privaudit.data.labels import load_segmentation_pairs

    info = model.segmentation
    target = size if size is not None else model.image_size
    source = "--size" if size is not None else ("model" if model.image_size else "images")
    kw = dict(num_classes=info.num_classes, size=target, ignore_index=info.ignore_index, palette=info.palette)
    m = load_segmentation_pairs(members, what=what[0], **kw)
    n = load_segmentation_pairs(nonmembers, what=what[1], **kw)
    if m.size != n.size:
        raise InputError(f"{what[0]} are {m.size}px and {what[1]} {n.size}px; pass --size to resize both alike")
    check_count(m, what[0][:-1], allow_small=allow_small)  # "members" → "member"
    check_count(n, what[1][:-1], allow_small=allow_small)
    hashes = pair_hashes(m)
    check_disjoint(m, n, what[0], what[1], hashes_a=hashes)
    return AuditSets(m, n, None, "task", m.size, source, allow_small, hashes)  # type: ignore[arg-type]  # no direction: photos → labels


def _loss_result(model: LoadedModel, sets: AuditSets, pm: SegPass, pn: SegPass, config: AttackConfig) -> AttackResult:
    lm, ln = pm.ce, pn.ce
    metrics = attack_metrics(-lm, -ln, fprs=config.fprs, n_bootstrap=config.n_bootstrap, seed=config.seed)
    tci = bootstrap_tpr_ci(-lm, -ln, fprs=config.fprs, n_bootstrap=config.n_bootstrap, seed=config.seed)
    bound = epsilon_lower_bound(-lm, -ln, delta=dp_delta(model.defense))
    return AttackResult(metrics, lm, ln, "eval", config, list(sets.members.names), list(sets.nonmembers.names), tpr_ci95=tci, bound=bound)


def _label_scores(p: SegPass, label_score: str) -> np.ndarray:
    return p.accuracy if label_score == "accuracy" else p.iou


def _shadow_maps(opts: SegAttackOptions, spec: SegSpec, target: LoadedModel, sets: AuditSets, config: AttackConfig, device: str | None,
                 allow_small: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The shadow model's loss maps of its members and non-members (read at the audit's size)."""
    from privaudit.models.segcheckpoint import load_segmentation_model

    shadow_spec = SegSpec(normalize=None, ignore_index=spec.ignore_index)
    shadow = load_segmentation_model(opts.shadow, shadow_spec, device=device, seed=config.seed)  # type: ignore[arg-type]
    if shadow.sha256 == target.sha256:
        raise InputError(f"--shadow {opts.shadow} is the audited model itself; the shadow is a model the attacker trains on its own data")
    ssets = load_seg_sets(shadow, opts.shadow_members, opts.shadow_nonmembers, size=sets.image_size, allow_small=allow_small,  # type: ignore[arg-type]
                          what=("shadow members", "shadow non-members"))
    pm = segment(shadow, ssets.members, batch_size=config.batch_size, seed=config.seed, lossmap_size=opts.lossmap_size)
    pn = segment(shadow, ssets.nonmembers, batch_size=config.batch_size, seed=config.seed, lossmap_size=opts.lossmap_size)
    info = {"source": "shadow", "shadow": {"path": shadow.path, "sha256": shadow.sha256, "defense": shadow.defense.get("method", "none"),
                                           "members": {"path": str(opts.shadow_members), "count": len(ssets.members)},
                                           "nonmembers": {"path": str(opts.shadow_nonmembers), "count": len(ssets.nonmembers)}}}
    return pm.loss_maps, pn.loss_maps, info


def _reference_passes(refs: "References", sets: AuditSets, config: AttackConfig, lossmap_size: int, device: str | None,
                      on_reference: Callable[[int, int], None] | None) -> tuple[list[SegPass], list[SegPass]]:
    """Each reference's pass over the members and the non-members (per-image CE and loss maps)."""
    from privaudit.models.checkpoint import load_model
    from privaudit.references.build import MANIFEST

    out_m, out_n = [], []
    for k, ref in enumerate(refs.refs):
        model = load_model(ref.path, device=device, seed=config.seed)
        if model.sha256 != ref.sha256:
            raise CheckpointError(f"{ref.path} changed since its references were checked (sha256 differs from {refs.folder / MANIFEST}); rebuild it")
        refs._check_model(model)
        if model.task != "segmentation":
            raise CheckpointError(f"{ref.path} is not a segmentation model; build references for the audited model with privaudit references")
        out_m.append(segment(model, sets.members, batch_size=config.batch_size, seed=config.seed, lossmap_size=lossmap_size))
        out_n.append(segment(model, sets.nonmembers, batch_size=config.batch_size, seed=config.seed, lossmap_size=lossmap_size))
        del model
        if on_reference is not None:
            on_reference(k + 1, len(refs.refs))
    return out_m, out_n


def attack_segmentation(
    model_path: str | Path,
    members: str | Path,
    nonmembers: str | Path,
    config: AttackConfig,
    *,
    spec: SegSpec | None = None,
    options: SegAttackOptions | None = None,
    size: int | None = None,
    device: str | None = None,
    on_batch: Callable[[int], None] | None = None,
    allow_small: bool = False,
    references: str | Path | None = None,
    on_reference: Callable[[int, int], None] | None = None,
    model: LoadedModel | None = None,
) -> tuple[dict[str, Any], AttackResult]:
    """Audit a segmentation model: every attack of the module docstring on its members and
    non-members → (report, result). ``result`` is the loss attack's, with every attack's scores in
    ``result.scores``. ``model``: the model already loaded (else loaded from ``model_path`` with ``spec``)."""
    config.validate()
    spec = (spec or SegSpec()).validate()
    options = options or SegAttackOptions()
    options.validate()
    if config.stochastic:
        raise InputError("--stochastic is for pix2pix generators (dropout as noise); a segmentation model is audited in eval mode: drop it")
    if model is None:
        from privaudit.models.segcheckpoint import load_segmentation_model

        model = load_segmentation_model(model_path, spec, device=device, seed=config.seed)
    sets = load_seg_sets(model, members, nonmembers, size=size, allow_small=allow_small)
    refs = None
    if references is not None:  # before any heavy work
        from privaudit.attacks.api import open_references

        refs = open_references(references, model, sets)
    report, result, _ = run_segmentation_attacks(model, sets, config, spec=spec, options=options, device=device, on_batch=on_batch, refs=refs,
                                                 on_reference=on_reference, allow_small=allow_small)
    return report, result


def run_segmentation_attacks(model: LoadedModel, sets: AuditSets, config: AttackConfig, *, spec: SegSpec, options: SegAttackOptions,
                             device: str | None = None, on_batch: Callable[[int], None] | None = None, refs: "References | None" = None,
                             on_reference: Callable[[int, int], None] | None = None, allow_small: bool = False) -> tuple[dict[str, Any], AttackResult, tuple[SegPass, SegPass]]:
    """The attacks on sets already read → (report, result, (member pass, non-member pass))."""
    kw = dict(batch_size=config.batch_size, seed=config.seed, lossmap_size=options.lossmap_size, on_batch=on_batch)
    pm = segment(model, sets.members, **kw)  # type: ignore[arg-type]
    pn = segment(model, sets.nonmembers, **kw)  # type: ignore[arg-type]
    result = _loss_result(model, sets, pm, pn, config)
    delta = result.bound.delta if result.bound is not None else 0.0
    common = dict(fprs=config.fprs, n_bootstrap=config.n_bootstrap, seed=config.seed, delta=delta)
    outcomes = {"loss": measure("loss", -pm.ce, -pn.ce, **common)}  # type: ignore[arg-type]
    outcomes["label-only"] = measure("label-only", _label_scores(pm, options.label_score), _label_scores(pn, options.label_score), **common)  # type: ignore[arg-type]
    skipped: dict[str, str] = {}
    lossmap_info: dict[str, Any] = {"map_size": int(pm.loss_maps.shape[-1]), "epochs": options.lossmap_epochs}

    ref_m = ref_n = None
    if refs is not None:
        ref_m, ref_n = _reference_passes(refs, sets, config, options.lossmap_size, device, on_reference)

    # --- the structured attack: a shadow model, or the online references
    maps = None
    if options.shadow is not None:
        sm, sn, info = _shadow_maps(options, spec, model, sets, config, device, allow_small)
        maps = (sm, sn)
        lossmap_info.update(info)
    elif refs is not None and ref_m is not None and ref_n is not None:
        im, inn = refs.inside(sets.members), refs.inside(sets.nonmembers)
        inside = np.concatenate([im, inn])
        all_maps = [torch.cat([a.loss_maps, b.loss_maps]) for a, b in zip(ref_m, ref_n)]
        mem = [all_maps[k][inside[:, k]] for k in range(len(all_maps))]
        non = [all_maps[k][~inside[:, k]] for k in range(len(all_maps))]
        if sum(len(x) for x in mem) == 0:
            skipped["loss-map"] = (f"needs a shadow model's maps of its members: the references in {refs.folder} are {refs.mode} and trained on none of the "
                                   "audited samples; build them with --online, or pass --shadow MODEL --shadow-members DIR --shadow-nonmembers DIR")
        else:
            maps = (torch.cat(mem), torch.cat(non))
            lossmap_info.update({"source": "references", "references": str(refs.folder)})
    else:
        skipped["loss-map"] = ("needs a shadow model: pass --shadow MODEL --shadow-members DIR --shadow-nonmembers DIR, or --references DIR of online "
                               "references")
    if maps is not None:
        from privaudit.attacks.lossmap import train_loss_map_attack

        cnn = train_loss_map_attack(maps[0], maps[1], epochs=options.lossmap_epochs, seed=config.seed)
        lossmap_info["trained_on"] = cnn.trained_on
        outcomes["loss-map"] = measure("loss-map", cnn.score(pm.loss_maps), cnn.score(pn.loss_maps), **common)  # type: ignore[arg-type]

    # --- the calibrated attacks on the per-image cross-entropy
    names_used: list[str] = []
    if refs is not None and ref_m is not None and ref_n is not None:
        for name in CALIBRATED_NAMES:
            reason = refs.supports(name, sets.members) or refs.supports(name, sets.nonmembers)
            if reason:
                skipped[name] = reason
            else:
                names_used.append(name)
        rm = np.stack([p.ce for p in ref_m], axis=1)
        rn = np.stack([p.ce for p in ref_n], axis=1)
        outcomes.update(run_suite(names_used, pm.ce, pn.ce, rm, rn, refs.inside(sets.members), refs.inside(sets.nonmembers), **common))  # type: ignore[arg-type]

    ordered = {n: outcomes[n] for n in SEG_ATTACK_NAMES if n in outcomes}
    loss_section = result.to_dict("loss")
    loss_section.update({"loss": "cross-entropy", "generator_mode": "eval", "samples": 1})
    sections = report_sections(ordered, loss_section, fprs=config.fprs, member_names=result.member_names, n_bootstrap=config.n_bootstrap,
                               order=SEG_ATTACK_NAMES)
    report = segmentation_report_head(model, sets, seed=config.seed)
    report["attack"] = sections["attack"]
    report["attacks"] = sections["attacks"]
    report["most_exposed"] = sections["most_exposed"]
    if "distribution_shift" in sections:
        report["data"]["distribution_shift"] = sections["distribution_shift"]
    report["segmentation"] = {"label_score": options.label_score, "loss_map": lossmap_info, "skipped": skipped,
                              "attacks": list(ordered)}
    if refs is not None:
        im, inn = refs.inside(sets.members), refs.inside(sets.nonmembers)
        report["references"] = {**refs.describe(), "attacks": names_used, "skipped": {k: v for k, v in skipped.items() if k != "loss-map"},
                                "notes": list(refs.notes),
                                "in_per_sample": {"min": int(min(im.sum(1).min(), inn.sum(1).min())), "max": int(max(im.sum(1).max(), inn.sum(1).max()))}}
    dp_audit(report)
    result.scores = {n: (o.scores_members, o.scores_nonmembers) for n, o in ordered.items()}
    return report, result, (pm, pn)


def segmentation_report_head(model: LoadedModel, sets: AuditSets, *, seed: int) -> dict[str, Any]:
    """The common head of a segmentation report: the generator head plus ``task`` and the model's classes."""
    report = base_report(model, sets, seed=seed)
    report["schema"] = REPORT_SCHEMA_2
    report["task"] = "segmentation"
    report["model"]["task"] = "segmentation"
    info = model.segmentation
    report["model"]["segmentation"] = {**info.to_dict(), "normalization_source": info.normalization_source}
    return report
