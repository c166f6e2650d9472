"""DP-SGD baseline: train a pix2pix generator from scratch on the private pairs with Opacus.

Both networks are private. The discriminator reads the private targets y (its "real" term) and
the generator reads them too (its λ·L1 term), so both are wrapped by ONE
``opacus.PrivacyEngine``: two ``make_private`` calls, each with per-sample clipping to
``max_grad_norm`` and Gaussian noise of std ``noise_multiplier · max_grad_norm`` added by Opacus's
``DPOptimizer``, and both reporting their steps to the engine's single accountant.

Sampling and accounting
-----------------------
Each step of each network draws its OWN Poisson sample (Opacus's ``DPDataLoader``, rate
q = 1 / ceil(N / batch_size)): the discriminator step and the generator step use two independent
draws. Every step is then one sampled Gaussian mechanism with the same (σ, q), and the T steps of
D plus the T steps of G compose adaptively into one mechanism run for 2T steps; the accountant's
history reads ``[(σ, q, 2T)]`` and ``engine.get_epsilon(δ)`` is the ε spent. (Reusing one drawn
batch for both steps would NOT be 2T independent steps: it is T steps of a Gaussian with σ/√2,
whose ε is markedly larger, because amplification by subsampling works per draw.)

``target_epsilon`` solves σ for that composed mechanism with
``opacus.accountants.utils.get_noise_multiplier(steps=2T)``.

Opacus pitfalls handled here
----------------------------
* BatchNorm mixes samples in a batch; the generator and discriminator use ``GroupNorm`` (norm
  "group"), and a request for another norm is replaced and recorded.
* Opacus's per-sample gradient hooks are full backward hooks, and PyTorch forbids modifying a
  hooked layer's output in place: the pix2pix ``ReLU(True)``/``LeakyReLU(0.2, True)`` are turned
  out-of-place. The U-Net relies on one of them: a block's in-place ``LeakyReLU`` also rewrites
  the skip connection, so the skip carries ``LeakyReLU(x)``. ``_OutOfPlaceSkipBlock`` computes
  exactly that function out of place, so the saved weights behave identically when loaded into the
  ordinary ``UnetGenerator``.
* The discriminator is frozen (``requires_grad`` False, hooks off) during the generator step, so
  its hooks neither fire without activations nor mix G's batch into D's per-sample gradients.
* Poisson batches can be empty. Such a step still happens (noise only, counted by the
  accountant): skipping it would reveal that the batch was empty.

The checkpoint holds plain ``UnetGenerator`` keys (the module inside Opacus's wrapper) and
``defense = {method: dpsgd, noise_multiplier, max_grad_norm, epsilon, delta, ...}``; a resume state
``<out>.state`` keeps the accountant's history so ε stays right after ``resume=True``.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from privaudit.data.images import ImageSet, check_direction, to_float
from privaudit.device import resolve_device
from privaudit.errors import CheckpointError, InputError
from privaudit.io import atomic_torch_save
from privaudit.models.arch import UnetArch, check_size, private_arch
from privaudit.models.checkpoint import safe_torch_load, save_checkpoint
from privaudit.models.networks import NLayerDiscriminator, UnetGenerator, UnetSkipConnectionBlock, init_weights
from privaudit.training import (EpochStats, GANLoss, TrainConfig, check_resume_fingerprint, discard_state, divergence, diverged, jitter, lr_factor,
                                missing_state_message, weight_problem, restore_networks, restore_schedules, train_state, training_record)

# The discriminator's inputs need no gradient, so PyTorch notes that Opacus's full backward hooks
# fire on outputs only; that is expected here and says nothing a user can act on.
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with respect to module outputs")

DEFAULT_DP_BATCH_SIZE = 8
ACCOUNTANTS = ("rdp", "prv")
STATE_FORMAT = "privaudit.dpsgd-state/1"


# ---------------------------------------------------------------------------------------------
# configuration and result


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD settings on top of the pix2pix ``TrainConfig``.

    Give exactly one of ``noise_multiplier`` (σ; the default 1.0) and ``target_epsilon`` (σ is then
    solved for; pass ``noise_multiplier=None`` with it). ``delta`` defaults to 1/N for N private
    pairs. ``train.batch_size`` is the *expected* Poisson batch size and must be at least 2.
    """

    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=DEFAULT_DP_BATCH_SIZE))
    noise_multiplier: float | None = 1.0
    max_grad_norm: float = 1.0
    target_epsilon: float | None = None
    delta: float | None = None
    accountant: str = "rdp"

    def validate(self) -> None:
        """Raise ``InputError`` with one actionable line for an invalid setting."""
        self.train.validate()
        if self.train.batch_size < 2:
            raise InputError(
                f"DP-SGD needs --batch-size of at least 2 (the expected Poisson batch; {DEFAULT_DP_BATCH_SIZE} or more is typical), "
                f"not {self.train.batch_size}"
            )
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            if self.noise_multiplier is None:
                raise InputError("DP-SGD needs --noise-multiplier or --target-epsilon; give one of them")
            raise InputError("give either --noise-multiplier or --target-epsilon, not both (with --target-epsilon the noise multiplier is solved for)")
        if self.noise_multiplier is not None and not (_finite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise InputError(f"--noise-multiplier must be a finite number >= 0, not {self.noise_multiplier}")
        if self.target_epsilon is not None and not (_finite(self.target_epsilon) and self.target_epsilon > 0):
            raise InputError(f"--target-epsilon must be a finite number > 0, not {self.target_epsilon}")
        if not (_finite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise InputError(f"--max-grad-norm must be a finite number > 0, not {self.max_grad_norm}")
        if self.delta is not None and not (_finite(self.delta) and 0 < self.delta < 1):
            raise InputError(f"--delta must be between 0 and 1 (exclusive; well below 1/N is usual), not {self.delta}")
        if self.accountant not in ACCOUNTANTS:
            raise InputError(f"unknown --accountant {self.accountant!r}; choose one of {', '.join(ACCOUNTANTS)}")

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "train"}
        d["train"] = self.train.to_dict()
        return d


@dataclass
class DPResult:
    """What a DP-SGD run spent.

    ``steps`` is the number of optimizer steps of each network (T); with the adversarial loss the
    accountant composes ``mechanisms`` = 2 of them, i.e. one sampled Gaussian mechanism (σ, q) run
    for 2T steps. ``epsilon`` is ``inf`` when σ = 0 (no guarantee).
    """

    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    accountant: str
    history: list[EpochStats]
    max_grad_norm: float = 1.0
    mechanisms: int = 2
    requested_norm: str = "group"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ---------------------------------------------------------------------------------------------
# making the pix2pix networks fit for Opacus


class _OutOfPlaceSkipBlock(UnetSkipConnectionBlock):
    """A U-Net block that computes what the in-place reference block computes, out of place.

    In the reference, ``model[0]`` is ``LeakyReLU(0.2, inplace=True)`` applied to the block's
    input ``x``, which is then concatenated as the skip connection: the skip therefore carries
    ``LeakyReLU(x)``, not ``x``. Same parameters, same keys, same function.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        h = self.model[0](x)
        out = h
        for layer in itertools.islice(self.model, 1, None):
            out = layer(out)
        return torch.cat([h, out], 1)


def make_opacus_compatible(net: nn.Module) -> nn.Module:
    """Turn every ReLU/LeakyReLU of ``net`` out-of-place (Opacus's backward hooks forbid in-place
    edits of a hooked layer's output) and swap U-Net blocks for ``_OutOfPlaceSkipBlock`` so that the
    computed function is unchanged. Works in place on ``net`` and returns it."""
    for m in net.modules():
        if isinstance(m, UnetSkipConnectionBlock):
            if not m.outermost and not isinstance(m.model[0], nn.LeakyReLU):
                raise CheckpointError("unexpected U-Net block layout (no LeakyReLU first); DP-SGD supports the pix2pix U-Net only")
            m.__class__ = _OutOfPlaceSkipBlock
        if isinstance(m, (nn.ReLU, nn.LeakyReLU)):
            m.inplace = False
    return net


def _check_private(net: nn.Module, what: str) -> None:
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(net, strict=False)
    if errors:
        raise CheckpointError(f"the {what} cannot be trained with DP-SGD: {'; '.join(str(e) for e in errors)[:300]}")


# ---------------------------------------------------------------------------------------------
# sampling and accounting


def poisson_schedule(n: int, batch_size: int) -> tuple[float, int]:
    """(q, steps per epoch) exactly as Opacus derives them from a DataLoader of ``batch_size``:
    q = 1 / len(loader) = 1 / ceil(n / batch_size), and int(1 / q) Poisson draws per epoch."""
    q = 1.0 / math.ceil(n / batch_size)
    return q, int(1 / q)


def solve_noise_multiplier(*, target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    """σ such that ``steps`` sampled Gaussian steps at rate ``sample_rate`` spend at most
    ``target_epsilon`` (within 0.5 %), via Opacus's ``get_noise_multiplier``."""
    from opacus.accountants.utils import get_noise_multiplier

    unattainable = InputError(
        f"ε={target_epsilon:g} is unattainable with δ={delta:g} over {steps} noisy steps at sampling rate {sample_rate:.4g} "
        f"(no noise multiplier up to 1e6 reaches it); raise --target-epsilon or --delta, or lower --epochs"
    )
    floor = epsilon_floor(delta, accountant)
    if floor is not None and target_epsilon <= floor:
        raise unattainable  # Opacus would search up to σ = 1e6 (slowly) and then give up
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(
                get_noise_multiplier(
                    target_epsilon=target_epsilon,
                    target_delta=delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant=accountant,
                    epsilon_tolerance=min(0.01, 0.005 * target_epsilon),
                )
            )
    except ValueError:
        raise unattainable from None


def epsilon_floor(delta: float, accountant: str) -> float | None:
    """The ε that even infinite noise cannot go below under the RDP accountant's conversion at
    ``delta`` (RDP → 0 at every order of Opacus's grid); None for other accountants."""
    if accountant != "rdp":
        return None
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import get_privacy_spent

    orders = RDPAccountant.DEFAULT_ALPHAS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eps, _ = get_privacy_spent(orders=orders, rdp=[0.0] * len(orders), delta=delta)
    return max(0.0, float(eps))


def _epsilon(engine: Any, delta: float) -> float:
    if not engine.accountant.history:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optimal order is the largest alpha": informative only
        eps = float(engine.get_epsilon(delta))
    return eps if not math.isnan(eps) else math.inf


# ---------------------------------------------------------------------------------------------
# training


def train_dpsgd(
    pairs: ImageSet,
    out: Path,
    *,
    direction: str,
    arch: UnetArch,
    cfg: DPConfig,
    resume: bool = False,
    on_step: Callable[[int, int, int, dict[str, float]], None] | None = None,
    provenance: dict[str, Any] | None = None,
    keep_state: bool = False,
) -> DPResult:
    """Train a U-Net generator from scratch on the private ``pairs`` with DP-SGD (Opacus).

    pix2pix objective (conditional PatchGAN + λ·L1; L1 only when ``cfg.train.adversarial`` is
    False), generator and discriminator both private under one ``PrivacyEngine``. The generator
    uses norm "group" whatever ``arch.norm`` asks (recorded as ``requested_norm``). Per epoch it
    writes the checkpoint ``out`` (atomically, plain ``UnetGenerator`` keys, ``defense`` with ε
    spent so far) and the resume state ``<out>.state``; ``resume=True`` continues from the latter,
    which is deleted when the run finishes unless ``keep_state``. A diverged run (``training.divergence``)
    raises ``TrainingError`` before that epoch is saved.
    ``on_step(epoch, step, steps_per_epoch, mean_losses)`` reports progress. Seeded: on the CPU the
    same ``cfg.train.seed`` gives the same weights, because Opacus's ``secure_mode`` is off and its
    Poisson sampling and noise draw from seeded ``torch.Generator``s (right for audits and
    experiments; a release meant to carry a formal guarantee should retrain with secure RNG).

    Raises ``InputError`` for bad settings (before anything is written), including an ε target
    that no noise multiplier can reach.
    """
    from opacus import PrivacyEngine

    cfg.validate()
    check_direction(direction)
    tc = cfg.train
    out = Path(out)
    if pairs.targets is None:
        raise InputError(f"{pairs.path}: DP-SGD trains on (input, target) pairs, but only inputs were loaded; give paired data")
    n = len(pairs)
    if n == 0:
        raise InputError(f"{pairs.path}: no training pairs")
    requested_norm = arch.norm
    arch = private_arch(arch)
    check_size(pairs.size, arch.num_downs, new=True)
    if pairs.inputs.shape[1] != arch.input_nc or pairs.targets.shape[1] != arch.output_nc:
        raise InputError(
            f"the data has {pairs.inputs.shape[1]}→{pairs.targets.shape[1]} channels but the U-Net expects {arch.input_nc}→{arch.output_nc}; "
            "set the channel counts to match"
        )

    device = resolve_device(tc.device)
    use_amp = tc.amp and device.type == "cuda"
    delta = cfg.delta if cfg.delta is not None else 1.0 / n
    q, steps_per_epoch = poisson_schedule(n, tc.batch_size)
    mechanisms = 2 if tc.adversarial else 1
    total_steps = tc.epochs * steps_per_epoch
    if cfg.target_epsilon is not None:
        sigma = solve_noise_multiplier(
            target_epsilon=cfg.target_epsilon, delta=delta, sample_rate=q, steps=mechanisms * total_steps, accountant=cfg.accountant
        )
    else:
        sigma = float(cfg.noise_multiplier)  # type: ignore[arg-type]

    # networks, seeded as pix2pix training is
    torch.manual_seed(tc.seed)
    G = UnetGenerator(arch)
    init_weights(G)
    make_opacus_compatible(G)
    _check_private(G, "generator")
    G.to(device).train()
    D: nn.Module | None = None
    if tc.adversarial:
        D = NLayerDiscriminator(arch.input_nc + arch.output_nc, ndf=tc.ndf, norm="group")
        init_weights(D)
        make_opacus_compatible(D)
        _check_private(D, "discriminator")
        D.to(device).train()
    opt_g_base = torch.optim.Adam(G.parameters(), lr=tc.lr, betas=(tc.beta1, 0.999))
    opt_d_base = torch.optim.Adam(D.parameters(), lr=tc.lr, betas=(tc.beta1, 0.999)) if D is not None else None

    # one engine, one accountant; each network gets its own Poisson loader and noise stream
    dataset = TensorDataset(pairs.inputs, pairs.targets)
    seed_base = tc.seed * 1_000_003
    gen_load_g, gen_load_d = torch.Generator(), torch.Generator()
    noise_g = torch.Generator(device=device).manual_seed(seed_base + 11)
    noise_d = torch.Generator(device=device).manual_seed(seed_base + 13)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=cfg.accountant, secure_mode=False)
    common = dict(noise_multiplier=sigma, max_grad_norm=cfg.max_grad_norm, poisson_sampling=True, loss_reduction="mean")
    G_dp, opt_g, loader_g = engine.make_private(
        module=G, optimizer=opt_g_base, data_loader=DataLoader(dataset, batch_size=tc.batch_size, generator=gen_load_g), noise_generator=noise_g, **common
    )
    D_dp = opt_d = loader_d = None
    if D is not None:
        D_dp, opt_d, loader_d = engine.make_private(
            module=D, optimizer=opt_d_base, data_loader=DataLoader(dataset, batch_size=tc.batch_size, generator=gen_load_d), noise_generator=noise_d, **common
        )
    if len(loader_g) != steps_per_epoch or abs(getattr(loader_g, "sample_rate", q) - q) > 1e-15:
        raise CheckpointError("internal error: Opacus's Poisson loader disagrees with the planned sampling rate; please report it")
    sched = [torch.optim.lr_scheduler.LambdaLR(o, lambda e: lr_factor(e, tc)) for o in (opt_g_base, opt_d_base) if o is not None]
    gan_loss = GANLoss()

    from privaudit.pipeline import data_fingerprint  # lazy: pipeline may import the defenses

    data_sha = data_fingerprint(pairs)
    fp = {
        "config": {k: v for k, v in cfg.to_dict().items()},
        "noise_multiplier": sigma,
        "delta": delta,
        "data": data_sha,
        "arch": arch.to_dict(),
        "direction": direction,
    }
    # as given (decay_epochs None stays None, so a longer --epochs can resume), less the device
    fp["config"]["train"] = {k: v for k, v in asdict(tc).items() if k != "device"}
    state_file = out.with_name(out.name + ".state")
    history: list[EpochStats] = []
    start_epoch = 0
    if resume:
        start_epoch, history = _load_state(state_file, fp, G, D, opt_g_base, opt_d_base, sched, engine, noise_g, noise_d)
        if start_epoch >= tc.epochs:
            raise InputError(f"--resume: {state_file} already holds {start_epoch} epochs; pass --epochs greater than {start_epoch} to train on")

    def defense_record(epochs_done: int, eps: float) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "method": "dpsgd",
            "noise_multiplier": sigma,
            "max_grad_norm": cfg.max_grad_norm,
            "epsilon": eps if math.isfinite(eps) else None,
            "epsilon_infinite": not math.isfinite(eps),  # JSON has no inf; sigma = 0 gives no guarantee
            "delta": delta,
            "accountant": cfg.accountant,
            "sample_rate": q,
            "steps": epochs_done * steps_per_epoch,
            "mechanisms": mechanisms,
            "composed_steps": mechanisms * epochs_done * steps_per_epoch,
            "sampling": "poisson",
            "norm": "group",
            "epochs": epochs_done,
            "batch_size": tc.batch_size,
            "target_epsilon": cfg.target_epsilon,
            "secure_mode": False,
        }
        if requested_norm != "group":
            rec["requested_norm"] = requested_norm
        return rec

    def zero_rows(opt: Any) -> None:
        # An empty Poisson draw: no per-sample gradients, so the step adds noise only (and counts).
        for p in opt.params:
            p.grad_sample = p.new_zeros((0, *p.shape))

    for epoch in range(start_epoch, tc.epochs):
        gen_load_g.manual_seed(seed_base + 2 * epoch + 1)
        gen_load_d.manual_seed(seed_base + 2 * epoch + 2)
        aug = torch.Generator().manual_seed(seed_base + epoch)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        d_batches = iter(loader_d) if loader_d is not None else itertools.repeat(None)
        for step, (batch_g, batch_d) in enumerate(zip(loader_g, d_batches)):
            losses: dict[str, float] = {}
            # --- discriminator step on its own Poisson draw
            if D_dp is not None and opt_d is not None and batch_d is not None:
                opt_d.zero_grad(set_to_none=True)
                if len(batch_d[0]) == 0:
                    zero_rows(opt_d)
                else:
                    x, y = _prepare(batch_d, tc.augment, aug, device)
                    with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                        fake = G_dp(x)
                    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                        # two passes over the same B samples: Opacus sums them per sample
                        loss_d_fake = gan_loss(D_dp(torch.cat([x, fake.to(x.dtype)], 1)), False)
                        loss_d_real = gan_loss(D_dp(torch.cat([x, y], 1)), True)
                        loss_d = 0.5 * (loss_d_fake + loss_d_real)
                    loss_d.backward()
                    losses["D_real"], losses["D_fake"] = loss_d_real.item(), loss_d_fake.item()
                opt_d.step()
            # --- generator step on another Poisson draw
            opt_g.zero_grad(set_to_none=True)
            if len(batch_g[0]) == 0:
                zero_rows(opt_g)
            else:
                x, y = _prepare(batch_g, tc.augment, aug, device)
                frozen = D_dp is not None
                if frozen:
                    _freeze(D_dp, True)
                try:
                    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                        fake = G_dp(x)
                        loss_l1 = F.l1_loss(fake.float(), y)
                        loss_g = tc.lambda_l1 * loss_l1
                        if D_dp is not None:
                            loss_g_gan = gan_loss(D_dp(torch.cat([x, fake.to(x.dtype)], 1)), True)
                            loss_g = loss_g + loss_g_gan
                            losses["G_GAN"] = loss_g_gan.item()
                    loss_g.backward()
                finally:
                    if frozen:
                        _freeze(D_dp, False)
                losses["G_L1"] = loss_l1.item()
                reason = divergence({**losses, "G": loss_g.item()})
                if reason:
                    raise diverged(epoch + 1, reason, lr=tc.lr, out=out, what="DP-SGD training")
            opt_g.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            if on_step:
                on_step(epoch, step, steps_per_epoch, {k: sums[k] / counts[k] for k in sums})
        for s in sched:
            s.step()
        reason = weight_problem(G, D)
        if reason:
            raise diverged(epoch + 1, reason, lr=tc.lr, out=out, what="DP-SGD training")
        eps = _epsilon(engine, delta)
        stats = EpochStats(epoch + 1, {**{k: sums[k] / counts[k] for k in sums}, "epsilon": eps})
        history.append(stats)
        G.eval()
        save_checkpoint(
            out,
            generator=G,
            image_size=pairs.size,
            direction=direction,
            defense=defense_record(epoch + 1, eps),
            provenance={
                "trained_on": {"path": pairs.path, "count": n, "sha256": data_sha},
                "training": cfg.to_dict(),
                **(provenance or {}),
                "epoch": epoch + 1,
            },
            training=training_record(epoch + 1, tc.epochs),
        )
        G.train()
        if keep_state or epoch + 1 < tc.epochs:
            _save_state(state_file, epoch + 1, fp, G, D, opt_g_base, opt_d_base, engine, noise_g, noise_d, history)
    G.eval()
    if not keep_state:
        discard_state(out)
    eps = _epsilon(engine, delta)
    return DPResult(
        epsilon=eps,
        delta=delta,
        noise_multiplier=sigma,
        sample_rate=q,
        steps=tc.epochs * steps_per_epoch,
        accountant=cfg.accountant,
        history=history,
        max_grad_norm=cfg.max_grad_norm,
        mechanisms=mechanisms,
        requested_norm=requested_norm,
    )


def _prepare(batch: list[torch.Tensor], augment: bool, gen: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = to_float(batch[0]), to_float(batch[1])
    if augment:
        x, y = jitter(x, y, gen)
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _freeze(D: Any, frozen: bool) -> None:
    """Freeze D for the generator step: no gradients, and Opacus's hooks off (they would fire on
    the backward pass through D and find no activations of a frozen layer)."""
    for p in D.parameters():
        p.requires_grad_(not frozen)
    if frozen:
        D.disable_hooks()
    else:
        D.enable_hooks()


# ---------------------------------------------------------------------------------------------
# resume state


def _save_state(path: Path, epoch: int, fp: dict[str, Any], G: nn.Module, D: nn.Module | None, opt_g, opt_d, engine, noise_g, noise_d, history) -> None:
    acc = engine.accountant.state_dict()
    state = {
        **train_state(epoch, fp, G, D, opt_g, opt_d, history, fmt=STATE_FORMAT),
        "accountant": {"mechanism": acc.get("mechanism"), "history": [list(h) for h in acc.get("history", [])]},
        "noise_g": noise_g.get_state(),
        "noise_d": noise_d.get_state(),
    }
    atomic_torch_save(path, state)


def _load_state(path: Path, fp: dict[str, Any], G, D, opt_g, opt_d, sched, engine, noise_g, noise_d) -> tuple[int, list[EpochStats]]:
    if not path.exists():
        raise InputError(missing_state_message(path, " DP-SGD"))
    state = safe_torch_load(path, what="training state")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a privaudit DP-SGD training state; drop --resume to start afresh")
    check_resume_fingerprint(path, state.get("fingerprint", {}), fp, ignore=("epochs",))
    restore_networks(state, G, D, opt_g, opt_d)
    acc = state["accountant"]
    engine.accountant.load_state_dict({"mechanism": acc["mechanism"], "history": [tuple(h) for h in acc["history"]]})
    noise_g.set_state(state["noise_g"])
    noise_d.set_state(state["noise_d"])
    epoch = int(state["epoch"])
    restore_schedules(sched, epoch)
    torch.set_rng_state(state["rng_cpu"])
    if torch.cuda.is_available() and state.get("rng_cuda"):
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    history = [EpochStats(h["epoch"], h["losses"]) for h in state.get("history", [])]
    return epoch, history
