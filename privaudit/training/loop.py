"""The one GAN training loop, with a pluggable step.

Regular pix2pix training, AKD/DMP distillation (``training.pix2pix.PlainStep``: one permuted
batch feeds the discriminator's and the generator's update) and DP-SGD
(``defenses.dpsgd.DPStep``: independent Poisson draws, clipped and noised updates) all run
``train_loop``. The loop owns what they share: epochs and steps, running loss means, the
divergence check, the learning-rate schedule, the checkpoint and resume state written after every
epoch, the removal of that state when the run finishes (unless ``keep_state``), and ``resume``.

Per epoch it writes the model checkpoint (``save_model``) and the resume state ``<out>.state``,
both atomically; on the CPU a resumed run reaches the same weights as an uninterrupted one. The
checkpoint records whether training finished (``training_record``).

A run that diverges (a non-finite or impossible loss, non-finite or exploding weights) stops with
a ``TrainingError`` before it saves that epoch, so the checkpoint on disk stays the last good one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

import torch
from torch import nn

from privaudit import distributed
from privaudit.errors import InputError, TrainingError
from privaudit.training.resume import discard_state, load_state, restore, save_state, state_path

if TYPE_CHECKING:
    from privaudit.training.config import TrainConfig

OnStep = Callable[[int, int, int, dict[str, float]], None]
"""``on_step(epoch, step, steps_per_epoch, mean_losses)``: progress after every step (0-based)."""


@dataclass
class EpochStats:
    epoch: int
    losses: dict[str, float]


class Step(Protocol):
    """One training step of a GAN, plugged into ``train_loop``.

    ``generator``/``discriminator`` are the plain networks (saved and checked for divergence; a
    step may name another network to save as ``saved_generator``, e.g. a moving average);
    ``optimizers`` their (G, D) optimizers, whose state is saved and whose learning rate follows
    the schedule. ``batches(epoch)`` draws an epoch's batches; calling the step with one runs the
    discriminator's and then the generator's update and returns the losses to average and the
    generator's total loss (None when there was no generator update to check).
    """

    generator: nn.Module
    discriminator: nn.Module | None
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]
    steps_per_epoch: int
    what: str  # names the run in messages: "training", "DP-SGD training"
    state_format: str

    def batches(self, epoch: int) -> Iterable[Any]: ...

    def __call__(self, batch: Any) -> tuple[dict[str, float], float | None]: ...

    def epoch_extras(self) -> dict[str, float]:
        """Values recorded with an epoch's mean losses (DP-SGD: ε spent so far)."""
        ...

    def extra_state(self) -> dict[str, Any]:
        """What the resume state needs beyond networks, optimizers and RNG."""
        ...

    def load_extra_state(self, state: dict[str, Any]) -> None: ...


def train_loop(
    step: Step,
    cfg: TrainConfig,
    *,
    out: Path,
    save_model: Callable[[Path, nn.Module, int], None],
    fingerprint: dict[str, Any],
    resume_ignore: tuple[str, ...] = ("epochs", "decay_epochs"),
    resume: bool = False,
    keep_state: bool = False,
    on_step: OnStep | None = None,
) -> list[EpochStats]:
    """Run ``step`` for ``cfg.epochs`` epochs; return the per-epoch mean losses.

    ``save_model(out, generator, epoch)`` writes the checkpoint after every epoch (epoch 1-based).
    ``fingerprint`` (the data and settings; the keys in ``resume_ignore`` aside) must match the
    saved state on ``resume``. Raises ``TrainingError`` when the run diverges (``divergence``,
    ``weight_problem``), before that epoch is saved.
    """
    G, D = step.generator, step.discriminator
    opt_g, opt_d = step.optimizers
    sched = [torch.optim.lr_scheduler.LambdaLR(o, lambda e: cfg.lr_factor(e)) for o in (opt_g, opt_d) if o is not None]
    out = Path(out)
    state_file = state_path(out)
    history: list[EpochStats] = []
    start_epoch = 0
    if resume:
        kind = step.what.removesuffix("training").strip()  # "DP-SGD", or "" for a plain run
        state = load_state(state_file, fingerprint, fmt=step.state_format, ignore=resume_ignore, what=f" {kind}" if kind else "")
        start_epoch = restore(state, G, D, opt_g, opt_d, sched)
        step.load_extra_state(state)
        history = [EpochStats(h["epoch"], h["losses"]) for h in state.get("history", [])]
        if start_epoch >= cfg.epochs:
            raise InputError(f"--resume: {state_file} already holds {start_epoch} epochs; pass --epochs greater than {start_epoch} to train on")

    for epoch in range(start_epoch, cfg.epochs):
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for i, batch in enumerate(step.batches(epoch)):
            losses, g_total = step(batch)
            reason = divergence(losses if g_total is None else {**losses, "G": g_total})
            if reason:
                raise diverged(epoch + 1, reason, lr=cfg.lr, out=out, what=step.what)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            if on_step:
                on_step(epoch, i, step.steps_per_epoch, {k: sums[k] / counts[k] for k in sums})
        for s in sched:
            s.step()
        reason = weight_problem(G, D)
        if reason:
            raise diverged(epoch + 1, reason, lr=cfg.lr, out=out, what=step.what)
        history.append(EpochStats(epoch + 1, {**{k: sums[k] / counts[k] for k in sums}, **step.epoch_extras()}))
        if distributed.is_main():  # under torchrun rank 0 alone writes; the others wait for it
            G.eval()
            saved = getattr(step, "saved_generator", None)
            save_model(out, G if saved is None else saved, epoch + 1)
            G.train()
            if keep_state or epoch + 1 < cfg.epochs:
                save_state(state_file, epoch + 1, fingerprint, G, D, opt_g, opt_d, [{"epoch": h.epoch, "losses": h.losses} for h in history],
                           fmt=step.state_format, extra=step.extra_state())
        distributed.barrier()
    G.eval()
    if not keep_state and distributed.is_main():
        discard_state(out)
    return history


def training_record(epochs_done: int, epochs_total: int) -> dict[str, Any]:
    """What a checkpoint says about its training: ``complete`` False for the checkpoint of an
    interrupted (or diverged) run, written after epoch ``epochs_done`` of ``epochs_total``."""
    return {"complete": epochs_done >= epochs_total, "epochs_done": int(epochs_done), "epochs_total": int(epochs_total)}


# ----------------------------------------------------------------------------------------------
# divergence: bounds that no healthy run comes near

# The L1 between images in [-1, 1] cannot exceed 2.
MAX_L1 = 2.0
# Binary cross-entropy of the PatchGAN's logits: healthy pix2pix runs stay near 0.3-3 (about 100
# even at --lr 1); 1000 means logits off by a thousand on average, a discriminator that blew up.
MAX_GAN_LOSS = 1e3
LOSS_BOUNDS = {"G_L1": MAX_L1, "G_GAN": MAX_GAN_LOSS, "G_FM": MAX_GAN_LOSS, "D_real": MAX_GAN_LOSS, "D_fake": MAX_GAN_LOSS}
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
