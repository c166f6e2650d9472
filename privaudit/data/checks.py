"""The member and non-member sets of an audit: which direction and size to read them in, and the
checks that keep a verdict meaningful (enough pairs, no pair in both sets).

Pairs are compared by content (the decoded images), never by file name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from privaudit.data.images import DIRECTIONS, ImageSet, check_direction
from privaudit.errors import CheckpointError, DataError, InputError

if TYPE_CHECKING:
    from privaudit.models.loaded import LoadedModel

# Below this many members or non-members an AUC is mostly noise (one pair moves it by 1/(m·n) and its
# bootstrap interval collapses): refused unless the user says --allow-small.
MIN_PAIRS = 10

FORMAT_NAMES = {"pix2pix": "a pix2pix state_dict", "export": "a torch.export program", "torchscript": "a TorchScript model", "privaudit": "a privaudit checkpoint"}


def resolve_size(model: LoadedModel, size: int | None) -> tuple[int | None, str]:
    """(image size to read the sets at, where it comes from): ``--size`` wins; else the size recorded
    in the model (``model``); else None, the images' own size (``images``)."""
    if size is not None:
        return size, "--size"
    return model.image_size, ("model" if model.image_size else "images")


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


def pair_hashes(images: Any) -> list[bytes]:
    """One digest per pair of the decoded uint8 input and target, each pair's bytes read once (an
    ``ImageSet``, or a ``StreamedSet``, which decodes a pass for them)."""
    if not isinstance(images, ImageSet):
        return images.pair_hashes()
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
    """Refuse (DataError) fewer than MIN_PAIRS pairs unless ``allow_small``."""
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
