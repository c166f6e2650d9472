"""pix2pix training: the objective, its plain step, and ``train``, the library entry of ``privaudit train``.

Regular training (``train``) fits G to the private targets y. AKD is the same game with
y := G_t(x), the teacher's output on an unlabelled proxy input (Eq. 4 and 5 of the AKD paper); DMP
drops the discriminator and keeps only the λ·L1 term. ``fit`` serves all three: ``PlainStep`` in
the one loop (``training.loop.train_loop``). DP-SGD uses the same losses in its own step.
"""

from __future__ import annotations

import math
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from privaudit import defaults, distributed
from privaudit.accel import Accel, resolve_accel
from privaudit.data.images import ImageSet, check_direction, data_fingerprint, to_float
from privaudit.data.stream import StreamedSet, Streaming, open_pairs
from privaudit.errors import InputError
from privaudit.io import check_writable
from privaudit.device import resolve_device
from privaudit.models.arch import ModelSpec, UnetArch
from privaudit.models.checkpoint import save_checkpoint
from privaudit.models.networks import MultiscaleDiscriminator, NLayerDiscriminator, UnetGenerator, init_weights
from privaudit.training.config import TrainConfig
from privaudit.training.data import StreamedPairs, TrainingData, training_data
from privaudit.training.loop import EpochStats, OnStep, train_loop, training_record
from privaudit.training.resume import TRAIN_STATE_FORMAT


def jitter(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """pix2pix's augmentation on a batch: upscale by 286/256, the same random crop and flip for x and y."""
    size = x.shape[-1]
    load = int(round(size * 286 / 256))
    if load > size:
        both = F.interpolate(torch.cat([x, y], 1), size=(load, load), mode="bicubic", align_corners=False).clamp_(-1, 1)
        i = int(torch.randint(0, load - size + 1, (1,), generator=gen))
        j = int(torch.randint(0, load - size + 1, (1,), generator=gen))
        both = both[..., i : i + size, j : j + size]
        x, y = both[:, : x.shape[1]], both[:, x.shape[1] :]
    if bool(torch.rand(1, generator=gen) < 0.5):
        x, y = x.flip(-1), y.flip(-1)
    return x.contiguous(), y.contiguous()


class GANLoss(nn.Module):
    """pix2pix 'vanilla' GAN loss on the PatchGAN's logits."""

    def forward(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        return F.binary_cross_entropy_with_logits(logits, target)


Autocast = Callable[[], AbstractContextManager[Any]]
"""A context for the networks' forward passes: ``Accel.autocast`` (bf16 on CUDA) or ``nullcontext``."""


@dataclass(frozen=True)
class Objective:
    """Additions to the pix2pix objective (pix2pixHD, Wang et al. 2018; all off by default):

    ``feature_matching`` W: the generator also matches the discriminator's intermediate features
    on (x, G(x)) to those on (x, y): W · Σ_scales Σ_layers (4 / layers) / num_D · L1 (pix2pixHD's
    weighting; it uses W = 10). ``num_D``: that many PatchGANs, the k-th on the pair downsampled k
    times; their GAN losses are summed. ``ema`` d: an exponential moving average of the generator's
    weights and buffers after every step (decay min(d, (1 + t) / (10 + t)) at update t, so a short
    run is not pulled back to its initial weights); the saved model is the average.
    Both discriminator options need the adversarial game (not DMP)."""

    feature_matching: float = defaults.FEATURE_MATCHING
    num_D: int = defaults.NUM_D
    ema: float | None = defaults.EMA

    def validate(self, *, adversarial: bool = True) -> None:
        if isinstance(self.feature_matching, bool) or not (isinstance(self.feature_matching, (int, float)) and math.isfinite(self.feature_matching)
                                                            and self.feature_matching >= 0):
            raise InputError(f"--feature-matching must be a finite number >= 0 (pix2pixHD uses 10), not {self.feature_matching}")
        if isinstance(self.num_D, bool) or not isinstance(self.num_D, int) or not 1 <= self.num_D <= MAX_NUM_D:
            raise InputError(f"--num-D must be a whole number from 1 to {MAX_NUM_D}, not {self.num_D}")
        if self.ema is not None and (isinstance(self.ema, bool) or not isinstance(self.ema, (int, float)) or not 0 < self.ema < 1):
            raise InputError(f"--ema must be a decay between 0 and 1 (e.g. 0.999), not {self.ema}")
        if not adversarial and (self.feature_matching > 0 or self.num_D > 1):
            flag = "--feature-matching" if self.feature_matching > 0 else "--num-D"
            raise InputError(f"{flag} shapes the discriminator's part of the loss, and --method dmp has no discriminator; use --method akd or drop {flag}")

    def record(self) -> dict[str, Any]:
        """The settings that differ from plain pix2pix (``PLAIN_OBJECTIVE``, whatever the defaults become), so
        that a record without a key means the plain value: checkpoints made before these options
        existed read alike."""
        d = {"feature_matching": float(self.feature_matching), "num_D": self.num_D, "ema": None if self.ema is None else float(self.ema)}
        return {k: v for k, v in d.items() if v != PLAIN_OBJECTIVE[k]}


PLAIN_OBJECTIVE: dict[str, Any] = {"feature_matching": 0.0, "num_D": 1, "ema": None}


MAX_NUM_D = 4


def ema_average(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """``AveragedModel``'s ``multi_avg_fn`` for ``Objective.ema``: lerp the float tensors towards the
    model's with weight 1 − min(decay, (1 + t) / (10 + t)); copy integer buffers (BatchNorm's count)."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        t = int(n_averaged)
        d = min(decay, (1 + t) / (10 + t))
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:
            for a, c in zip(averaged, current):
                a.copy_(c)

    return update


def _total(losses: list[torch.Tensor]) -> torch.Tensor:
    """Sum of per-scale losses (one scale: that loss itself, so plain pix2pix computes what it always did)."""
    total = losses[0]
    for extra in losses[1:]:
        total = total + extra
    return total


def _logits(D: nn.Module, inp: torch.Tensor) -> list[torch.Tensor]:
    out = D(inp)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _features(D: nn.Module, inp: torch.Tensor) -> list[list[torch.Tensor]]:
    """Per scale: the discriminator's intermediate activations, then its logits."""
    if isinstance(D, MultiscaleDiscriminator):
        return D.features(inp)
    if isinstance(D, NLayerDiscriminator):
        return [D.features(inp)]
    raise InputError(f"feature matching needs a PatchGAN discriminator, not a {type(D).__name__}")


def discriminator_loss(D: nn.Module, gan_loss: GANLoss, x: torch.Tensor, y: torch.Tensor, fake: torch.Tensor, *,
                       amp: Autocast = nullcontext) -> tuple[torch.Tensor, dict[str, float]]:
    """The conditional PatchGAN's loss on one batch: ½·(BCE(D(x, G(x)), fake) + BCE(D(x, y), real)),
    each summed over the scales of a multi-scale D. x, y, fake: (B, C, H, W). D runs under ``amp``;
    the losses are float32, computed outside it. Returns (loss, {D_real, D_fake})."""
    with amp():
        logits_fake = _logits(D, torch.cat([x, fake.detach().to(x.dtype)], 1))
        logits_real = _logits(D, torch.cat([x, y], 1))
    loss_fake = _total([gan_loss(lg.float(), False) for lg in logits_fake])
    loss_real = _total([gan_loss(lg.float(), True) for lg in logits_real])
    return 0.5 * (loss_fake + loss_real), {"D_real": loss_real.item(), "D_fake": loss_fake.item()}


def generator_loss(D: nn.Module | None, gan_loss: GANLoss, x: torch.Tensor, y: torch.Tensor, fake: torch.Tensor,
                   lambda_l1: float, feature_matching: float = 0.0, *, amp: Autocast = nullcontext) -> tuple[torch.Tensor, dict[str, float]]:
    """The generator's loss on one batch: λ·L1(G(x), y), plus BCE(D(x, G(x)), real) with a
    discriminator (None: DMP; summed over the scales of a multi-scale D), plus
    ``feature_matching``·FM (see ``Objective``). D runs under ``amp``; the losses are float32,
    computed outside it. Returns (loss, {G_GAN, G_FM, G_L1})."""
    loss_l1 = F.l1_loss(fake.float(), y.float())
    loss = lambda_l1 * loss_l1
    logged: dict[str, float] = {}
    if D is not None:
        pair = torch.cat([x, fake.to(x.dtype)], 1)
        if feature_matching > 0:
            with amp():
                fake_feats = _features(D, pair)
                with torch.no_grad():
                    real_feats = _features(D, torch.cat([x, y.to(x.dtype)], 1))
            loss_gan = _total([gan_loss(f[-1].float(), True) for f in fake_feats])
            terms = [4.0 / (len(ff) - 1) / len(fake_feats) * F.l1_loss(a.float(), b.float())
                     for ff, rf in zip(fake_feats, real_feats) for a, b in zip(ff[:-1], rf[:-1])]
            loss_fm = _total(terms)
            loss = loss + loss_gan + feature_matching * loss_fm
            logged["G_FM"] = loss_fm.item()
        else:
            with amp():
                logits = _logits(D, pair)
            loss_gan = _total([gan_loss(lg.float(), True) for lg in logits])
            loss = loss + loss_gan
        logged["G_GAN"] = loss_gan.item()
    logged["G_L1"] = loss_l1.item()
    return loss, logged


@contextmanager
def frozen(D: nn.Module | None) -> Iterator[None]:
    """D's parameters need no gradient while the generator learns from it."""
    if D is None:
        yield
        return
    for p in D.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in D.parameters():
            p.requires_grad_(True)


class PlainStep:
    """The pix2pix step: one permuted batch (jittered when ``cfg.augment``) feeds D's update, then
    G's. ``data``: the pairs (``training.data``: in memory or streamed, the same batches either way).
    Builds the discriminator (``cfg.adversarial``; seeded with ``cfg.seed``) and both Adam optimizers.

    ``accel`` (``privaudit.accel``) places the networks and batches on the device: bf16 autocast
    for the forward passes (losses in float32), channels_last, pinned non-blocking copies, on CUDA;
    the batches are copied as uint8 and turned into floats and jittered on the device.

    Under torchrun (``privaudit.distributed``) ``cfg.batch_size`` is the global batch: every process
    draws the same permutation and takes its shard of each batch; G and D are wrapped in
    ``DistributedDataParallel`` (``generator``/``discriminator`` stay the plain networks, which are
    saved), each process's loss is weighted by its share of the batch, so the averaged gradient is
    the one of the mean loss over the global batch, and the logged losses are the global batch's.
    """

    what = "training"
    state_format = TRAIN_STATE_FORMAT

    def __init__(self, generator: UnetGenerator, data: TrainingData, cfg: TrainConfig, accel: Accel,
                 discriminator: nn.Module | None = None, objective: Objective | None = None) -> None:
        self.data = data
        self.n = data.n
        if self.n == 0:
            raise InputError("no training images")
        self.objective = objective = objective or Objective(**PLAIN_OBJECTIVE)  # None: plain pix2pix (regular training), whatever the defaults
        objective.validate(adversarial=cfg.adversarial)
        torch.manual_seed(cfg.seed)
        D = None
        if cfg.adversarial:
            channels = data.input_nc + data.output_nc
            if discriminator is not None:
                D = discriminator
            elif objective.num_D > 1:
                D = MultiscaleDiscriminator(channels, data.size, objective.num_D, ndf=cfg.ndf, norm=generator.arch.norm)
            else:
                D = NLayerDiscriminator(channels, ndf=cfg.ndf, norm=generator.arch.norm)
            init_weights(D)
            accel.module(D).train()
        accel.module(generator).train()
        self.generator, self.discriminator = generator, D
        self.ema = None
        if objective.ema is not None:
            from torch.optim.swa_utils import AveragedModel

            self.ema = AveragedModel(generator, multi_avg_fn=ema_average(objective.ema), use_buffers=True)
            self.ema.module.eval()  # only ever saved, never trained
        opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999)) if D is not None else None
        self.optimizers = (opt_g, opt_d)
        device = accel.device
        self.cfg, self.device, self.accel = cfg, device, accel
        self.gan_loss = GANLoss()
        self.steps_per_epoch = math.ceil(self.n / cfg.batch_size)
        self.world = distributed.world_size() if distributed.active() else 1
        if self.world > 1:
            distributed.per_process_batch(cfg.batch_size)
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            self.g_step: nn.Module = DDP(generator, device_ids=ids)
            self.d_step: nn.Module | None = DDP(D, device_ids=ids) if D is not None else None
        else:
            self.g_step, self.d_step = generator, D

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int, int]]:
        """(x, y, this process's real batch size, the global batch size) per step; one process
        takes the whole batch, several (torchrun) their shards of it (``distributed.shard``)."""
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=gen)
        if self.world > 1:
            # Dropout draws from the global RNG: one stream per process and epoch, so the shards get
            # independent masks (not the same masks in every process), and a resumed run draws alike.
            torch.manual_seed(((self.cfg.seed * 1_000_003 + epoch) * 8191 + distributed.rank() + 1) % (2**63))
        parts = []
        for b in range(0, self.n, self.cfg.batch_size):
            idx = perm[b : b + self.cfg.batch_size]
            part, count = distributed.shard(idx) if self.world > 1 else (idx, len(idx))
            parts.append((part, count, len(idx)))
        # In memory the batches are indexed; streamed, the workers decode them ahead (seeded per epoch).
        fetched = self.data.take([part for part, _, _ in parts], seed=self.cfg.seed * 1_000_003 + epoch)
        for (part, count, total), (x, y) in zip(parts, fetched):
            x, y = self.accel.batch(x), self.accel.batch(y)  # pinned, non-blocking copies on CUDA
            if self.cfg.augment:
                # The crop and flip are drawn once per batch from the same generator in every
                # process, so the shards are jittered as the whole batch would be.
                x, y = jitter(x, y, gen)
                if self.accel.channels_last:
                    x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
            yield x, y, count, total

    def __call__(self, batch: tuple[torch.Tensor, torch.Tensor, int, int]) -> tuple[dict[str, float], float]:
        x, y, count, total = batch
        G, D = self.g_step, self.d_step
        opt_g, opt_d = self.optimizers
        # DDP averages the processes' gradients; weighting each process's mean loss by its share
        # of the batch times the world size makes that average the gradient of the global mean.
        weight = count * self.world / total if self.world > 1 else None
        amp = self.accel.autocast
        with amp():
            fake = G(x)
        losses: dict[str, float] = {}
        if D is not None and opt_d is not None:
            loss_d, logged = discriminator_loss(D, self.gan_loss, x, y, fake, amp=amp)
            opt_d.zero_grad(set_to_none=True)
            (loss_d if weight is None else loss_d * weight).backward()
            opt_d.step()
            losses.update(logged)
        plain_d = self.discriminator  # G learns through D, whose gradients are not wanted (no DDP sync)
        with frozen(plain_d):
            loss_g, logged = generator_loss(plain_d, self.gan_loss, x, y, fake, self.cfg.lambda_l1, self.objective.feature_matching, amp=amp)
            opt_g.zero_grad(set_to_none=True)
            (loss_g if weight is None else loss_g * weight).backward()
        opt_g.step()
        if self.ema is not None:
            self.ema.update_parameters(self.generator)
        losses.update(logged)
        if weight is None:
            return losses, loss_g.item()
        means = distributed.weighted_means({**losses, "_G": loss_g.item()}, count, self.device)
        g_total = means.pop("_G")
        return means, g_total

    @property
    def saved_generator(self) -> nn.Module:
        """What the checkpoint holds: the EMA of the generator's weights (``Objective.ema``), else the generator."""
        return self.ema.module if self.ema is not None else self.generator

    def epoch_extras(self) -> dict[str, float]:
        return {}

    def extra_state(self) -> dict[str, Any]:
        return {"ema": self.ema.state_dict()} if self.ema is not None else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.ema is not None:
            if not isinstance(state.get("ema"), dict):
                raise InputError("--resume: the saved run kept no moving average of the weights (--ema); use the same options or drop --resume")
            self.ema.load_state_dict(state["ema"])


def fit(
    generator: UnetGenerator,
    inputs: torch.Tensor | TrainingData,
    targets: torch.Tensor | None,
    cfg: TrainConfig,
    *,
    out: Path,
    save_model: Callable[[Path, UnetGenerator, int], None],
    resume: bool = False,
    discriminator: nn.Module | None = None,
    fingerprint: dict[str, Any] | None = None,
    on_step: OnStep | None = None,
    keep_state: bool = False,
    accel: Accel | None = None,
    objective: Objective | None = None,
) -> list[EpochStats]:
    """Train ``generator`` on (inputs, targets) with the pix2pix objective (and ``objective``'s additions).

    inputs: uint8 (N, C_in, H, W); targets: float (N, C_out, H, W) in [-1, 1] (teacher outputs for
    distillation) or uint8 images (real targets for regular training, mapped to [-1, 1] batch by
    batch); or ``inputs`` a ``training.data.TrainingData`` (pairs streamed from disk) and ``targets`` None. ``cfg.adversarial`` False gives DMP
    (L1 only). ``on_step(epoch, step, steps_per_epoch, mean_losses)`` reports progress.
    ``save_model(path, G, epoch)`` writes the model checkpoint after every epoch.
    ``fingerprint`` (the data and settings) must match on ``resume``. The resume state is deleted
    when the run finishes, unless ``keep_state``. Raises ``TrainingError`` when the run diverges
    (see ``training.loop.divergence``), before that epoch is saved. ``accel``: how the run uses its
    device (default: ``train_accel(cfg)``; the caller passes the one its checkpoints record).
    """
    cfg.validate()
    distributed.per_process_batch(cfg.batch_size)
    accel = accel or train_accel(cfg)
    device = accel.device
    # What must match on --resume: everything but the length of the run and how it uses its device
    # (the world size neither: a state written by N processes resumes in M).
    fp = {"config": {k: v for k, v in asdict(cfg).items() if k not in (*RUN_SETTINGS, "epochs", "decay_epochs")}, **(fingerprint or {})}
    if objective is not None and objective.record():
        fp["objective"] = objective.record()  # only when set, so the states of plain runs resume as before
    with distributed.session(device), accel.active():
        step = PlainStep(generator, training_data(inputs, targets), cfg, accel, discriminator, objective)
        return train_loop(step, cfg, out=Path(out), save_model=save_model, fingerprint=fp, resume=resume, keep_state=keep_state,
                          on_step=on_step if distributed.is_main() else None)


# TrainConfig fields that say how a run uses its device, not what it learns
RUN_SETTINGS = ("device", "precision", "deterministic")


def train_accel(cfg: TrainConfig, *, fp32_only: str | None = None) -> Accel:
    """How a training run of ``cfg`` uses its device (``privaudit.accel``): the device it names
    (under torchrun on CUDA, this process's GPU), ``cfg.precision`` and ``cfg.deterministic``;
    ``fp32_only``: why this run must stay fp32 (DP-SGD)."""
    device = distributed.device_for(resolve_device(cfg.device))
    return resolve_accel(device, cfg.precision, deterministic=cfg.deterministic, fp32_only=fp32_only)


# ---------------------------------------------------------------------------------------------
# regular training: `privaudit train`


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
    data: str | Path | ImageSet | StreamedSet,
    out: str | Path,
    *,
    direction: str = defaults.DIRECTION,
    size: int | None = None,
    model: ModelSpec | None = None,
    config: TrainConfig | None = None,
    resume: bool = False,
    keep_state: bool = False,
    on_step: OnStep | None = None,
    on_data: Callable[[ImageSet | StreamedSet], None] | None = None,
    streaming: Streaming | None = None,
) -> TrainResult:
    """Train a pix2pix generator (U-Net + conditional PatchGAN, GAN + λ·L1) on the pairs in ``data``
    (a folder, or pairs already read: an ``ImageSet``, e.g. a reference model's sample of a
    population) and write the privaudit checkpoint ``out`` after every epoch (its resume state to ``out.state``).

    ``model`` gives the U-Net's flags (default: pix2pix's, depth from the image size), ``config`` the
    training settings (default: pix2pix's). ``resume`` continues an interrupted run; the state is
    deleted when the run finishes, unless ``keep_state``. ``on_step(epoch, step, steps_per_epoch,
    mean_losses)`` reports progress; ``on_data(pairs)`` sees the pairs once read, before training
    (the CLI warns about resizing there). ``streaming``: when a folder is streamed from disk instead of
    read whole into memory (default ``Streaming()``: above the memory budget); the same seed gives the
    same model either way. Raises ``InputError``/``DataError`` before any training for bad
    settings or data, ``TrainingError`` when the run diverges.
    """
    t0 = time.perf_counter()
    model = model or ModelSpec()
    config = config or TrainConfig()
    check_direction(direction)
    check_writable(out, what="checkpoint")
    config.validate()
    accel = train_accel(config)  # a device or precision it cannot have fails before any image is read
    if size is not None:
        model.build(size)  # a --size the U-Net cannot take fails before any image is read
    given = isinstance(data, (ImageSet, StreamedSet))
    pairs = given_pairs(data, size) if given else open_pairs(data, direction=direction, size=size, what="training data", streaming=streaming)
    if on_data is not None:
        on_data(pairs)
    img_size = pairs.size
    arch = model.build(img_size, pairs.input_nc, pairs.output_nc)
    torch.manual_seed(config.seed)
    G = UnetGenerator(arch)
    init_weights(G)
    provenance = {"trained_on": {"path": pairs.path if given else str(data), "count": len(pairs), "sha256": data_fingerprint(pairs)}, "training": config.to_dict(),
                  "distributed": distributed.record(config.batch_size), "runtime": accel.record()}

    def save(path: Path, net: UnetGenerator, epoch: int) -> None:
        save_checkpoint(path, generator=net, image_size=img_size, direction=direction, defense={"method": "none"}, provenance={**provenance, "epoch": epoch},
                        training=training_record(epoch, config.epochs))

    streamed = isinstance(pairs, StreamedSet)
    history = fit(
        G,
        StreamedPairs(pairs) if streamed else pairs.inputs,
        None if streamed else pairs.targets,  # uint8: mapped to [-1, 1] batch by batch, not held as float32
        config,
        out=Path(out),
        save_model=save,
        resume=resume,
        fingerprint={"data": provenance["trained_on"]["sha256"], "arch": arch.to_dict(), "direction": direction},
        on_step=on_step,
        keep_state=keep_state,
        accel=accel,
    )
    return TrainResult(out=Path(out), arch=arch, pairs=len(pairs), image_size=img_size, history=history, seconds=time.perf_counter() - t0)


def given_pairs(pairs: ImageSet | StreamedSet, size: int | None) -> ImageSet | StreamedSet:
    """Pairs handed over already read: they must be pairs, non-empty, and of ``size`` when one is asked for."""
    if not pairs.has_targets:
        raise InputError(f"{pairs.path}: training needs (input, target) pairs, but only inputs were given")
    if len(pairs) == 0:
        raise InputError(f"{pairs.path}: no training pairs")
    if size is not None and pairs.size != size:
        raise InputError(f"the pairs of {pairs.path} are {pairs.size}px, not the --size {size} asked for; read them at that size")
    return pairs
