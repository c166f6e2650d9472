"""The attack as a library call: load a model and its member/non-member pairs, run the
reconstruction-loss attack (``reconstruction.py``), return the report.

``attack`` is what ``privaudit attack`` calls; ``load_audit_sets`` is shared with ``evaluate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from privaudit.attacks.reconstruction import AttackConfig, AttackResult, run_attack
from privaudit.data.checks import AuditSets, check_count, check_disjoint, pair_hashes, resolve_direction, resolve_size
from privaudit.data.images import load_pairs
from privaudit.errors import InputError
from privaudit.models.arch import ArchOverrides
from privaudit.models.checkpoint import load_model
from privaudit.models.loaded import LoadedModel
from privaudit.report.build import attack_report


def load_audit_sets(
    model: LoadedModel, members: str | Path, nonmembers: str | Path, *, direction: str | None, size: int | None, allow_small: bool = False
) -> AuditSets:
    """Read members and non-members for ``model`` and refuse what would make the verdict meaningless:
    an unknown direction, too few pairs (unless ``allow_small``), or a pair in both sets."""
    direction, direction_from = resolve_direction(model, direction)
    target, size_from = resolve_size(model, size)
    in_nc = int(model.arch.get("input_nc", 3))
    out_nc = int(model.arch.get("output_nc", 3))
    m = load_pairs(members, direction=direction, size=target, input_nc=in_nc, output_nc=out_nc, what="members")
    n = load_pairs(nonmembers, direction=direction, size=target, input_nc=in_nc, output_nc=out_nc, what="non-members")
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
    on_batch: Callable[[int], None] | None = None,
    allow_small: bool = False,
) -> tuple[dict[str, Any], AttackResult]:
    """Load a model and its member/non-member pairs, run the attack, return (report, result).

    ``direction`` is required for a model that does not record it; ``allow_small`` accepts fewer
    than MIN_PAIRS members or non-members (the report records it).
    """
    config.validate()
    model = load_model(model_path, overrides=overrides, device=device, seed=config.seed)
    sets = load_audit_sets(model, members, nonmembers, direction=direction, size=size, allow_small=allow_small)
    result = run_attack(model, sets.members, sets.nonmembers, config, on_batch=on_batch)
    return attack_report(model, sets, result), result
