"""Regular training (``train_regular``) and its helpers, until they move to ``privaudit.training``.

(The attack lives in ``privaudit.attacks.api``, the data checks in ``privaudit.data.checks``, the
report builders in ``privaudit.report.build``.)
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from privaudit.data.images import ImageSet, check_direction, load_pairs, to_float
from privaudit.errors import InputError
from privaudit.models.checkpoint import save_checkpoint
from privaudit.models.networks import UnetArch, UnetGenerator, init_weights
from privaudit.training import EpochStats, TrainConfig, fit, training_record


def default_num_downs(size: int) -> int:
    """pix2pix uses unet_256 (8 downsamplings) at 256 px; smaller images get a shallower U-Net."""
    if size < 32:
        raise InputError(f"--size {size} is too small for a U-Net (at least 32 px, 5 downsamplings); pass a larger --size")
    depth = min(8, int(math.log2(size)))
    if size % (2**depth):
        raise InputError(f"--size {size} is not a multiple of {2**depth}; pass --size {size // 2**depth * 2**depth} or give --num-downs")
    return depth


def data_fingerprint(images: ImageSet) -> str:
    """Content hash of an image set (inputs and targets), to tie a resumed run to its data."""
    h = hashlib.sha256()
    h.update(images.inputs.numpy().tobytes())
    if images.targets is not None:
        h.update(images.targets.numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# train


@dataclass(frozen=True)
class ModelSpec:
    """Architecture flags for a new generator (None = default for the image size)."""

    num_downs: int | None = None
    ngf: int = 64
    norm: str = "batch"
    use_dropout: bool = True

    def build(self, size: int, input_nc: int = 3, output_nc: int = 3) -> UnetArch:
        if self.ngf < 1:
            raise InputError(f"--ngf must be at least 1, not {self.ngf}")
        if self.num_downs is not None and self.num_downs < 5:
            raise InputError(f"--num-downs must be at least 5 (pix2pix U-Nets downsample at least 5 times), not {self.num_downs}")
        depth = default_num_downs(size) if self.num_downs is None else self.num_downs
        arch = UnetArch(input_nc=input_nc, output_nc=output_nc, num_downs=depth, ngf=self.ngf, norm=self.norm, use_dropout=self.use_dropout)
        arch.validate()
        if size % arch.min_size:
            raise InputError(f"--size {size} is not a multiple of {arch.min_size} (a U-Net with {depth} downsamplings); change --size or --num-downs")
        return arch


def train_regular(
    data: str | Path,
    out: str | Path,
    *,
    direction: str,
    size: int | None,
    spec: ModelSpec,
    cfg: TrainConfig,
    resume: bool = False,
    on_step: Callable[[int, int, int, dict[str, float]], None] | None = None,
    keep_state: bool = False,
    on_data: Callable[[ImageSet], None] | None = None,
) -> tuple[list[EpochStats], ImageSet]:
    """Regular pix2pix training of a teacher on the private pairs in ``data``; ``on_data`` sees the
    pairs once they are read, before training."""
    check_direction(direction)
    cfg.validate()
    if size is not None:
        spec.build(size)  # a --size the U-Net cannot take fails before any image is read
    pairs = load_pairs(data, direction=direction, size=size, what="training data")
    if on_data is not None:
        on_data(pairs)
    img_size = pairs.size
    arch = spec.build(img_size, pairs.inputs.shape[1], pairs.targets.shape[1])
    torch.manual_seed(cfg.seed)
    G = UnetGenerator(arch)
    init_weights(G)
    provenance = {"trained_on": {"path": str(data), "count": len(pairs), "sha256": data_fingerprint(pairs)}, "training": cfg.to_dict()}

    def save(path: Path, net: UnetGenerator, epoch: int) -> None:
        save_checkpoint(path, generator=net, image_size=img_size, direction=direction, defense={"method": "none"}, provenance={**provenance, "epoch": epoch},
                        training=training_record(epoch, cfg.epochs))

    history = fit(
        G,
        pairs.inputs,
        to_float(pairs.targets),
        cfg,
        out=Path(out),
        save_model=save,
        resume=resume,
        fingerprint={"data": provenance["trained_on"]["sha256"], "arch": arch.to_dict(), "direction": direction},
        on_step=on_step,
        keep_state=keep_state,
    )
    return history, pairs
