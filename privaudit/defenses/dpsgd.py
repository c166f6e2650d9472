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
* PyTorch warns that the full backward hooks fire on outputs only (D's inputs need no gradient):
  expected here, so that warning is silenced around the Opacus calls only, never process-wide.

Training runs the one loop of ``privaudit.training.loop`` with ``DPStep``: this module holds only
what DP adds (the Opacus wiring, the two Poisson loaders and noise generators, the accountant and
its resume state).

The checkpoint holds plain ``UnetGenerator`` keys (the module inside Opacus's wrapper) and
``defense = {method: dpsgd, noise_multiplier, max_grad_norm, epsilon, delta, ...}``; a resume state
``<out>.state`` keeps the accountant's history so ε stays right after ``resume=True``.
"""

from __future__ import annotations

import itertools
import math
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from privaudit import defaults, distributed
from privaudit.data.images import ImageSet, check_direction, data_fingerprint, to_float
from privaudit.data.stream import StreamedSet, checked, open_pairs
from privaudit.defenses.base import DefenseJob, DefenseResult, TrainingOptions
from privaudit.accel import DPSGD_FP32, Accel
from privaudit.errors import CheckpointError, InputError, InternalError
from privaudit.models.arch import DP_NORM, ModelSpec, UnetArch, check_size, private_arch
from privaudit.models.checkpoint import save_checkpoint
from privaudit.models.networks import NLayerDiscriminator, UnetGenerator, UnetSkipConnectionBlock, init_weights
from privaudit.training.config import TrainConfig
from privaudit.training.loop import EpochStats, OnStep, train_loop, training_record
from privaudit.training.pix2pix import RUN_SETTINGS, GANLoss, discriminator_loss, frozen, generator_loss, given_pairs, jitter, train_accel

ACCOUNTANTS = ("rdp", "prv")
STATE_FORMAT = "privaudit.dpsgd-state/1"
# The discriminator's inputs need no gradient, so PyTorch notes that Opacus's full backward hooks
# fire on outputs only; that is expected here and says nothing a user can act on.
HOOK_WARNING = "Full backward hook is firing when gradients are computed with respect to module outputs"


# ---------------------------------------------------------------------------------------------
# configuration and result


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD settings on top of the pix2pix ``TrainConfig``.

    Give exactly one of ``noise_multiplier`` (σ; default ``defaults.DP_NOISE_MULTIPLIER``) and
    ``target_epsilon`` (σ is then solved for; pass ``noise_multiplier=None`` with it). ``delta`` defaults to 1/N for N private
    pairs. ``train.batch_size`` is the *expected* Poisson batch size and must be at least 2.
    """

    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=defaults.DP_BATCH_SIZE))
    noise_multiplier: float | None = defaults.DP_NOISE_MULTIPLIER
    max_grad_norm: float = defaults.DP_MAX_GRAD_NORM
    target_epsilon: float | None = None
    delta: float | None = None
    accountant: str = defaults.DP_ACCOUNTANT

    def validate(self) -> None:
        """Raise ``InputError`` with one actionable line for an invalid setting."""
        self.train.validate()
        if self.train.batch_size < 2:
            raise InputError(
                f"DP-SGD needs --batch-size of at least 2 (the expected Poisson batch; {defaults.DP_BATCH_SIZE} or more is typical), "
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
    max_grad_norm: float = defaults.DP_MAX_GRAD_NORM
    mechanisms: int = 2
    requested_norm: str = DP_NORM


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


@contextmanager
def _expected_warnings_off() -> Iterator[None]:
    """Silence, for the Opacus calls inside only, the warnings this module expects (``HOOK_WARNING``,
    Opacus's note that secure RNG is off); the process's warning filters are left as they were."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=HOOK_WARNING)
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        yield


def train_dpsgd(
    pairs: ImageSet | StreamedSet,
    out: Path,
    *,
    direction: str,
    arch: UnetArch,
    cfg: DPConfig,
    resume: bool = False,
    on_step: OnStep | None = None,
    provenance: dict[str, Any] | None = None,
    keep_state: bool = False,
) -> DPResult:
    """Train a U-Net generator from scratch on the private ``pairs`` with DP-SGD (Opacus).

    pix2pix objective (conditional PatchGAN + λ·L1; L1 only when ``cfg.train.adversarial`` is
    False), generator and discriminator both private under one ``PrivacyEngine``. The generator
    uses norm "group" whatever ``arch.norm`` asks (recorded as ``requested_norm``). Per epoch it
    writes the checkpoint ``out`` (atomically, plain ``UnetGenerator`` keys, ``defense`` with ε
    spent so far) and the resume state ``<out>.state``; ``resume=True`` continues from the latter,
    which is deleted when the run finishes unless ``keep_state``. A diverged run (``training.loop.divergence``)
    raises ``TrainingError`` before that epoch is saved.
    ``on_step(epoch, step, steps_per_epoch, mean_losses)`` reports progress. Seeded: on the CPU the
    same ``cfg.train.seed`` gives the same weights, because Opacus's ``secure_mode`` is off and its
    Poisson sampling and noise draw from seeded ``torch.Generator``s (right for audits and
    experiments; a release meant to carry a formal guarantee should retrain with secure RNG).

    Raises ``InputError`` for bad settings (before anything is written), including an ε target
    that no noise multiplier can reach.
    """
    cfg.validate()
    check_direction(direction)
    tc = cfg.train
    out = Path(out)
    if not pairs.has_targets:
        raise InputError(f"{pairs.path}: DP-SGD trains on (input, target) pairs, but only inputs were loaded; give paired data")
    n = len(pairs)
    if n == 0:
        raise InputError(f"{pairs.path}: no training pairs")
    requested_norm = arch.norm
    arch = private_arch(arch)
    check_size(pairs.size, arch.num_downs, new=True)
    if pairs.input_nc != arch.input_nc or pairs.output_nc != arch.output_nc:
        raise InputError(
            f"the data has {pairs.input_nc}→{pairs.output_nc} channels but the U-Net expects {arch.input_nc}→{arch.output_nc}; "
            "set the channel counts to match"
        )

    distributed.per_process_batch(tc.batch_size)
    accel = train_accel(tc, fp32_only=DPSGD_FP32)
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

    with distributed.session(accel.device), accel.active():
        return _train(pairs, out, step_args=dict(arch=arch, cfg=cfg, sigma=sigma, delta=delta, sample_rate=q, steps_per_epoch=steps_per_epoch, accel=accel),
                      direction=direction, requested_norm=requested_norm, mechanisms=mechanisms, resume=resume, on_step=on_step, provenance=provenance,
                      keep_state=keep_state)


def _train(pairs: ImageSet | StreamedSet, out: Path, *, step_args: dict[str, Any], direction: str, requested_norm: str, mechanisms: int, resume: bool,
           on_step: OnStep | None, provenance: dict[str, Any] | None, keep_state: bool) -> DPResult:
    """``train_dpsgd`` once the process group (under torchrun) is up."""
    cfg: DPConfig = step_args["cfg"]
    tc = cfg.train
    arch, sigma, delta, q, steps_per_epoch = step_args["arch"], step_args["sigma"], step_args["delta"], step_args["sample_rate"], step_args["steps_per_epoch"]
    n = len(pairs)
    data_sha = data_fingerprint(pairs)  # streamed: decodes every file, so a bad one fails before training
    with _expected_warnings_off():
        step = DPStep(pairs, **step_args)
    fp = {
        "config": {k: v for k, v in cfg.to_dict().items()},
        "noise_multiplier": sigma,
        "delta": delta,
        "data": data_sha,
        "arch": arch.to_dict(),
        "direction": direction,
    }
    # as given (decay_epochs None stays None, so a longer --epochs can resume), less how it uses the device
    fp["config"]["train"] = {k: v for k, v in asdict(tc).items() if k not in RUN_SETTINGS}

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

    def save(path: Path, G: nn.Module, epoch: int) -> None:
        save_checkpoint(
            path,
            generator=G,
            image_size=pairs.size,
            direction=direction,
            defense=defense_record(epoch, _epsilon(step.engine, delta)),
            provenance={
                "trained_on": {"path": pairs.path, "count": n, "sha256": data_sha},
                "training": cfg.to_dict(),
                "distributed": distributed.record(tc.batch_size),
                "runtime": step.accel.record(),
                **(provenance or {}),
                "epoch": epoch,
            },
            training=training_record(epoch, tc.epochs),
        )

    with _expected_warnings_off():
        history = train_loop(step, tc, out=out, save_model=save, fingerprint=fp, resume_ignore=("epochs",), resume=resume, keep_state=keep_state,
                             on_step=on_step if distributed.is_main() else None)
    return DPResult(
        epsilon=_epsilon(step.engine, delta),
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


class DPStep:
    """The DP-SGD step of the one training loop (``training.loop.train_loop``).

    Builds G (and D with the adversarial loss), seeded with ``cfg.train.seed``, Opacus-compatible,
    each made private by one ``PrivacyEngine`` with its own Poisson loader (rate ``sample_rate``)
    and noise generator. A step is D's update on its own Poisson draw, then G's update on another;
    an empty draw still steps (noise only, counted by the accountant). D is frozen, hooks off,
    during G's update. Its resume state adds the accountant's history and the noise generators.
    """

    what = "DP-SGD training"
    state_format = STATE_FORMAT

    def __init__(self, pairs: ImageSet | StreamedSet, arch: UnetArch, cfg: DPConfig, *, sigma: float, delta: float, sample_rate: float, steps_per_epoch: int,
                 accel: Accel) -> None:
        from opacus import PrivacyEngine

        if accel.precision != "fp32" or accel.channels_last:
            raise InternalError("internal error: DP-SGD must run in fp32 (see privaudit.accel.DPSGD_FP32); please report it")
        device = accel.device
        tc = cfg.train
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
        opt_g = torch.optim.Adam(G.parameters(), lr=tc.lr, betas=(tc.beta1, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), lr=tc.lr, betas=(tc.beta1, 0.999)) if D is not None else None

        # one engine, one accountant; each network gets its own Poisson loader and noise stream
        # (a streamed set: its map-style dataset, decoded by its workers; the same items and draws)
        if isinstance(pairs, StreamedSet):
            dataset: Any = pairs.dataset()
            loading = {k: v for k, v in pairs.loader_options().items() if k != "generator"}
        else:
            dataset, loading = TensorDataset(pairs.inputs, pairs.targets), {}
        self.seed_base = tc.seed * 1_000_003
        self.load_g, self.load_d = torch.Generator(), torch.Generator()
        self.noise_g = torch.Generator(device=device).manual_seed(self.seed_base + 11)
        self.noise_d = torch.Generator(device=device).manual_seed(self.seed_base + 13)
        self.engine = PrivacyEngine(accountant=cfg.accountant, secure_mode=False)
        common = dict(noise_multiplier=sigma, max_grad_norm=cfg.max_grad_norm, poisson_sampling=True, loss_reduction="mean")
        self.G_dp, self.dp_opt_g, self.loader_g = self.engine.make_private(
            module=G, optimizer=opt_g, data_loader=DataLoader(dataset, batch_size=tc.batch_size, generator=self.load_g, **loading), noise_generator=self.noise_g, **common
        )
        self.D_dp = self.dp_opt_d = self.loader_d = None
        if D is not None:
            self.D_dp, self.dp_opt_d, self.loader_d = self.engine.make_private(
                module=D, optimizer=opt_d, data_loader=DataLoader(dataset, batch_size=tc.batch_size, generator=self.load_d, **loading), noise_generator=self.noise_d, **common
            )
        self.world = distributed.world_size() if distributed.active() else 1
        if self.world > 1:
            for opt in (self.dp_opt_g, self.dp_opt_d):
                if opt is not None:
                    _shard_optimizer(opt)
        if len(self.loader_g) != steps_per_epoch or abs(getattr(self.loader_g, "sample_rate", sample_rate) - sample_rate) > 1e-15:
            raise InternalError("internal error: Opacus's Poisson loader disagrees with the planned sampling rate; please report it")
        self.generator, self.discriminator = G, D
        self.optimizers = (opt_g, opt_d)
        self.steps_per_epoch = steps_per_epoch
        self.delta = delta
        self.tc, self.device, self.accel = tc, device, accel
        self.gan_loss = GANLoss()
        self.aug = torch.Generator()

    def batches(self, epoch: int) -> Iterator[tuple[list[torch.Tensor], list[torch.Tensor] | None]]:
        """(G's Poisson draw, D's Poisson draw) per step; seeded per epoch, so a resumed run draws the same."""
        self.load_g.manual_seed(self.seed_base + 2 * epoch + 1)
        self.load_d.manual_seed(self.seed_base + 2 * epoch + 2)
        self.aug = torch.Generator().manual_seed(self.seed_base + epoch)
        d_batches = checked(self.loader_d) if self.loader_d is not None else itertools.repeat(None)
        return zip(checked(self.loader_g), d_batches)

    def _mine(self, batch: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The Poisson draw prepared (jittered as a whole, so every process draws the same crop), then
        this process's shard of it under torchrun; None for an empty draw or shard."""
        if len(batch[0]) == 0:
            return None
        x, y = _prepare(batch, self.tc.augment, self.aug, self.accel)
        if self.world > 1:
            r = distributed.rank()
            x, y = x.tensor_split(self.world)[r], y.tensor_split(self.world)[r]
        return (x, y) if len(x) else None

    def __call__(self, batch: tuple[list[torch.Tensor], list[torch.Tensor] | None]) -> tuple[dict[str, float], float | None]:
        batch_g, batch_d = batch
        tc, device = self.tc, self.device
        losses: dict[str, float] = {}
        # --- discriminator step on its own Poisson draw
        if self.D_dp is not None and self.dp_opt_d is not None and batch_d is not None:
            self.dp_opt_d.zero_grad(set_to_none=True)
            mine = self._mine(batch_d)
            logged = {"D_real": 0.0, "D_fake": 0.0}
            if mine is None:
                _zero_rows(self.dp_opt_d)
            else:
                x, y = mine
                # fp32 throughout, no autocast (DPSGD_FP32)
                with torch.no_grad():
                    fake = self.G_dp(x)
                # two passes over the same B samples: Opacus sums them per sample
                loss_d, logged = discriminator_loss(self.D_dp, self.gan_loss, x, y, fake)
                loss_d.backward()
            self.dp_opt_d.step()
            if len(batch_d[0]):
                losses.update(self._global(logged, 0 if mine is None else len(mine[0])))
        # --- generator step on another Poisson draw
        self.dp_opt_g.zero_grad(set_to_none=True)
        g_total = None
        mine = self._mine(batch_g)
        logged = {"G_GAN": 0.0, "G_L1": 0.0} if self.D_dp is not None else {"G_L1": 0.0}
        total = 0.0
        if mine is None:
            _zero_rows(self.dp_opt_g)
        else:
            x, y = mine
            with frozen(self.D_dp), _hooks_off(self.D_dp):
                fake = self.G_dp(x)
                loss_g, logged = generator_loss(self.D_dp, self.gan_loss, x, y, fake, tc.lambda_l1)
                loss_g.backward()
            total = loss_g.item()
        self.dp_opt_g.step()
        if len(batch_g[0]):
            means = self._global({**logged, "_G": total}, 0 if mine is None else len(mine[0]))
            g_total = means.pop("_G")
            losses.update(means)
        return losses, g_total

    def _global(self, values: dict[str, float], count: int) -> dict[str, float]:
        """The losses over the whole Poisson draw (the processes' shards weighted by their sizes)."""
        return distributed.weighted_means(values, count, self.device) if self.world > 1 else values

    def epoch_extras(self) -> dict[str, float]:
        return {"epsilon": _epsilon(self.engine, self.delta)}

    def extra_state(self) -> dict[str, Any]:
        acc = self.engine.accountant.state_dict()
        return {
            "accountant": {"mechanism": acc.get("mechanism"), "history": [list(h) for h in acc.get("history", [])]},
            "noise_g": self.noise_g.get_state(),
            "noise_d": self.noise_d.get_state(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        acc = state["accountant"]
        self.engine.accountant.load_state_dict({"mechanism": acc["mechanism"], "history": [tuple(h) for h in acc["history"]]})
        self.noise_g.set_state(state["noise_g"])
        self.noise_d.set_state(state["noise_d"])


def _shard_optimizer(opt: Any) -> None:
    """Make Opacus's ``DPOptimizer`` ``opt`` one shard of a step over the whole Poisson draw.

    Every process draws the same Poisson sample (seeded alike) and clips the per-sample gradients of
    its shard; rank 0 alone adds the noise (from the noise generator one process would use); each
    process scales by the GLOBAL expected batch size (``make_private`` was given the global loader);
    then the gradients are summed over the processes. The update is (Σ clipped + noise) / E[B]
    over the whole draw: the one-process update, up to the order of float sums. The accountant sees
    the global sampling rate and the same steps, so ε is the one-process run's.
    (Opacus's own ``DistributedDPOptimizer`` pairs with per-process Poisson samplers instead, which
    draws other batches than one process would.)"""
    from opacus.optimizers import DPOptimizer

    if type(opt) is not DPOptimizer:
        raise InternalError(f"internal error: expected Opacus's DPOptimizer, got {type(opt).__name__}; please report it")
    if _Lazy.cls is None:
        _Lazy.cls = _shard_dp_optimizer_class()
    opt.__class__ = _Lazy.cls


def _shard_dp_optimizer_class() -> type:
    from opacus.optimizers import DPOptimizer
    import torch.distributed as dist

    class ShardDPOptimizer(DPOptimizer):
        def add_noise(self) -> None:
            if dist.get_rank() == 0:
                super().add_noise()
            else:
                for p in self.params:
                    p.grad = p.summed_grad.view_as(p)

        def step(self, closure: Any = None) -> Any:
            if closure is not None:
                with torch.enable_grad():
                    closure()
            if self.pre_step():
                for p in self.params:
                    if p.grad is not None:
                        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                return self.original_optimizer.step()
            return None

    return ShardDPOptimizer


class _Lazy:
    """The sharded optimizer class, built when first needed (Opacus loads late)."""

    cls: type | None = None


def _prepare(batch: list[torch.Tensor], augment: bool, gen: torch.Generator, accel: Accel) -> tuple[torch.Tensor, torch.Tensor]:
    """A Poisson draw (uint8) on the device (pinned, non-blocking on CUDA), as floats, jittered there."""
    x, y = to_float(accel.batch(batch[0])), to_float(accel.batch(batch[1]))
    if augment:
        x, y = jitter(x, y, gen)
    return x, y


def _zero_rows(opt: Any) -> None:
    """An empty Poisson draw: no per-sample gradients, so the step adds noise only (and counts)."""
    for p in opt.params:
        p.grad_sample = p.new_zeros((0, *p.shape))


@contextmanager
def _hooks_off(D: Any) -> Iterator[None]:
    """Opacus's hooks off on D during the generator's update: they would fire on the backward pass
    through D and find no activations of a frozen layer (and mix G's batch into D's per-sample
    gradients)."""
    if D is None:
        yield
        return
    D.disable_hooks()
    try:
        yield
    finally:
        D.enable_hooks()


# ---------------------------------------------------------------------------------------------
# the defense: `privaudit defend --method dpsgd`


@dataclass(frozen=True)
class DPSGDOptions(TrainingOptions):
    """``defend(method="dpsgd")`` settings: pix2pix training (the expected Poisson batch
    ``batch_size``), the generator's width and depth (always GroupNorm), and the privacy settings.
    ``noise_multiplier`` None: ``defaults.DP_NOISE_MULTIPLIER``, unless σ is solved for
    ``target_epsilon``. ``delta`` None: 1/N."""

    batch_size: int = defaults.DP_BATCH_SIZE
    ngf: int = defaults.NGF
    num_downs: int | None = None
    noise_multiplier: float | None = None
    max_grad_norm: float = defaults.DP_MAX_GRAD_NORM
    target_epsilon: float | None = None
    delta: float | None = None
    accountant: str = defaults.DP_ACCOUNTANT

    def dp_config(self, *, seed: int = defaults.SEED, device: str = defaults.DEVICE, precision: str = defaults.PRECISION,
                  deterministic: bool = defaults.DETERMINISTIC) -> DPConfig:
        sigma = self.noise_multiplier
        if sigma is None and self.target_epsilon is None:
            sigma = defaults.DP_NOISE_MULTIPLIER
        return DPConfig(train=self.train_config(seed=seed, device=device, precision=precision, deterministic=deterministic), noise_multiplier=sigma, max_grad_norm=self.max_grad_norm,
                        target_epsilon=self.target_epsilon, delta=self.delta, accountant=self.accountant)

    def validate(self) -> None:
        self.dp_config().validate()


class DPSGD:
    """DP-SGD training from scratch on the private pairs (no teacher)."""

    name = "dpsgd"
    description = "DP-SGD training from scratch with Opacus (clipped, noised per-sample gradients)"
    Options = DPSGDOptions

    def run(self, options: DPSGDOptions, job: DefenseJob) -> DefenseResult:
        if job.train_data is None:
            raise InputError("--method dpsgd trains from scratch on the private pairs: pass --train-data PATH")
        cfg = options.dp_config(seed=job.seed, device=job.device, precision=job.precision, deterministic=job.deterministic)
        train_accel(cfg.train, fp32_only=DPSGD_FP32)  # --precision bf16 (or a missing GPU) fails before any image is read
        # Like `train`, DP-SGD defines the direction rather than reading it: AtoB unless told, and said.
        direction_note = "--direction" if job.direction else "the default; pass --direction BtoA if the right half or B/ is the input"
        direction = job.direction or defaults.DIRECTION
        spec = ModelSpec(num_downs=options.num_downs, ngf=options.ngf, norm=DP_NORM)
        if job.size is not None:
            spec.build(job.size)  # a --size the U-Net cannot take fails before any image is read
        given = isinstance(job.train_data, (ImageSet, StreamedSet))
        if given:
            pairs = given_pairs(job.train_data, job.size)  # type: ignore[arg-type]
        else:
            pairs = open_pairs(job.train_data, direction=direction, size=job.size, what="training data", streaming=job.streaming)  # type: ignore[arg-type]
        line = pairs.resize_warning("training data")
        if line:
            job.warn(line)
        arch = spec.build(pairs.size, pairs.input_nc, pairs.output_nc)
        result = train_dpsgd(pairs, job.out, direction=direction, arch=arch, cfg=cfg, resume=job.resume, on_step=job.on_step, keep_state=job.keep_state,
                             provenance={"trained_on": {"path": pairs.path if given else str(job.train_data), "count": len(pairs), "sha256": data_fingerprint(pairs)}})
        summary = {"direction": f"{direction} ({direction_note})", "image size": f"{pairs.size}x{pairs.size} px", "ε spent": f"{result.epsilon:.4g}", "δ": f"{result.delta:.3g}", "noise multiplier σ": f"{result.noise_multiplier:.4g}",
                   "max grad norm C": f"{result.max_grad_norm:g}", "sample rate": f"{result.sample_rate:.4g}", "steps": str(result.steps),
                   "accountant": result.accountant}
        return DefenseResult(method=self.name, out=job.out, summary=summary, history=result.history, privacy=result)
