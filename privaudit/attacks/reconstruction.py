"""The black-box reconstruction-loss membership inference attack (AKD paper, Sec. III).

For each pair (x, y): ``L_rec = ||G(z, x) − y||_1`` (mean over pixels, images in [-1, 1]); the
attacker says "member" when the loss is below a threshold, so the score is ``-L_rec``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from privaudit.attacks.epsilon import EpsilonBound, epsilon_lower_bound
from privaudit.attacks.metrics import AttackMetrics, attack_metrics, bootstrap_tpr_ci
from privaudit.data.images import ImageSet, to_float, to_uint8
from privaudit.data.stream import StreamedSet
from privaudit.defaults import ATTACK_BATCH_SIZE, BOOTSTRAP, FPRS, LOSS, SAMPLES, SEED
from privaudit.errors import CheckpointError, InputError, check_seed
from privaudit.limits import MAX_BOOTSTRAP, MAX_SAMPLES, check_at_most
from privaudit.models.inference import check_image_size, iter_set_outputs
from privaudit.models.loaded import LoadedModel
from privaudit.report.schema import ROC_POINTS_LIMIT

LOSSES = ("l1", "l2")


@dataclass(frozen=True)
class AttackConfig:
    """How the attack queries the generator."""

    loss: str = LOSS
    stochastic: bool = False
    samples: int = SAMPLES
    batch_size: int = ATTACK_BATCH_SIZE
    seed: int = SEED
    n_bootstrap: int = BOOTSTRAP
    fprs: tuple[float, ...] = FPRS

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise InputError(f"invalid --loss {self.loss!r}; use l1 or l2")
        if self.samples < 1:
            raise InputError(f"--samples must be at least 1, not {self.samples}")
        check_at_most(self.samples, MAX_SAMPLES, "--samples", "each draw is a full pass over both sets")
        if self.samples > 1 and not self.stochastic:
            raise InputError("--samples K averages K dropout draws and needs --stochastic; add --stochastic or drop --samples")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.n_bootstrap < 0:
            raise InputError(f"--bootstrap must be 0 or more, not {self.n_bootstrap}")
        check_at_most(self.n_bootstrap, MAX_BOOTSTRAP, "--bootstrap", "the 95% interval is stable long before that")
        check_seed(self.seed)


@dataclass
class AttackResult:
    metrics: AttackMetrics
    member_losses: np.ndarray
    nonmember_losses: np.ndarray
    mode: str
    config: AttackConfig
    member_names: list[str] = field(default_factory=list)
    nonmember_names: list[str] = field(default_factory=list)
    member_outputs: torch.Tensor | None = None
    nonmember_outputs: torch.Tensor | None = None
    tpr_ci95: dict[str, list[float] | None] | None = None
    bound: EpsilonBound | None = None
    # With reference models: every attack's (member scores, non-member scores), by attack name.
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def to_dict(self, name: str = "reconstruction-loss") -> dict[str, Any]:
        """The report's ``attack`` section (``name``: ``loss`` in the ``attacks`` table of report/2)."""
        m = self.metrics
        extra: dict[str, Any] = {}
        if self.tpr_ci95 is not None:
            extra["tpr_at_fpr_ci95"] = self.tpr_ci95
        if self.bound is not None:
            d = self.bound.to_dict()
            extra.update({"epsilon_lb": d.pop("epsilon_lb"), "delta": d.pop("delta"), "epsilon_bound": d})
        return {
            "name": name,
            "loss": self.config.loss,
            "generator_mode": self.mode,
            "samples": self.config.samples,
            **m.to_dict(),
            "threshold": -m.threshold,  # as a loss value: member if loss <= threshold
            "member_loss": _stats(self.member_losses),
            "nonmember_loss": _stats(self.nonmember_losses),
            "n_bootstrap": self.config.n_bootstrap,
            "roc": self.roc_points(),
            **extra,
        }

    def roc_points(self, limit: int = ROC_POINTS_LIMIT) -> dict[str, list[float]]:
        """The ROC curve thinned to at most ``limit`` points (for overlays in ``privaudit report``)."""
        fpr, tpr = self.metrics.fpr, self.metrics.tpr
        if len(fpr) > limit:
            idx = np.unique(np.linspace(0, len(fpr) - 1, limit).round().astype(int))
            fpr, tpr = fpr[idx], tpr[idx]
        return {"fpr": [round(float(v), 6) for v in fpr], "tpr": [round(float(v), 6) for v in tpr]}


def _stats(x: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(x)), "std": float(np.std(x))}


def reconstruction_losses(
    model: LoadedModel,
    images: ImageSet | StreamedSet,
    config: AttackConfig,
    *,
    on_batch: Callable[[int], None] | None = None,
    outputs: torch.Tensor | None = None,
    on_outputs: Callable[[slice, torch.Tensor, torch.Tensor], None] | None = None,
) -> np.ndarray:
    """Per-sample reconstruction loss, shape (N,). With ``stochastic`` the dropout layers stay on
    and the loss is averaged over ``samples`` draws; every draw is seeded by ``config.seed``.
    ``images``: in memory, or streamed from disk (the same batches, the same losses; each draw is
    then a decoding pass).

    ``outputs``: an optional uint8 tensor shaped like the targets, filled with the first draw's
    images, so utility metrics need no second pass through the generator. ``on_outputs(slice,
    uint8 outputs, uint8 targets)``: the same, batch by batch (what a streamed set uses).
    """
    if not images.has_targets:
        raise InputError(f"{images.path} holds inputs only; the attack needs (input, target) pairs")
    check_image_size(model, images.size)
    model.set_mode(stochastic=config.stochastic)
    losses = torch.zeros(len(images), dtype=torch.float64)
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []), torch.inference_mode():
        torch.manual_seed(config.seed)
        model.reseed(config.seed)
        for k in range(config.samples):
            for sl, out, y_u8 in iter_set_outputs(model, images, batch_size=config.batch_size, on_batch=on_batch):
                y = to_float(model.runtime.batch(y_u8))  # type: ignore[arg-type]
                if out.shape != y.shape:
                    raise CheckpointError(f"{model.path} outputs {tuple(out.shape[1:])} but the targets are {tuple(y.shape[1:])}; check the model's channels and --direction")
                diff = out - y  # float32: iter_outputs casts a bf16 forward pass's outputs
                per = diff.abs() if config.loss == "l1" else diff.square()
                losses[sl] += per.flatten(1).mean(1).double().cpu()
                if k == 0 and (outputs is not None or on_outputs is not None):
                    fake = to_uint8(out.float()).cpu()
                    if outputs is not None:
                        outputs[sl] = fake
                    if on_outputs is not None:
                        on_outputs(sl, fake, y_u8)  # type: ignore[arg-type]
    model.set_mode(stochastic=False)
    return (losses / config.samples).numpy()


def run_attack(
    model: LoadedModel,
    members: ImageSet | StreamedSet,
    nonmembers: ImageSet | StreamedSet,
    config: AttackConfig,
    *,
    on_batch: Callable[[int], None] | None = None,
    keep_outputs: bool = False,
    delta: float | None = None,
    on_outputs: tuple[Callable[[slice, torch.Tensor, torch.Tensor], None], Callable[[slice, torch.Tensor, torch.Tensor], None]] | None = None,
) -> AttackResult:
    """Score members (label 1) and non-members (label 0) by ``-loss`` and compute the ROC metrics.

    ``keep_outputs``: also return the generated images (uint8) in ``result.member_outputs`` and
    ``result.nonmember_outputs``, for the utility metrics (sets in memory only). ``on_outputs``:
    (for members, for non-members) ``reconstruction_losses``' batch callbacks instead, for streamed
    sets. ``delta``: the δ of the empirical ε lower bound (default: the model's recorded DP δ, else 0;
    see ``dp_delta``).
    """
    config.validate()
    if members.size != nonmembers.size:
        raise InputError(f"members are {members.size}px and non-members {nonmembers.size}px; pass --size so both are resized alike")
    mode = model.set_mode(stochastic=config.stochastic)
    out_m = torch.empty_like(members.targets) if keep_outputs and isinstance(members, ImageSet) and members.targets is not None else None
    out_n = torch.empty_like(nonmembers.targets) if keep_outputs and isinstance(nonmembers, ImageSet) and nonmembers.targets is not None else None
    cb_m, cb_n = on_outputs if on_outputs is not None else (None, None)
    lm = reconstruction_losses(model, members, config, on_batch=on_batch, outputs=out_m, on_outputs=cb_m)
    ln = reconstruction_losses(model, nonmembers, config, on_batch=on_batch, outputs=out_n, on_outputs=cb_n)
    metrics = attack_metrics(-lm, -ln, fprs=config.fprs, n_bootstrap=config.n_bootstrap, seed=config.seed)
    tci = bootstrap_tpr_ci(-lm, -ln, fprs=config.fprs, n_bootstrap=config.n_bootstrap, seed=config.seed)
    bound = epsilon_lower_bound(-lm, -ln, delta=dp_delta(model.defense) if delta is None else delta)
    return AttackResult(metrics, lm, ln, mode, config, list(members.names), list(nonmembers.names), out_m, out_n, tci, bound)


def dp_delta(defense: dict[str, Any] | None) -> float:
    """The δ of the ε lower bound: the model's recorded DP δ (a DP-SGD model), else 0."""
    d = (defense or {}).get("delta")
    if isinstance(d, (int, float)) and not isinstance(d, bool) and 0.0 <= d < 1.0:
        return float(d)
    return 0.0
