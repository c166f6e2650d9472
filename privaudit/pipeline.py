"""Library entry points behind the commands: each takes a frozen config, returns results.

The CLI only parses options into these configs, calls one function and renders what comes back.
"""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from privaudit import __version__
from privaudit.attacks.reconstruction import AttackConfig, AttackResult, run_attack
from privaudit.data.images import ImageSet, check_direction, load_pairs, to_float
from privaudit.errors import InputError
from privaudit.models.checkpoint import ArchOverrides, LoadedModel, load_model, save_checkpoint
from privaudit.models.networks import UnetArch, UnetGenerator, init_weights
from privaudit.training import EpochStats, TrainConfig, fit

from privaudit.report import REPORT_SCHEMA  # noqa: E402


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
    import hashlib

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
) -> tuple[list[EpochStats], ImageSet]:
    """Regular pix2pix training of a teacher on the private pairs in ``data``."""
    check_direction(direction)
    cfg.validate()
    pairs = load_pairs(data, direction=direction, size=size, what="training data")
    img_size = pairs.size
    arch = spec.build(img_size, pairs.inputs.shape[1], pairs.targets.shape[1])
    torch.manual_seed(cfg.seed)
    G = UnetGenerator(arch)
    init_weights(G)
    provenance = {"trained_on": {"path": str(data), "count": len(pairs), "sha256": data_fingerprint(pairs)}, "training": cfg.to_dict()}

    def save(path: Path, net: UnetGenerator, epoch: int) -> None:
        save_checkpoint(path, generator=net, image_size=img_size, direction=direction, defense={"method": "none"}, provenance={**provenance, "epoch": epoch})

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
    )
    return history, pairs


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
        },
        "data": {
            "direction": direction,
            "members": {"path": members.path, "count": len(members)},
            "nonmembers": {"path": nonmembers.path, "count": len(nonmembers)},
        },
        "environment": {"torch": torch.__version__, "device": str(model.device), "python": platform.python_version()},
    }


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
