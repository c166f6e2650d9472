"""Library entry points behind the attack and evaluate commands: each takes a frozen config,
returns results. (Training: ``privaudit.training.train``; defenses: ``privaudit.defenses.defend``.)

The CLI only parses options into these configs, calls one function and renders what comes back.
"""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from privaudit import __version__
from privaudit.attacks.reconstruction import AttackConfig, AttackResult, run_attack
from privaudit.data.images import ImageSet, check_direction, load_pairs
from privaudit.errors import InputError
from privaudit.models.checkpoint import ArchOverrides, LoadedModel, load_model

from privaudit.report import REPORT_SCHEMA  # noqa: E402


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# attack


def resolve_size(model: LoadedModel, size: int | None) -> int | None:
    """--size wins; else the size recorded in the checkpoint; else None (the images' own size)."""
    return size if size is not None else model.image_size


def load_attack_sets(
    model: LoadedModel, members: str | Path, nonmembers: str | Path, *, direction: str | None, size: int | None
) -> tuple[ImageSet, ImageSet, str]:
    direction = direction or model.direction or "AtoB"
    check_direction(direction)
    size = resolve_size(model, size)
    in_nc = int(model.arch.get("input_nc", 3))
    out_nc = int(model.arch.get("output_nc", 3))
    m = load_pairs(members, direction=direction, size=size, input_nc=in_nc, output_nc=out_nc, what="members")
    n = load_pairs(nonmembers, direction=direction, size=size, input_nc=in_nc, output_nc=out_nc, what="non-members")
    if m.size != n.size:
        raise InputError(f"members are {m.size}px and non-members {n.size}px; pass --size to resize both alike")
    return m, n, direction


def base_report(model: LoadedModel, members: ImageSet, nonmembers: ImageSet, *, seed: int, direction: str) -> dict[str, Any]:
    """The report's common head (schema, tool, model, data)."""
    defense = dict(model.defense)
    return {
        "schema": REPORT_SCHEMA,
        "tool": {"name": "privaudit", "version": __version__},
        "created": now(),
        "seed": seed,
        "model": {
            "path": model.path,
            "sha256": model.sha256,
            "format": model.format,
            "arch": model.arch,
            "image_size": members.size,
            "defense": defense,
            "training": model.training,  # {complete, epochs_done, epochs_total}; None when the file does not say
        },
        "data": {
            "direction": direction,
            "members": {"path": members.path, "count": len(members)},
            "nonmembers": {"path": nonmembers.path, "count": len(nonmembers)},
        },
        "environment": {"torch": torch.__version__, "device": str(model.device), "python": platform.python_version()},
    }


def unfinished_warnings(model: dict[str, Any]) -> list[str]:
    """Warnings for a report's ``model`` section: the checkpoint (or the teacher it was distilled
    from) is the model of an unfinished run. Unknown (older files, foreign formats) warns nothing."""
    out = []
    for who, training in ((f"{model.get('path')}", model.get("training")), ("its teacher", ((model.get("defense") or {}).get("teacher") or {}).get("training"))):
        if isinstance(training, dict) and training.get("complete") is False:
            out.append(f"{who} is an unfinished model: its training stopped after epoch {training.get('epochs_done')} of {training.get('epochs_total')} "
                       "(interrupted or diverged); finish the run with --resume, or use a finished model")
    return out


def attack_report(model: LoadedModel, members: ImageSet, nonmembers: ImageSet, result: AttackResult, *, direction: str) -> dict[str, Any]:
    report = base_report(model, members, nonmembers, seed=result.config.seed, direction=direction)
    report["attack"] = result.to_dict()
    return report


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
) -> tuple[dict[str, Any], AttackResult]:
    """Load a model and its member/non-member pairs, run the attack, return (report, result)."""
    config.validate()
    model = load_model(model_path, overrides=overrides, device=device, seed=config.seed)
    m, n, direction = load_attack_sets(model, members, nonmembers, direction=direction, size=size)
    result = run_attack(model, m, n, config, on_batch=on_batch)
    return attack_report(model, m, n, result, direction=direction), result
