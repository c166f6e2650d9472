"""Segmentation training: the per-pixel cross-entropy step in the one training loop
(``training.loop.train_loop``), and ``train_segmentation``, the library entry of
``privaudit train --task segmentation``.

The loss of an image is the mean cross-entropy over its valid pixels (label != ignore_index); a
batch's loss is the mean over its images (so DP-SGD's per-sample gradients are per image).
Distillation (DMP) uses the same step with soft targets: the teacher's posteriors (N, C, H, W),
loss ``-Σ_c p_teacher log p_student`` per pixel.

Augmentation (``augment``): a random horizontal flip and pix2pix's jitter (upscale by 286/256, a
random crop), photos bilinear, label maps nearest neighbour (other filters would invent classes).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from privaudit import defaults, distributed
from privaudit.data.images import ImageSet, data_fingerprint
from privaudit.device import resolve_device
from privaudit.errors import InputError, check_seed
from privaudit.io import check_writable
from privaudit.models.segnets import SegArch, SegInfo, build, logits_of, normalise
from privaudit.training.loop import EpochStats, OnStep, train_loop, training_record

SEG_STATE_FORMAT = "privaudit.seg-train-state/1"


@dataclass(frozen=True)
class SegTrainConfig:
    """Segmentation training settings (defaults: ``privaudit.defaults`` SEG_*): Adam, a linear
    learning-rate decay over the last ``decay_epochs`` (None: half), flips and jitter."""

    epochs: int = defaults.SEG_EPOCHS
    batch_size: int = defaults.SEG_BATCH_SIZE
    lr: float = defaults.SEG_LR
    beta1: float = defaults.SEG_BETA1
    decay_epochs: int | None = defaults.DECAY_EPOCHS
    augment: bool = defaults.SEG_AUGMENT
    seed: int = defaults.SEED
    device: str = defaults.DEVICE
    amp: bool = True  # bfloat16 autocast, on CUDA only (the generators use privaudit.accel)

    def validate(self) -> None:
        if self.epochs < 1:
            raise InputError(f"--epochs must be at least 1, not {self.epochs}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, not {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"--lr must be a finite number > 0, not {self.lr}")
        check_seed(self.seed)
        if self.decay_epochs is not None and not 0 <= self.decay_epochs <= self.epochs:
            raise InputError(f"--decay-epochs must be between 0 and --epochs ({self.epochs}), not {self.decay_epochs}")
        if distributed.launched():
            raise InputError("segmentation training runs as one process; run it without torchrun")

    @property
    def n_decay(self) -> int:
        return self.epochs // 2 if self.decay_epochs is None else self.decay_epochs

    def lr_factor(self, epoch: int) -> float:
        constant = self.epochs - self.n_decay
        return 1.0 - max(0, epoch - constant + 1) / float(self.n_decay + 1) if self.n_decay else 1.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["decay_epochs"] = self.n_decay
        return d


def augment_batch(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same flip and jitter for photos x (B, 3, H, W float) and targets y: label maps (B, H, W)
    long (nearest) or posteriors (B, C, H, W) float (bilinear)."""
    size = x.shape[-1]
    load = int(round(size * 286 / 256))
    soft = y.is_floating_point()
    if load > size:
        i = int(torch.randint(0, load - size + 1, (1,), generator=gen))
        j = int(torch.randint(0, load - size + 1, (1,), generator=gen))
        x = F.interpolate(x, size=(load, load), mode="bilinear", align_corners=False)[..., i : i + size, j : j + size]
        if soft:
            y = F.interpolate(y, size=(load, load), mode="bilinear", align_corners=False)[..., i : i + size, j : j + size]
        else:
            y = F.interpolate(y.unsqueeze(1).float(), size=(load, load), mode="nearest")[:, 0, i : i + size, j : j + size].long()
    if bool(torch.rand(1, generator=gen) < 0.5):
        x, y = x.flip(-1), y.flip(-1)
    return x.contiguous(), y.contiguous()


def segmentation_loss(logits: torch.Tensor, y: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean over images of each image's mean cross-entropy over its valid pixels. ``y``: labels
    (B, H, W) long, or soft targets (B, C, H, W) (every pixel valid)."""
    logp = F.log_softmax(logits.float(), dim=1)
    if y.is_floating_point():
        per_pixel = -(y * logp).sum(1)
        return per_pixel.flatten(1).mean(1).mean()
    valid = y != ignore_index
    safe = torch.where(valid, y, torch.zeros_like(y))
    nll = -logp.gather(1, safe.unsqueeze(1)).squeeze(1) * valid
    return (nll.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)).mean()


class SegStep:
    """The segmentation step of the one training loop: one permuted batch, augmented, one Adam
    update of the network on ``segmentation_loss``. ``inputs``: uint8 photos (N, 3, H, W);
    ``targets``: uint8 label maps (N, 1, H, W) or float posteriors (N, C, H, W)."""

    what = "training"
    state_format = SEG_STATE_FORMAT
    discriminator = None

    def __init__(self, net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, info: SegInfo, cfg: SegTrainConfig, device: torch.device) -> None:
        self.n = int(inputs.shape[0])
        if self.n == 0:
            raise InputError("no training images")
        net.to(device).train()
        self.generator = net
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
        self.optimizers = (opt, None)
        self.inputs, self.targets, self.info = inputs, targets, info
        self.cfg, self.device = cfg, device
        self.amp = cfg.amp and device.type == "cuda"
        self.starts = batch_starts(self.n, cfg.batch_size)
        self.steps_per_epoch = len(self.starts)

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=gen)
        for b, e in zip(self.starts, self.starts[1:] + [self.n]):
            idx = perm[b:e]
            x = normalise(self.inputs[idx], self.info.normalization)
            y = self.targets[idx]
            y = y.float() if y.is_floating_point() else y[:, 0].long()
            if self.cfg.augment:
                x, y = augment_batch(x, y, gen)
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def __call__(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[dict[str, float], float]:
        x, y = batch
        opt = self.optimizers[0]
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = logits_of(self.generator(x))
        loss = segmentation_loss(logits, y, self.info.ignore_index)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        return {"CE": value}, value

    def epoch_extras(self) -> dict[str, float]:
        return {}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass


def batch_starts(n: int, batch_size: int) -> list[int]:
    """Where each batch of a permutation of ``n`` starts; a last batch of one image joins the one
    before it (BatchNorm in torchvision's pooling branches cannot train on a single image)."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return starts


def fit_segmentation(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, info: SegInfo, cfg: SegTrainConfig, *, out: Path,
                     save_model: Callable[[Path, nn.Module, int], None], fingerprint: dict[str, Any], resume: bool = False,
                     on_step: OnStep | None = None, keep_state: bool = False) -> list[EpochStats]:
    """Train ``net`` on (photos, label maps or teacher posteriors) in the one loop; ``save_model``
    writes the checkpoint after every epoch, ``out.state`` the resume state (see ``train_loop``)."""
    cfg.validate()
    device = resolve_device(cfg.device)
    fp = {"config": {k: v for k, v in asdict(cfg).items() if k not in ("device", "epochs", "decay_epochs")}, **fingerprint}
    step = SegStep(net, inputs, targets, info, cfg, device)
    return train_loop(step, cfg, out=Path(out), save_model=save_model, fingerprint=fp, resume=resume, keep_state=keep_state, on_step=on_step)  # type: ignore[arg-type]


@dataclass
class SegTrainResult:
    """What ``train_segmentation`` wrote: the checkpoint, its architecture, the pairs, the epochs' mean losses."""

    out: Path
    arch: SegArch
    pairs: int
    image_size: int
    history: list[EpochStats] = field(default_factory=list)
    seconds: float = 0.0


def train_segmentation(
    data: str | Path | ImageSet,
    out: str | Path,
    *,
    num_classes: int,
    arch: str = defaults.SEG_ARCH,
    size: int | None = None,
    ngf: int = defaults.SEG_NGF,
    num_downs: int | None = None,
    dropout: bool = False,
    normalize: str | None = None,
    ignore_index: int = defaults.IGNORE_INDEX,
    classes: list[str] | None = None,
    backbone_weights: str | Path | None = None,
    config: SegTrainConfig | None = None,
    resume: bool = False,
    keep_state: bool = False,
    on_step: OnStep | None = None,
    on_data: Callable[[ImageSet], None] | None = None,
) -> SegTrainResult:
    """Train a segmentation network (``arch``: ``unet`` or a torchvision architecture, randomly
    initialised; ``backbone_weights``: a user-supplied backbone file) on ``data`` (A/ photos, B/
    label maps; or a set already read) and write the checkpoint ``out`` after every epoch.

    Records ``task: segmentation``, the classes (``classes`` or 0..C-1), the palette of the label
    maps (when they are palette PNGs), the input normalisation (default: ImageNet's for torchvision
    networks, [-1, 1] for the U-Net) and the ignore index. Raises InputError/DataError before any
    training for bad settings or data, TrainingError when the run diverges.
    """
    from privaudit.data.labels import check_num_classes, folder_palette, load_segmentation_pairs
    from privaudit.models.segnets import SegArch, check_arch_name, default_normalization, load_backbone, unet_seg_arch
    from privaudit.models.segcheckpoint import save_segmentation_checkpoint

    t0 = time.perf_counter()
    config = config or SegTrainConfig()
    check_num_classes(num_classes)
    check_arch_name(arch)
    check_writable(out, what="checkpoint")
    config.validate()
    info = SegInfo.new(num_classes, normalization=normalize or default_normalization(arch), ignore_index=ignore_index, classes=classes)
    if arch == "unet" and size is not None:
        unet_seg_arch(num_classes, size, ngf=ngf, num_downs=num_downs)  # a --size the U-Net cannot take fails before any image is read
    if backbone_weights is not None and arch == "unet":
        raise InputError("--backbone-weights is for torchvision architectures; the U-Net has no pretrained backbone")
    if isinstance(data, ImageSet):
        pairs = data
        if size is not None and pairs.size != size:
            raise InputError(f"the pairs of {pairs.path} are {pairs.size}px, not the --size {size} asked for")
    else:
        pairs = load_segmentation_pairs(data, num_classes=num_classes, size=size, ignore_index=ignore_index, what="training data")
        palette = folder_palette(data, num_classes)
        if palette:
            info = SegInfo(classes=info.classes, normalization=info.normalization, ignore_index=info.ignore_index, palette=tuple(palette))
    if pairs.targets is None or len(pairs) == 0:
        raise InputError(f"{pairs.path}: no training pairs")
    if on_data is not None:
        on_data(pairs)
    img_size = pairs.size
    seg_arch = unet_seg_arch(num_classes, img_size, ngf=ngf, num_downs=num_downs, use_dropout=dropout) if arch == "unet" else SegArch(name=arch, num_classes=num_classes)
    net = build(seg_arch, seed=config.seed)
    backbone = load_backbone(net, Path(backbone_weights), seg_arch) if backbone_weights is not None else None
    trained_on = {"path": pairs.path if isinstance(data, ImageSet) else str(data), "count": len(pairs), "sha256": data_fingerprint(pairs)}
    provenance: dict[str, Any] = {"trained_on": trained_on, "training": config.to_dict(), **({"backbone_weights": backbone} if backbone else {})}

    def save(path: Path, model: nn.Module, epoch: int) -> None:
        save_segmentation_checkpoint(path, net=model, arch=seg_arch, image_size=img_size, info=info, defense={"method": "none"},
                                     provenance={**provenance, "epoch": epoch}, training=training_record(epoch, config.epochs))

    history = fit_segmentation(net, pairs.inputs, pairs.targets, info, config, out=Path(out), save_model=save, resume=resume, keep_state=keep_state,
                               on_step=on_step, fingerprint={"data": trained_on["sha256"], "arch": seg_arch.to_dict(), "segmentation": info.to_dict(),
                                                             "backbone": backbone})
    return SegTrainResult(out=Path(out), arch=seg_arch, pairs=len(pairs), image_size=img_size, history=history, seconds=time.perf_counter() - t0)
