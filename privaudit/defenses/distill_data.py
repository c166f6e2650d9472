"""The distillation set of AKD and DMP: the proxy inputs, plus inputs made from them only.

The teacher may be queried on any input without touching the private pairs, so the student can
see more of the teacher than the proxy inputs alone show it: augmented copies of each proxy input
(flips, crops at a random scale, colour jitter for photos) and recombined inputs (label maps:
regions cut from one proxy label map and pasted onto another; photos: mixup or CutMix of two proxy
photos). Every generated input is a function of the proxy inputs and the seed alone: no private
pair, no proxy target, no teacher output goes into it (tests/test_distill_data.py checks this).

Whether the proxy inputs are label maps or photos decides which operations make sense;
``detect_input_kind`` guesses it (label maps cover almost all their pixels with a few colours, JPEG
noise aside), and ``--input-kind`` overrides the guess. An operation that makes no sense for the
kind (colour jitter on label maps, mixup on label maps, cut-and-paste of label regions on photos)
is refused with an ``InputError``.

The set is laid out as: the N proxy inputs (in their order), then ``augment_copies`` rounds of N
augmented copies, then ``recombine_copies`` rounds of N recombined inputs (input i with a random
partner). Each input that differs from all before it is sent to the teacher once (``unique_rows``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from privaudit import defaults
from privaudit.errors import InputError

INPUT_KINDS = ("auto", "labels", "photos")
AUGMENT_OPS = ("flip", "crop", "color")
RECOMBINE = ("none", "auto", "cutpaste", "mixup", "cutmix")
# What makes sense for each kind of input; the default augmentation is all of them.
KIND_AUGMENT = {"labels": ("flip", "crop"), "photos": ("flip", "crop", "color")}
KIND_RECOMBINE = {"labels": ("cutpaste",), "photos": ("mixup", "cutmix")}
AUTO_RECOMBINE = {"labels": "cutpaste", "photos": "cutmix"}  # what --recombine auto picks for the kind
MAX_COPIES = 100  # rounds of N generated inputs; the teacher's answers are kept in memory

# Label-map detection: colours quantised to 16 levels per channel (JPEG noise stays in one bin);
# on facades at 64 px the 16 commonest bins cover 97% of a label map's pixels and 74% of a photo's.
LEVEL = 16
TOP_COLOURS = 16
LABEL_COVERAGE = 0.9

# Augmentation ranges: crops of an image scaled up by 1 to 1.3 (pix2pix's jitter is 286/256 = 1.12);
# colour jitter of ±20% in brightness, contrast and saturation and ±0.05 in hue.
CROP_SCALE = (1.0, 1.3)
JITTER = 0.2
HUE = 0.05
# Recombination: a pasted region is 1/4 to 1/2 of the side; mixup weights 0.25 to 0.75 (never
# close to one of the two images); CutMix boxes cover 20% to 60% of the area.
PASTE_SIDE = (0.25, 0.5)
MIX = (0.25, 0.75)
CUTMIX_AREA = (0.2, 0.6)


def _key(images: torch.Tensor) -> torch.Tensor:
    """Per-pixel quantised colour ids: uint8 (N, C, H, W) → long (N, H, W)."""
    q = images.long() // LEVEL
    key = torch.zeros_like(q[:, 0])
    for c in range(q.shape[1]):
        key = key * (256 // LEVEL) + q[:, c]
    return key


def label_coverage(images: torch.Tensor) -> float:
    """Median over images of the fraction of pixels in the ``TOP_COLOURS`` commonest quantised colours."""
    keys = _key(images).flatten(1)
    fractions = []
    for k in keys:
        counts = torch.unique(k, return_counts=True)[1].sort(descending=True).values
        fractions.append(float(counts[:TOP_COLOURS].sum()) / k.numel())
    return float(np.median(fractions))


def detect_input_kind(images: torch.Tensor) -> str:
    """``labels`` when the images are label maps (a few flat colours), else ``photos``. uint8 (N, C, H, W)."""
    return "labels" if label_coverage(images) >= LABEL_COVERAGE else "photos"


@dataclass(frozen=True)
class DistillData:
    """How the distillation set is made from the proxy inputs (the defaults: the proxy inputs alone,
    as the AKD paper does).

    ``input_kind``: auto, labels or photos. ``augment_copies`` K: K augmented copies of each proxy
    input, with ``augment_ops`` (None: every operation that makes sense for the kind: flip, crop,
    and color for photos). ``recombine``: none, cutpaste (label maps), mixup or cutmix (photos), or
    auto (cutpaste for label maps, cutmix for photos: ``AUTO_RECOMBINE``);
    ``recombine_copies`` R: R recombined inputs per proxy input."""

    input_kind: str = defaults.INPUT_KIND
    augment_copies: int = defaults.AUGMENT_COPIES
    augment_ops: tuple[str, ...] | None = None
    recombine: str = defaults.RECOMBINE
    recombine_copies: int = defaults.RECOMBINE_COPIES

    @property
    def active(self) -> bool:
        return self.augment_copies > 0 or self.recombine != "none"

    @property
    def rounds(self) -> int:
        """The distillation set's size over the proxy inputs': the inputs, their augmented copies and
        their recombined inputs (``build_distillation_set``'s layout)."""
        return 1 + self.augment_copies + (self.recombine_copies if self.recombine != "none" else 0)

    def validate(self) -> None:
        """The settings alone (the input kind's checks come with ``resolve``)."""
        if self.input_kind not in INPUT_KINDS:
            raise InputError(f"invalid --input-kind {self.input_kind!r}; use {', '.join(INPUT_KINDS)}")
        for name, flag, value in (("augment_copies", "--augment-copies", self.augment_copies), ("recombine_copies", "--recombine-copies", self.recombine_copies)):
            low = 0 if name == "augment_copies" else 1
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_COPIES:
                raise InputError(f"{flag} must be a whole number from {low} to {MAX_COPIES}, not {value}")
        if self.augment_ops is not None:
            bad = [op for op in self.augment_ops if op not in AUGMENT_OPS]
            if bad or not self.augment_ops or len(set(self.augment_ops)) != len(self.augment_ops):
                raise InputError(f"invalid --augment-ops {','.join(self.augment_ops) or '(empty)'}; give a comma-separated list of distinct operations from "
                                 f"{', '.join(AUGMENT_OPS)}")
            if self.augment_copies == 0:
                raise InputError("--augment-ops chooses how augmented copies are made, but --augment-copies is 0; pass --augment-copies K or drop --augment-ops")
        if self.recombine not in RECOMBINE:
            raise InputError(f"invalid --recombine {self.recombine!r}; use {', '.join(RECOMBINE)}")

    def resolve(self, images: torch.Tensor) -> "DistillData":
        """These settings for these proxy inputs (uint8 (N, C, H, W)): the input kind decided
        (``auto``: ``detect_input_kind``; left as given when nothing is generated) and the
        augmentation's operations filled in; an operation
        that makes no sense for the kind, or recombination of a single input, raises ``InputError``."""
        self.validate()
        if not self.active:
            return self  # the proxy inputs alone: nothing to decide
        kind = self.input_kind if self.input_kind != "auto" else detect_input_kind(images)
        how = "as given by --input-kind" if self.input_kind != "auto" else "as detected; pass --input-kind to override"
        ops = self.augment_ops
        if self.augment_copies > 0 and ops is None:
            ops = tuple(op for op in AUGMENT_OPS if op in KIND_AUGMENT[kind])
        recombine = AUTO_RECOMBINE[kind] if self.recombine == "auto" else self.recombine
        resolved = DistillData(input_kind=kind, augment_copies=self.augment_copies, augment_ops=ops if self.augment_copies > 0 else None,
                               recombine=recombine, recombine_copies=self.recombine_copies)
        resolved.check_kind(how)
        if self.recombine != "none":
            if images.shape[0] < 2:
                raise InputError(f"--recombine {self.recombine} combines two proxy inputs, but the proxy set holds {images.shape[0]}; add inputs or pass --recombine none")
        if self.augment_copies > 0 and any(op == "color" for op in ops or ()) and images.shape[1] not in (1, 3):
            raise InputError(f"--augment-ops color needs 1- or 3-channel inputs, not {images.shape[1]} channels; drop color")
        return resolved

    def check_kind(self, how: str = "as recorded") -> None:
        """``InputError`` when an operation makes no sense for ``input_kind`` (labels or photos), which ``how`` explains."""
        kind = self.input_kind
        if kind not in KIND_AUGMENT:
            raise InputError(f"the input kind must be labels or photos here, not {kind!r}")
        wrong = [op for op in self.augment_ops or () if op not in KIND_AUGMENT[kind]]
        if self.augment_copies > 0 and wrong:
            raise InputError(f"--augment-ops {wrong[0]} makes no sense for {kind.replace('labels', 'label maps')} ({how}): colour jitter would create "
                             f"colours that are no label; use {','.join(KIND_AUGMENT[kind])}")
        if self.recombine != "none" and self.recombine not in KIND_RECOMBINE[kind]:
            fits = ", ".join(KIND_RECOMBINE[kind])
            raise InputError(f"--recombine {self.recombine} makes no sense for {kind.replace('labels', 'label maps')} ({how}); use --recombine {fits}")

    def record(self) -> dict[str, Any]:
        """What a checkpoint records (resolved settings; see ``resolve``)."""
        return {"input_kind": self.input_kind, "augment_copies": self.augment_copies, "augment_ops": list(self.augment_ops or []),
                "recombine": self.recombine, "recombine_copies": self.recombine_copies if self.recombine != "none" else 0}


def build_distillation_set(proxy: torch.Tensor, data: DistillData, seed: int) -> torch.Tensor:
    """The distillation inputs: uint8 (M, C, H, W), the N proxy inputs first (see the module notes).
    ``data`` must be resolved (``DistillData.resolve``); the same proxy inputs, settings and seed give
    the same set. Nothing but ``proxy`` and ``seed`` goes into it."""
    if not data.active:
        return proxy
    if data.input_kind not in ("labels", "photos"):
        raise InputError("build_distillation_set needs resolved settings (DistillData.resolve)")
    n = proxy.shape[0]
    parts = [proxy]
    rng = np.random.default_rng([seed, 0xD157])  # its own stream: the student's RNG is not touched
    for _ in range(data.augment_copies):
        parts.append(torch.stack([augment(proxy[i], data.augment_ops or (), data.input_kind, rng) for i in range(n)]))
    if data.recombine != "none":
        for _ in range(data.recombine_copies):
            made = []
            for i in range(n):
                j = (i + 1 + int(rng.integers(n - 1))) % n  # another input, uniformly
                made.append(recombine(proxy[i], proxy[j], data.recombine, rng))
            parts.append(torch.stack(made))
    return torch.cat(parts)


def augment(x: torch.Tensor, ops: tuple[str, ...], kind: str, rng: np.random.Generator) -> torch.Tensor:
    """One augmented copy of a uint8 (C, H, W) image: ``flip`` (horizontal, half of the time),
    ``crop`` (scaled up by ``CROP_SCALE`` and cropped back at a random offset; nearest-neighbour for
    label maps, so no new colour appears), ``color`` (brightness, contrast, saturation, hue)."""
    import torchvision.transforms.v2.functional as TF
    from torchvision.transforms import InterpolationMode

    size = x.shape[-1]
    if "flip" in ops and rng.random() < 0.5:
        x = x.flip(-1)
    if "crop" in ops:
        load = int(round(size * rng.uniform(*CROP_SCALE)))
        i, j = int(rng.integers(load - size + 1)), int(rng.integers(load - size + 1))
        if load > size:
            mode = InterpolationMode.NEAREST_EXACT if kind == "labels" else InterpolationMode.BILINEAR
            x = TF.resize(x, [load, load], interpolation=mode, antialias=kind != "labels")[..., i : i + size, j : j + size]
    if "color" in ops:
        b, c, s = (float(rng.uniform(1 - JITTER, 1 + JITTER)) for _ in range(3))
        h = float(rng.uniform(-HUE, HUE))
        x = TF.adjust_contrast(TF.adjust_brightness(x, b), c)
        if x.shape[0] == 3:
            x = TF.adjust_hue(TF.adjust_saturation(x, s), h)
    return x.contiguous()


def _box(size: int, side: tuple[float, float], rng: np.random.Generator) -> tuple[int, int]:
    h = max(1, int(round(size * rng.uniform(*side))))
    w = max(1, int(round(size * rng.uniform(*side))))
    return h, w


def recombine(a: torch.Tensor, b: torch.Tensor, how: str, rng: np.random.Generator) -> torch.Tensor:
    """A new uint8 (C, H, W) input from proxy inputs ``a`` and ``b``:

    * ``cutpaste`` (label maps): a box of ``b`` (a quarter to half of each side), without the
      box's commonest colour (its background), pasted onto ``a`` at a random place: windows, doors
      and the like of one label map appear on another;
    * ``mixup`` (photos): λ·a + (1 − λ)·b, λ uniform in ``MIX``;
    * ``cutmix`` (photos): a box of ``b`` covering ``CUTMIX_AREA`` of the image pasted onto ``a``.
    """
    size = a.shape[-1]
    if how == "mixup":
        lam = float(rng.uniform(*MIX))
        return (lam * a.float() + (1 - lam) * b.float()).round_().clamp_(0, 255).to(torch.uint8)
    if how == "cutmix":
        side = float(np.sqrt(rng.uniform(*CUTMIX_AREA)))
        h = w = max(1, int(round(size * side)))
    elif how == "cutpaste":
        h, w = _box(size, PASTE_SIDE, rng)
    else:
        raise InputError(f"invalid --recombine {how!r}; use {', '.join(RECOMBINE[1:])}")
    sy, sx = int(rng.integers(size - h + 1)), int(rng.integers(size - w + 1))
    dy, dx = int(rng.integers(size - h + 1)), int(rng.integers(size - w + 1))
    box = b[:, sy : sy + h, sx : sx + w]
    mask = torch.ones((h, w), dtype=torch.bool)
    if how == "cutpaste":
        key = _key(box[None])[0]
        values, counts = torch.unique(key, return_counts=True)
        mask = key != values[counts.argmax()]
        if not bool(mask.any()):
            mask = torch.ones_like(mask)  # a flat box: paste all of it
    out = a.clone()
    region = out[:, dy : dy + h, dx : dx + w]
    region[:, mask] = box[:, mask]
    return out


def unique_rows(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of each distinct image's first occurrence, in order; for every image, the position of
    its distinct image in that index). uint8 (M, C, H, W); identical bytes count as one."""
    first: dict[bytes, int] = {}
    keep: list[int] = []
    inverse: list[int] = []
    flat = images.reshape(images.shape[0], -1).numpy()
    for i, row in enumerate(flat):
        h = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
        if h not in first:
            first[h] = len(keep)
            keep.append(i)
        inverse.append(first[h])
    return torch.tensor(keep, dtype=torch.long), torch.tensor(inverse, dtype=torch.long)
