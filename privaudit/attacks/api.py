"""The attack as a library call: load a model and its member/non-member pairs, run the
reconstruction-loss attack (``reconstruction.py``) and, with reference models, every calibrated
attack they support (``suite.py``), return the report.

``attack`` is what ``privaudit attack`` calls; ``load_audit_sets``, ``open_references`` and
``add_reference_attacks`` are shared with ``evaluate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from privaudit import defaults
from privaudit.attacks.reconstruction import AttackConfig, AttackResult, run_attack
from privaudit.data.checks import AuditSets, check_count, check_disjoint, pair_hashes, resolve_direction, resolve_size
from privaudit.data.stream import Streaming, open_sets
from privaudit.errors import InputError
from privaudit.models.arch import ArchOverrides
from privaudit.models.checkpoint import load_model
from privaudit.models.loaded import LoadedModel
from privaudit.report.build import attack_report, dp_audit
from privaudit.report.schema import REPORT_SCHEMA_2

if TYPE_CHECKING:
    from privaudit.references.load import References


def load_audit_sets(
    model: LoadedModel, members: str | Path, nonmembers: str | Path, *, direction: str | None, size: int | None, allow_small: bool = False,
    streaming: Streaming | None = None,
) -> AuditSets:
    """Read members and non-members for ``model`` and refuse what would make the verdict meaningless:
    an unknown direction, too few pairs (unless ``allow_small``), or a pair in both sets.
    ``streaming``: when the sets are streamed from disk (default: above the memory budget, judged on
    both sets together); the disjointness check then decodes a hashing pass over each."""
    direction, direction_from = resolve_direction(model, direction)
    target, size_from = resolve_size(model, size)
    in_nc = int(model.arch.get("input_nc", 3))
    out_nc = int(model.arch.get("output_nc", 3))
    m, n = open_sets([(members, "members"), (nonmembers, "non-members")], direction=direction, size=target, input_nc=in_nc, output_nc=out_nc,
                     streaming=streaming)
    if m.size != n.size:
        raise InputError(f"members are {m.size}px and non-members {n.size}px; pass --size to resize both alike")
    check_count(m, "member", allow_small=allow_small)
    check_count(n, "non-member", allow_small=allow_small)
    hashes = pair_hashes(m)
    check_disjoint(m, n, "members", "non-members", hashes_a=hashes)
    return AuditSets(m, n, direction, direction_from, m.size, size_from, allow_small, hashes)


def attack(
    model_path: str | Path,
    members: str | Path,
    nonmembers: str | Path,
    config: AttackConfig,
    *,
    direction: str | None = None,
    size: int | None = None,
    overrides: ArchOverrides | None = None,
    device: str | None = None,
    precision: str = defaults.PRECISION,
    deterministic: bool = defaults.DETERMINISTIC,
    on_batch: Callable[[int], None] | None = None,
    allow_small: bool = False,
    references: str | Path | None = None,
    on_reference: Callable[[int, int], None] | None = None,
    streaming: Streaming | None = None,
    task: str | None = None,
    segmentation: Any = None,
    seg_options: Any = None,
) -> tuple[dict[str, Any], AttackResult]:
    """Load a model and its member/non-member pairs, run the attack, return (report, result).

    ``task``: ``translation`` or ``segmentation`` (None: read from the model, or implied by
    ``segmentation``, a ``models.segnets.SegSpec`` of --arch/--num-classes/...); a segmentation
    model runs the attacks of ``attacks.segmentation`` (``seg_options``: a ``SegAttackOptions``).

    ``direction`` is required for a model that does not record it; ``allow_small`` accepts fewer
    than MIN_PAIRS members or non-members (the report records it). ``references``: a folder written
    by ``privaudit references`` for this model; every attack it supports runs too and the report is
    ``privaudit.report/2`` (see ``add_reference_attacks``); ``on_reference(k, K)`` after each reference.
    ``precision`` (auto, fp32, bf16) and ``deterministic``: how the forward passes use a CUDA device
    (``privaudit.accel``; the losses are float32 either way); the references run in the precision the
    target ran in. ``streaming``: when the member and non-member sets are streamed from disk rather
    than read whole into memory (default ``Streaming()``: above the memory budget); the scores are the
    same either way.
    """
    config.validate()
    if segmentation_task(model_path, task, segmentation, direction=direction, overrides=overrides):
        from privaudit.attacks.segmentation import attack_segmentation

        return attack_segmentation(model_path, members, nonmembers, config, spec=segmentation, options=seg_options, size=size, device=device,
                                   on_batch=on_batch, allow_small=allow_small, references=references, on_reference=on_reference)
    model = load_model(model_path, overrides=overrides, device=device, seed=config.seed, precision=precision, deterministic=deterministic)
    sets = load_audit_sets(model, members, nonmembers, direction=direction, size=size, allow_small=allow_small, streaming=streaming)
    refs = open_references(references, model, sets) if references is not None else None  # before any heavy work
    result = run_attack(model, sets.members, sets.nonmembers, config, on_batch=on_batch)
    report = attack_report(model, sets, result)
    if refs is not None:
        add_reference_attacks(report, refs, sets, result, device=device, on_reference=on_reference, precision=model.runtime.precision,
                              deterministic=deterministic)
    dp_audit(report)
    return report, result


def segmentation_task(model_path: str | Path, task: str | None, spec: Any, *, direction: str | None = None, overrides: ArchOverrides | None = None) -> bool:
    """Whether this audit is of a segmentation model (``models.segcheckpoint.resolve_task``); the
    generator-only flags (--direction, the U-Net overrides) are refused for one."""
    from privaudit.models.segcheckpoint import TASK, resolve_task

    if resolve_task(model_path, task, spec) != TASK:
        return False
    if direction is not None:
        raise InputError("--direction is for image translation; a segmentation model maps A/ photos to B/ label maps: drop --direction")
    if overrides is not None and overrides.any:
        raise InputError("--num-downs, --ngf, --norm and --dropout describe a pix2pix generator; for a segmentation state_dict pass --arch (and --num-classes)")
    return True


def open_references(folder: str | Path, model: LoadedModel, sets: AuditSets) -> "References":
    """The references in ``folder``, validated against ``model`` and the audit's direction and size."""
    from privaudit.references.load import load_references

    refs = load_references(folder, model, direction=sets.direction, image_size=sets.image_size)
    refs.check_images(sets.members)
    return refs


def add_reference_attacks(report: dict[str, Any], refs: "References", sets: AuditSets, result: AttackResult, *, device: str | None = None,
                          on_reference: Callable[[int, int], None] | None = None, precision: str = "fp32", deterministic: bool = False) -> None:
    """Run every attack ``refs`` support on ``result``'s target losses and turn ``report`` (a
    report/1 of ``result``) into a ``privaudit.report/2``: ``attacks``, ``attack`` (the strongest),
    ``data.distribution_shift``, ``most_exposed`` and ``references`` (with the attacks skipped, and why).
    ``result.scores`` gets every attack's scores. ``precision``: the one the target's losses were
    computed in (``model.runtime.precision``), so that the references' losses compare with them."""
    import numpy as np

    from privaudit.attacks.suite import ATTACK_NAMES, report_sections, run_suite

    config = result.config
    names: list[str] = []
    skipped: dict[str, str] = {}
    for name in ATTACK_NAMES:
        reason = refs.supports(name, sets.members) or refs.supports(name, sets.nonmembers)
        if reason:
            skipped[name] = reason
        else:
            names.append(name)
    rm, rn = refs.losses_many([sets.members, sets.nonmembers], config, device=device, on_reference=on_reference, precision=precision,
                              deterministic=deterministic)
    im, inn = refs.inside(sets.members), refs.inside(sets.nonmembers)
    outcomes = run_suite(names, result.member_losses, result.nonmember_losses, rm, rn, im, inn, fprs=config.fprs, n_bootstrap=config.n_bootstrap,
                         seed=config.seed, delta=result.bound.delta if result.bound is not None else 0.0)
    sections = report_sections(outcomes, result.to_dict("loss"), fprs=config.fprs, member_names=result.member_names, n_bootstrap=config.n_bootstrap)
    report["schema"] = REPORT_SCHEMA_2
    report["attack"] = sections["attack"]
    report["attacks"] = sections["attacks"]
    report["most_exposed"] = sections["most_exposed"]
    if "distribution_shift" in sections:
        report["data"]["distribution_shift"] = sections["distribution_shift"]
    report["references"] = {**refs.describe(), "attacks": names, "skipped": skipped, "notes": list(refs.notes),
                            "in_per_sample": {"min": int(min(im.sum(1).min(), inn.sum(1).min())), "max": int(max(im.sum(1).max(), inn.sum(1).max()))}}
    result.scores = {n: (o.scores_members, o.scores_nonmembers) for n, o in outcomes.items()}
    result.scores.setdefault("loss", (-np.asarray(result.member_losses), -np.asarray(result.nonmember_losses)))
