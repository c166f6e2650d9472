"""Library entry points behind the attack and evaluate commands: each takes a frozen config,
returns results. (Training: ``privaudit.training.train``; defenses: ``privaudit.defenses.defend``.)

The CLI only parses options into these configs, calls one function and renders what comes back.
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from privaudit import __version__
from privaudit.attacks.reconstruction import AttackConfig, AttackResult, run_attack
from privaudit.data.images import DIRECTIONS, ImageSet, check_direction, load_pairs
from privaudit.errors import CheckpointError, DataError, InputError
from privaudit.models.arch import ArchOverrides
from privaudit.models.checkpoint import load_model
from privaudit.models.loaded import LoadedModel

from privaudit.report import REPORT_SCHEMA  # noqa: E402


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# attack


# Below this many members or non-members an AUC is mostly noise (one pair moves it by 1/(m·n) and its
# bootstrap interval collapses): refused unless the user says --allow-small.
MIN_PAIRS = 10

FORMAT_NAMES = {"pix2pix": "a pix2pix state_dict", "export": "a torch.export program", "torchscript": "a TorchScript model", "privaudit": "a privaudit checkpoint"}


def resolve_size(model: LoadedModel, size: int | None) -> int | None:
    """--size wins; else the size recorded in the checkpoint; else None (the images' own size)."""
    return size if size is not None else model.image_size


def size_source(model: LoadedModel, size: int | None) -> str:
    """Where the image size comes from: ``--size``, ``model`` (recorded in it) or ``images`` (their own)."""
    return "--size" if size is not None else ("model" if model.image_size else "images")


def resolve_direction(model: LoadedModel, direction: str | None) -> tuple[str, str]:
    """(direction, where it comes from: ``model`` or ``--direction``).

    A model that records its direction (a privaudit checkpoint) needs no flag, and a flag that
    contradicts it is refused: attacking with the halves swapped measures nothing. A model that does
    not record it (pix2pix .pth, .pt2, TorchScript) needs the flag: guessing AtoB silently turns a
    leaking label→photo model into a clean-looking photo→label one.
    """
    if direction is not None:
        check_direction(direction)
    recorded = model.direction
    if recorded is not None and recorded not in DIRECTIONS:
        raise CheckpointError(f"{model.path} records an invalid direction {recorded!r}; re-save it with direction AtoB or BtoA")
    if recorded is not None:
        if direction is not None and direction != recorded:
            raise InputError(
                f"--direction {direction} contradicts {model.path}, which was trained {recorded} (input = the {_input_side(recorded)}); "
                f"drop --direction, or if this data is laid out the other way round, swap its halves (or A/ and B/)"
            )
        return recorded, "model"
    if direction is None:
        kind = FORMAT_NAMES.get(model.format, f"a {model.format} model")
        raise InputError(
            f"{model.path} is {kind}, which does not record which side is its input; pass --direction AtoB "
            f"(input = the {_input_side('AtoB')}) or --direction BtoA (input = the {_input_side('BtoA')})"
        )
    return direction, "--direction"


def _input_side(direction: str) -> str:
    return "left half or A/" if direction == "AtoB" else "right half or B/"


def pair_hashes(images: ImageSet) -> list[bytes]:
    """One digest per pair of the decoded uint8 input and target, each pair's bytes read once."""
    out = []
    for i in range(len(images)):
        h = hashlib.blake2b(digest_size=16)
        x = images.inputs[i].contiguous()
        h.update(repr(tuple(x.shape)).encode())
        h.update(x.numpy())
        if images.targets is not None:
            y = images.targets[i].contiguous()
            h.update(repr(tuple(y.shape)).encode())
            h.update(y.numpy())
        out.append(h.digest())
    return out


def check_disjoint(a: ImageSet, b: ImageSet, what_a: str, what_b: str, *, hashes_a: list[bytes] | None = None, fix: str = "") -> None:
    """Refuse (DataError) sets that share a pair by content (decoded images, not file names)."""
    first: dict[bytes, int] = {}
    for i, h in enumerate(hashes_a if hashes_a is not None else pair_hashes(a)):
        first.setdefault(h, i)
    shared = [(first[h], j) for j, h in enumerate(pair_hashes(b)) if h in first]
    if not shared:
        return
    i, j = shared[0]
    same = f" ({what_a} and {what_b} are the same folder)" if Path(a.path).resolve() == Path(b.path).resolve() else ""
    raise DataError(
        f"{len(shared)} of the {len(b)} {what_b} are also {what_a}{same}, e.g. {Path(a.path) / a.names[i]} and "
        f"{Path(b.path) / b.names[j]} hold the same images; {fix or 'members and non-members must be disjoint: remove the shared pairs from one set'}"
    )


def check_count(images: ImageSet, what: str, *, allow_small: bool) -> None:
    if len(images) < MIN_PAIRS and not allow_small:
        raise DataError(
            f"only {len(images)} {what} pair(s) in {images.path}: an AUC from fewer than {MIN_PAIRS} is mostly noise; "
            "add pairs, or pass --allow-small to accept a rough estimate"
        )


@dataclass
class AuditSets:
    """The member and non-member pairs of an audit and how they were read."""

    members: ImageSet
    nonmembers: ImageSet
    direction: str
    direction_source: str  # "model" or "--direction"
    image_size: int
    image_size_source: str  # "--size", "model" or "images"
    allow_small: bool = False
    member_hashes: list[bytes] | None = None

    def data(self) -> dict[str, Any]:
        """The report's ``data`` section."""
        return {
            "direction": self.direction,
            "direction_source": self.direction_source,
            "image_size": self.image_size,
            "image_size_source": self.image_size_source,
            "allow_small": self.allow_small,
            "members": {"path": self.members.path, "count": len(self.members), "resized": self.members.resized},
            "nonmembers": {"path": self.nonmembers.path, "count": len(self.nonmembers), "resized": self.nonmembers.resized},
        }


def load_audit_sets(
    model: LoadedModel, members: str | Path, nonmembers: str | Path, *, direction: str | None, size: int | None, allow_small: bool = False
) -> AuditSets:
    """Read members and non-members for ``model`` and refuse what would make the verdict meaningless:
    an unknown direction, too few pairs (unless ``allow_small``), or a pair in both sets."""
    direction, direction_from = resolve_direction(model, direction)
    target = resolve_size(model, size)
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
    return AuditSets(m, n, direction, direction_from, m.size, size_source(model, size), allow_small, hashes)


def load_attack_sets(
    model: LoadedModel, members: str | Path, nonmembers: str | Path, *, direction: str | None, size: int | None, allow_small: bool = False
) -> tuple[ImageSet, ImageSet, str]:
    """``load_audit_sets`` as (members, non-members, direction)."""
    sets = load_audit_sets(model, members, nonmembers, direction=direction, size=size, allow_small=allow_small)
    return sets.members, sets.nonmembers, sets.direction


def base_report(model: LoadedModel, members: ImageSet, nonmembers: ImageSet, *, seed: int, direction: str, sets: AuditSets | None = None) -> dict[str, Any]:
    """The report's common head (schema, tool, model, data)."""
    defense = dict(model.defense)
    if sets is None:
        sets = AuditSets(members, nonmembers, direction, "model" if model.direction else "--direction", members.size,
                         "model" if model.image_size else "images")
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
        "data": sets.data(),
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


def attack_report(model: LoadedModel, members: ImageSet, nonmembers: ImageSet, result: AttackResult, *, direction: str, sets: AuditSets | None = None) -> dict[str, Any]:
    report = base_report(model, members, nonmembers, seed=result.config.seed, direction=direction, sets=sets)
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
    return attack_report(model, sets.members, sets.nonmembers, result, direction=sets.direction, sets=sets), result
