"""The pix2pix training settings, shared by regular training, AKD/DMP distillation and DP-SGD."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from privaudit import defaults, distributed
from privaudit.errors import InputError, check_seed


@dataclass(frozen=True)
class TrainConfig:
    """pix2pix defaults (``privaudit.defaults``): Adam 2e-4, β=(0.5, 0.999), λ=100, batch size 1,
    linear decay over the second half of the epochs, jitter (resize to 286/256 of the size, random
    crop) and flips. ``adversarial`` False drops the discriminator (DMP: λ·L1 only).

    ``device``, ``precision`` (auto, fp32, bf16) and ``deterministic`` say how the run uses its
    device (``privaudit.accel``), not what it learns: they are no part of a recipe, and a run may
    resume on another device or precision."""

    epochs: int = defaults.EPOCHS
    batch_size: int = defaults.BATCH_SIZE
    lr: float = defaults.LR
    beta1: float = defaults.BETA1
    lambda_l1: float = defaults.LAMBDA_L1
    decay_epochs: int | None = defaults.DECAY_EPOCHS
    augment: bool = defaults.AUGMENT
    adversarial: bool = True
    ndf: int = defaults.NDF
    seed: int = defaults.SEED
    device: str = defaults.DEVICE
    precision: str = defaults.PRECISION
    deterministic: bool = defaults.DETERMINISTIC

    def validate(self) -> None:
        if self.epochs < 1:
            raise InputError(f"--epochs must be at least 1, not {self.epochs}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, not {self.batch_size}")
        distributed.per_process_batch(self.batch_size)  # under torchrun: the global batch must divide
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"--lr must be a finite number > 0, not {self.lr}")
        if not self.lambda_l1 >= 0 or not math.isfinite(self.lambda_l1):
            raise InputError(f"--lambda-l1 must be a finite number >= 0, not {self.lambda_l1}")
        if self.ndf < 1:
            raise InputError(f"--ndf must be at least 1, not {self.ndf}")
        check_seed(self.seed)
        from privaudit.accel import check_precision  # here: the CLI reads this module before torch loads

        check_precision(self.precision)
        if self.decay_epochs is not None and not 0 <= self.decay_epochs <= self.epochs:
            raise InputError(f"--decay-epochs must be between 0 and --epochs ({self.epochs}), not {self.decay_epochs}")

    @property
    def n_decay(self) -> int:
        return self.epochs // 2 if self.decay_epochs is None else self.decay_epochs

    def lr_factor(self, epoch: int) -> float:
        """pix2pix 'linear' policy: constant, then linear decay over the last ``n_decay`` epochs."""
        constant = self.epochs - self.n_decay
        return 1.0 - max(0, epoch - constant + 1) / float(self.n_decay + 1) if self.n_decay else 1.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["decay_epochs"] = self.n_decay
        return d
