"""The pix2pix training loop, shared by regular training and the distillation defenses.

Regular training fits G to the private targets y. AKD is the same game with y := G_t(x), the
teacher's output on an unlabelled proxy input (Eq. 4 and 5 of the AKD paper); DMP drops the
discriminator and keeps only the λ·L1 term. One loop serves all three.

Per epoch the loop writes the model checkpoint and a resume state (``<out>.state``), both
atomically; ``resume=True`` continues from the state and, on the CPU, reaches the same weights as
an uninterrupted run. The checkpoint records whether training finished (``training_record``),
and a finished run deletes its state unless ``keep_state`` (it is several times the model's size).

A run that diverges (a non-finite or impossible loss, non-finite weights) stops with a
``TrainingError`` before it saves that epoch, so the checkpoint on disk stays the last good one.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from privaudit.data.images import to_float
from privaudit.device import resolve_device
from privaudit.errors import CheckpointError, InputError, TrainingError, check_seed
from privaudit.io import atomic_torch_save, remove_stale_temporaries
from privaudit.models.checkpoint import safe_torch_load
from privaudit.models.networks import NLayerDiscriminator, UnetGenerator, init_weights


@dataclass(frozen=True)
class TrainConfig:
    """pix2pix defaults: Adam 2e-4, β=(0.5, 0.999), λ=100, batch size 1, linear decay over the
    second half of the epochs, jitter (resize to 286/256 of the size, random crop) and flips."""

    epochs: int = 200
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_l1: float = 100.0
    decay_epochs: int | None = None
    augment: bool = True
    adversarial: bool = True
    ndf: int = 64
    seed: int = 0
    device: str = "auto"
    amp: bool = True

    def validate(self) -> None:
        if self.epochs < 1:
            raise InputError(f"--epochs must be at least 1, not {self.epochs}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, not {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"--lr must be a finite number > 0, not {self.lr}")
        if not self.lambda_l1 >= 0 or not math.isfinite(self.lambda_l1):
            raise InputError(f"--lambda-l1 must be a finite number >= 0, not {self.lambda_l1}")
        if self.ndf < 1:
            raise InputError(f"--ndf must be at least 1, not {self.ndf}")
        check_seed(self.seed)
        if self.decay_epochs is not None and not 0 <= self.decay_epochs <= self.epochs:
            raise InputError(f"--decay-epochs must be between 0 and --epochs ({self.epochs}), not {self.decay_epochs}")

    @property
    def n_decay(self) -> int:
        return self.epochs // 2 if self.decay_epochs is None else self.decay_epochs

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["decay_epochs"] = self.n_decay
        return d


def lr_factor(epoch: int, cfg: TrainConfig) -> float:
    """pix2pix 'linear' policy: constant, then linear decay over the last ``n_decay`` epochs."""
    constant = cfg.epochs - cfg.n_decay
    return 1.0 - max(0, epoch - constant + 1) / float(cfg.n_decay + 1) if cfg.n_decay else 1.0


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


@dataclass
class EpochStats:
    epoch: int
    losses: dict[str, float]


def _state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state")


def state_path(out: Path) -> Path:
    """Where the resume state of a run writing ``out`` lives: ``<out>.state``."""
    return _state_path(Path(out))


def discard_state(out: Path) -> None:
    """Delete the resume state of a finished run (and temporaries a killed writer left beside it).
    A failure is not worth failing a finished run for: the state is only a cache."""
    path = state_path(out)
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
    remove_stale_temporaries(path)


def training_record(epochs_done: int, epochs_total: int) -> dict[str, Any]:
    """What a checkpoint says about its training: ``complete`` False for the checkpoint of an
    interrupted (or diverged) run, written after epoch ``epochs_done`` of ``epochs_total``."""
    return {"complete": epochs_done >= epochs_total, "epochs_done": int(epochs_done), "epochs_total": int(epochs_total)}


def missing_state_message(path: Path, what: str = "") -> str:
    return (f"--resume: no saved state {path} from an earlier{what} run (a finished run deletes it unless trained with --keep-state); "
            "drop --resume to start afresh")


# ----------------------------------------------------------------------------------------------
# divergence: bounds that no healthy run comes near

# The L1 between images in [-1, 1] cannot exceed 2.
MAX_L1 = 2.0
# Binary cross-entropy of the PatchGAN's logits: healthy pix2pix runs stay near 0.3-3 (about 100
# even at --lr 1); 1000 means logits off by a thousand on average, a discriminator that blew up.
MAX_GAN_LOSS = 1e3
LOSS_BOUNDS = {"G_L1": MAX_L1, "G_GAN": MAX_GAN_LOSS, "D_real": MAX_GAN_LOSS, "D_fake": MAX_GAN_LOSS}
# Weights start near N(0, 0.02) (BatchNorm scales near 1) and Adam moves each by about --lr per
# step: at pix2pix's 2e-4 reaching 1e5 would take 5e8 steps, while --lr 1e6 gets there in one.
MAX_WEIGHT = 1e5


def divergence(losses: dict[str, float]) -> str | None:
    """Why these losses of one step show a diverged run, or None: a non-finite value, or a value
    above its bound in ``LOSS_BOUNDS``."""
    for name, value in losses.items():
        if not math.isfinite(value):
            return f"{name} loss is {value}"
        bound = LOSS_BOUNDS.get(name)
        if bound is not None and value > bound * (1 + 1e-6):
            return f"{name} loss {value:.3g} is above {bound:g}, which healthy training never reaches"
    return None


def weight_problem(*nets: nn.Module | None) -> str | None:
    """Why the networks' weights show a diverged run, or None: a parameter or buffer holding NaN
    or inf, or a parameter above ``MAX_WEIGHT`` in magnitude. (The losses of a step are computed
    before its update, so a single huge step shows in the weights first.)"""
    for net in nets:
        if net is None:
            continue
        params = {name for name, _ in net.named_parameters()}
        for name, t in net.state_dict().items():
            if not t.is_floating_point():
                continue
            if not bool(torch.isfinite(t).all()):
                return f"non-finite weights in {name}"
            if name in params and t.numel() and (big := float(t.abs().max())) > MAX_WEIGHT:
                return f"a weight of {big:.3g} in {name}, above {MAX_WEIGHT:g}, which healthy training never reaches"
    return None


def diverged(epoch: int, reason: str, *, lr: float, out: Path, what: str = "training") -> TrainingError:
    """The one-line error of a run that diverged in ``epoch`` (1-based); that epoch was not saved."""
    kept = f"{out} keeps the model of epoch {epoch - 1} (unfinished)" if epoch > 1 else "no model was written"
    return TrainingError(f"{what} diverged at epoch {epoch} ({reason}); lower --lr (it was {lr:g}; pix2pix uses 2e-4) and train again; {kept}")


def fit(
    generator: UnetGenerator,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    cfg: TrainConfig,
    *,
    out: Path,
    save_model: Callable[[Path, UnetGenerator, int], None],
    resume: bool = False,
    discriminator: nn.Module | None = None,
    fingerprint: dict[str, Any] | None = None,
    on_step: Callable[[int, int, int, dict[str, float]], None] | None = None,
    keep_state: bool = False,
) -> list[EpochStats]:
    """Train ``generator`` on (inputs, targets) with the pix2pix objective.

    inputs: uint8 (N, C_in, H, W); targets: float (N, C_out, H, W) in [-1, 1] (real targets for
    regular training, teacher outputs for distillation). ``cfg.adversarial`` False gives DMP
    (L1 only). ``on_step(epoch, step, steps_per_epoch, mean_losses)`` reports progress.
    ``save_model(path, G, epoch)`` writes the model checkpoint after every epoch.
    ``fingerprint`` (the data and settings) must match on ``resume``. The resume state is deleted
    when the run finishes, unless ``keep_state``. Raises ``TrainingError`` when the run diverges
    (see ``divergence``), before that epoch is saved.
    """
    cfg.validate()
    device = resolve_device(cfg.device)
    n = int(inputs.shape[0])
    if n == 0:
        raise InputError("no training images")
    torch.manual_seed(cfg.seed)
    D = None
    if cfg.adversarial:
        D = discriminator or NLayerDiscriminator(inputs.shape[1] + targets.shape[1], ndf=cfg.ndf, norm=generator.arch.norm)
        init_weights(D)
        D.to(device).train()
    generator.to(device).train()
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999)) if D is not None else None
    sched = [torch.optim.lr_scheduler.LambdaLR(o, lambda e: lr_factor(e, cfg)) for o in (opt_g, opt_d) if o is not None]
    gan_loss = GANLoss()
    history: list[EpochStats] = []
    start_epoch = 0
    # What must match on --resume: everything but the length of the run and the device.
    fp = {"config": {k: v for k, v in asdict(cfg).items() if k not in ("device", "epochs", "decay_epochs")}, **(fingerprint or {})}
    state_file = _state_path(out)
    if resume:
        start_epoch, history = _load_state(state_file, fp, generator, D, opt_g, opt_d, sched, device)
        if start_epoch >= cfg.epochs:
            raise InputError(f"--resume: {state_file} already holds {start_epoch} epochs; pass --epochs greater than {start_epoch} to train on")
    use_amp = cfg.amp and device.type == "cuda"
    targets = targets.float()
    steps_per_epoch = math.ceil(n / cfg.batch_size)

    for epoch in range(start_epoch, cfg.epochs):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=gen)
        sums: dict[str, float] = {}
        for step, b in enumerate(range(0, n, cfg.batch_size)):
            idx = perm[b : b + cfg.batch_size]
            x = to_float(inputs[idx])
            y = targets[idx]
            if cfg.augment:
                x, y = jitter(x, y, gen)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                fake = generator(x)
            losses: dict[str, float] = {}
            if D is not None and opt_d is not None:
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss_d_fake = gan_loss(D(torch.cat([x, fake.detach()], 1)), False)
                    loss_d_real = gan_loss(D(torch.cat([x, y], 1)), True)
                    loss_d = 0.5 * (loss_d_fake + loss_d_real)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                losses["D_real"], losses["D_fake"] = loss_d_real.item(), loss_d_fake.item()
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss_l1 = F.l1_loss(fake.float(), y)
                loss_g = cfg.lambda_l1 * loss_l1
                if D is not None:
                    for p in D.parameters():
                        p.requires_grad_(False)
                    loss_g_gan = gan_loss(D(torch.cat([x, fake], 1)), True)
                    loss_g = loss_g + loss_g_gan
                    losses["G_GAN"] = loss_g_gan.item()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            if D is not None:
                for p in D.parameters():
                    p.requires_grad_(True)
            losses["G_L1"] = loss_l1.item()
            reason = divergence({**losses, "G": loss_g.item()})
            if reason:
                raise diverged(epoch + 1, reason, lr=cfg.lr, out=out)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            if on_step:
                on_step(epoch, step, steps_per_epoch, {k: v / (step + 1) for k, v in sums.items()})
        for s in sched:
            s.step()
        reason = weight_problem(generator, D)
        if reason:
            raise diverged(epoch + 1, reason, lr=cfg.lr, out=out)
        stats = EpochStats(epoch + 1, {k: v / steps_per_epoch for k, v in sums.items()})
        history.append(stats)
        generator.eval()
        save_model(out, generator, epoch + 1)
        generator.train()
        if keep_state or epoch + 1 < cfg.epochs:
            _save_state(state_file, epoch + 1, fp, generator, D, opt_g, opt_d, history)
    generator.eval()
    if not keep_state:
        discard_state(out)
    return history


def train_state(epoch: int, fp: dict[str, Any], G: nn.Module, D: nn.Module | None, opt_g, opt_d, history, *, fmt: str = "privaudit.train-state/1") -> dict[str, Any]:
    """What ``--resume`` needs: networks, optimizers, RNG states, history, and the run's fingerprint."""
    return {
        "format": fmt,
        "epoch": epoch,
        "fingerprint": fp,
        "generator": G.state_dict(),
        "discriminator": D.state_dict() if D is not None else None,
        "opt_g": opt_g.state_dict(),
        "opt_d": opt_d.state_dict() if opt_d is not None else None,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "history": [{"epoch": h.epoch, "losses": h.losses} for h in history],
    }


def _save_state(path: Path, epoch: int, fp: dict[str, Any], G: nn.Module, D: nn.Module | None, opt_g, opt_d, history) -> None:
    atomic_torch_save(path, train_state(epoch, fp, G, D, opt_g, opt_d, history))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k in ("config", "train"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume_fingerprint(path: Path, old: dict[str, Any], new: dict[str, Any], *, ignore: tuple[str, ...] = ("epochs", "decay_epochs")) -> None:
    """Refuse ``--resume`` when the saved run used other settings or data (run length aside)."""
    a, b = _flatten(old), _flatten(new)
    diff = sorted(k.rsplit(".", 1)[-1] for k in set(a) | set(b) if k.rsplit(".", 1)[-1] not in ignore and a.get(k) != b.get(k))
    if diff:
        raise InputError(f"--resume: the run in {path} used different settings or data ({', '.join(diff)}); use the same options or drop --resume")


def restore_networks(state: dict[str, Any], G: nn.Module, D: nn.Module | None, opt_g, opt_d) -> None:
    """Load the generator, discriminator and their optimizers from a resume state."""
    G.load_state_dict(state["generator"])
    if D is not None:
        D.load_state_dict(state["discriminator"])
    opt_g.load_state_dict(state["opt_g"])
    if opt_d is not None:
        opt_d.load_state_dict(state["opt_d"])


def restore_schedules(sched: list[torch.optim.lr_scheduler.LRScheduler], epoch: int) -> None:
    """Set learning-rate schedules to where ``epoch`` finished epochs left them."""
    for s in sched:
        s.last_epoch = epoch - 1
        with warnings.catch_warnings():
            # Restoring the schedule steps it before any optimizer step; torch warns, needlessly here.
            warnings.simplefilter("ignore", UserWarning)
            s.step()


def _load_state(path: Path, fp: dict[str, Any], G, D, opt_g, opt_d, sched, device) -> tuple[int, list[EpochStats]]:
    if not path.exists():
        raise InputError(missing_state_message(path))
    state = safe_torch_load(path, what="training state")
    if not isinstance(state, dict) or state.get("format") != "privaudit.train-state/1":
        raise CheckpointError(f"{path} is not a privaudit training state; drop --resume to start afresh")
    check_resume_fingerprint(path, state.get("fingerprint", {}), fp)
    restore_networks(state, G, D, opt_g, opt_d)
    epoch = int(state["epoch"])
    restore_schedules(sched, epoch)
    torch.set_rng_state(state["rng_cpu"])
    if torch.cuda.is_available() and state.get("rng_cuda"):
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    history = [EpochStats(h["epoch"], h["losses"]) for h in state.get("history", [])]
    return epoch, history
