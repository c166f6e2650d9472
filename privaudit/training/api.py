"""``train``: regular pix2pix training of a generator (the teacher) on private pairs; what
``privaudit train`` calls."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from privaudit import defaults
from privaudit.data.images import check_direction, data_fingerprint, load_pairs, to_float
from privaudit.io import check_writable
from privaudit.models.checkpoint import save_checkpoint
from privaudit.models.networks import ModelSpec, UnetArch, UnetGenerator, init_weights
from privaudit.training.config import TrainConfig
from privaudit.training.loop import EpochStats, OnStep, training_record
from privaudit.training.pix2pix import fit


@dataclass
class TrainResult:
    """What ``train`` wrote: the checkpoint ``out``, its architecture, the per-epoch mean losses
    (of this invocation and, after ``resume``, the earlier ones), the pairs it was trained on."""

    out: Path
    arch: UnetArch
    pairs: int
    image_size: int
    history: list[EpochStats] = field(default_factory=list)
    seconds: float = 0.0


def train(
    data: str | Path,
    out: str | Path,
    *,
    direction: str = defaults.DIRECTION,
    size: int | None = None,
    model: ModelSpec | None = None,
    config: TrainConfig | None = None,
    resume: bool = False,
    keep_state: bool = False,
    on_step: OnStep | None = None,
) -> TrainResult:
    """Train a pix2pix generator (U-Net + conditional PatchGAN, GAN + λ·L1) on the pairs in ``data``
    and write the privaudit checkpoint ``out`` after every epoch (its resume state to ``out.state``).

    ``model`` gives the U-Net's flags (default: pix2pix's, depth from the image size), ``config`` the
    training settings (default: pix2pix's). ``resume`` continues an interrupted run; the state is
    deleted when the run finishes, unless ``keep_state``. ``on_step(epoch, step, steps_per_epoch,
    mean_losses)`` reports progress. Raises ``InputError``/``DataError`` before any training for bad
    settings or data, ``TrainingError`` when the run diverges.
    """
    t0 = time.perf_counter()
    model = model or ModelSpec()
    config = config or TrainConfig()
    check_direction(direction)
    check_writable(out, what="checkpoint")
    config.validate()
    pairs = load_pairs(data, direction=direction, size=size, what="training data")
    img_size = pairs.size
    arch = model.build(img_size, pairs.inputs.shape[1], pairs.targets.shape[1])
    torch.manual_seed(config.seed)
    G = UnetGenerator(arch)
    init_weights(G)
    provenance = {"trained_on": {"path": str(data), "count": len(pairs), "sha256": data_fingerprint(pairs)}, "training": config.to_dict()}

    def save(path: Path, net: UnetGenerator, epoch: int) -> None:
        save_checkpoint(path, generator=net, image_size=img_size, direction=direction, defense={"method": "none"}, provenance={**provenance, "epoch": epoch},
                        training=training_record(epoch, config.epochs))

    history = fit(
        G,
        pairs.inputs,
        to_float(pairs.targets),
        config,
        out=Path(out),
        save_model=save,
        resume=resume,
        fingerprint={"data": provenance["trained_on"]["sha256"], "arch": arch.to_dict(), "direction": direction},
        on_step=on_step,
        keep_state=keep_state,
    )
    return TrainResult(out=Path(out), arch=arch, pairs=len(pairs), image_size=img_size, history=history, seconds=time.perf_counter() - t0)
