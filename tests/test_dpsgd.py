"""DP-SGD defense (Opacus): private G and D, ε from Opacus's accountant, checkpoints, resume.

All CPU and tiny: 8 random 32x32 pairs, U-Net num_downs 5 / ngf 4, PatchGAN ndf 4, 1-2 epochs.
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import pytest
import torch

from privaudit.data.images import ImageSet
from privaudit.defenses import dpsgd
from privaudit.defenses.dpsgd import DPConfig, DPResult, make_opacus_compatible, train_dpsgd
from privaudit.errors import InputError
from privaudit.models.arch import UnetArch
from privaudit.models.checkpoint import load_model, safe_torch_load
from privaudit.models.networks import NLayerDiscriminator, UnetGenerator, init_weights
from privaudit.training import TrainConfig

ARCH = UnetArch(num_downs=5, ngf=4, norm="group")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions gain nothing from threads, and on a busy 2-core machine two torch
    threads can stall each other for seconds; restore the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_set(n: int = 8, seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return ImageSet(inputs=x, targets=y, names=[f"p{i}.png" for i in range(n)], path="<memory>", layout="aligned")


def dp_cfg(epochs: int = 1, batch_size: int = 4, seed: int = 0, **kw) -> DPConfig:
    train = TrainConfig(epochs=epochs, batch_size=batch_size, ndf=4, seed=seed, device="cpu", augment=kw.pop("augment", True))
    return DPConfig(train=train, **kw)


def rdp_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = list(history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(acc.get_epsilon(delta))


def weights(path: Path) -> dict[str, torch.Tensor]:
    return safe_torch_load(path)["state_dict"]


# ---------------------------------------------------------------------------------------------
# a run, its checkpoint and its ε


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[DPResult, Path]:
    out = tmp_path_factory.mktemp("dp") / "dp.pt"
    steps: list[tuple[int, int, int]] = []
    arch = UnetArch(num_downs=5, ngf=4, norm="batch")  # asks for BatchNorm: replaced by GroupNorm and recorded
    res = train_dpsgd(
        make_set(), out, direction="AtoB", arch=arch, cfg=dp_cfg(epochs=2, noise_multiplier=1.1), on_step=lambda e, s, n, l: steps.append((e, s, n)),
        provenance={"note": "test"},
    )
    assert steps and all(n == 2 for _, _, n in steps)
    return res, out


def test_checkpoint_loads_with_group_norm_and_dp_record(run: tuple[DPResult, Path]) -> None:
    res, out = run
    model = load_model(out, device="cpu")
    assert model.format == "privaudit"
    assert model.arch["norm"] == "group"
    d = model.defense
    assert d["method"] == "dpsgd" and d["norm"] == "group" and d["requested_norm"] == "batch"
    assert math.isfinite(d["epsilon"]) and d["epsilon"] > 0
    assert d["noise_multiplier"] == 1.1 and d["max_grad_norm"] == 1.0 and d["delta"] == pytest.approx(1 / 8)
    assert d["accountant"] == "rdp" and d["sample_rate"] == 0.5 and d["epochs"] == 2 and d["batch_size"] == 4
    assert d["steps"] == res.steps == 4 and d["mechanisms"] == 2
    assert model.provenance["note"] == "test" and model.provenance["epoch"] == 2
    # plain UnetGenerator keys (Opacus's "_module." wrapper stripped), loadable strictly
    state = weights(out)
    assert not any(k.startswith("_module") for k in state)
    assert set(state) == set(UnetGenerator(ARCH).state_dict())
    with torch.no_grad():
        y = model.module(torch.zeros(1, 3, 32, 32))
    assert y.shape == (1, 3, 32, 32) and torch.isfinite(y).all()
    assert model.training == {"complete": True, "epochs_done": 2, "epochs_total": 2}
    assert not out.with_name(out.name + ".state").exists()  # a finished run keeps no resume state (keep_state=True does)


def test_epsilon_matches_an_independent_opacus_accountant(run: tuple[DPResult, Path]) -> None:
    res, out = run
    d = load_model(out, device="cpu").defense
    # G's T steps and D's T steps: one sampled Gaussian mechanism (σ, q) over 2T steps ...
    expected = rdp_epsilon([(1.1, 0.5, 2 * res.steps)], res.delta)
    assert d["epsilon"] == pytest.approx(expected, rel=1e-6)
    assert res.epsilon == pytest.approx(expected, rel=1e-6)
    # ... which is the same as composing the two mechanisms' histories
    assert rdp_epsilon([(1.1, 0.5, res.steps), (1.1, 0.5, res.steps)], res.delta) == pytest.approx(expected, rel=1e-6)
    # ε after each epoch too, and it grows
    eps = [h.losses["epsilon"] for h in res.history]
    assert eps[0] == pytest.approx(rdp_epsilon([(1.1, 0.5, 2 * 2)], res.delta), rel=1e-6)
    assert eps[0] < eps[1] == pytest.approx(expected, rel=1e-6)


def test_target_epsilon_is_met_and_close(tmp_path: Path) -> None:
    cfg = dp_cfg(epochs=1, noise_multiplier=None, target_epsilon=3.0, delta=1e-3)
    res = train_dpsgd(make_set(), tmp_path / "t.pt", direction="AtoB", arch=ARCH, cfg=cfg)
    assert res.epsilon <= 3.0
    assert res.epsilon >= 3.0 * 0.99
    assert res.epsilon == pytest.approx(rdp_epsilon([(res.noise_multiplier, 0.5, 2 * res.steps)], 1e-3), rel=1e-6)
    d = load_model(tmp_path / "t.pt", device="cpu").defense
    assert d["target_epsilon"] == 3.0 and d["noise_multiplier"] == res.noise_multiplier


def test_unattainable_epsilon_is_an_input_error_and_writes_nothing(tmp_path: Path) -> None:
    cfg = dp_cfg(noise_multiplier=None, target_epsilon=0.01, delta=1e-6)
    with pytest.raises(InputError, match=r"unattainable.*raise --target-epsilon"):
        train_dpsgd(make_set(), tmp_path / "u.pt", direction="AtoB", arch=ARCH, cfg=cfg)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"noise_multiplier": -0.5}, "noise-multiplier"),
        ({"noise_multiplier": float("nan")}, "noise-multiplier"),
        ({"max_grad_norm": 0.0}, "max-grad-norm"),
        ({"delta": 1.0}, "delta"),
        ({"delta": 0.0}, "delta"),
        ({"noise_multiplier": 1.0, "target_epsilon": 2.0}, "not both"),
        ({"noise_multiplier": None}, "--noise-multiplier or --target-epsilon"),
        ({"noise_multiplier": None, "target_epsilon": -1.0}, "target-epsilon"),
        ({"accountant": "moments"}, "accountant"),
        ({"batch_size": 1}, "batch-size of at least 2"),
    ],
)
def test_bad_settings_are_input_errors(kw: dict, match: str, tmp_path: Path) -> None:
    cfg = dp_cfg(**kw)
    with pytest.raises(InputError, match=match) as err:
        cfg.validate()
    assert "\n" not in str(err.value)
    with pytest.raises(InputError):
        train_dpsgd(make_set(), tmp_path / "bad.pt", direction="AtoB", arch=ARCH, cfg=cfg)
    assert not (tmp_path / "bad.pt").exists()


# ---------------------------------------------------------------------------------------------
# both networks really get clipped, noised updates


def _record_adam_grads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, float]]:
    """Record (number of parameter tensors, total gradient norm) at every Adam step."""
    seen: list[tuple[int, float]] = []
    orig = torch.optim.Adam.step

    def step(self, *a, **k):
        ps = [p for g in self.param_groups for p in g["params"]]
        seen.append((len(ps), float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in ps)))))
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    return seen


def _n_tensors(net: torch.nn.Module) -> int:
    return len(list(net.parameters()))


def test_generator_and_discriminator_updates_are_clipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # σ = 0 and a tiny clip: every gradient Adam sees is a mean of clipped per-sample gradients,
    # so its norm is at most C * (batch drawn) / (expected batch) <= C * N / 4 = 2C.
    seen = _record_adam_grads(monkeypatch)
    C = 1e-4
    res = train_dpsgd(make_set(), tmp_path / "c.pt", direction="AtoB", arch=ARCH, cfg=dp_cfg(noise_multiplier=0.0, max_grad_norm=C))
    n_g, n_d = _n_tensors(UnetGenerator(ARCH)), _n_tensors(NLayerDiscriminator(6, ndf=4, norm="group"))
    g_norms = [v for n, v in seen if n == n_g]
    d_norms = [v for n, v in seen if n == n_d]
    assert len(g_norms) == len(d_norms) == res.steps == 2
    assert max(g_norms + d_norms) <= 2 * C * (1 + 1e-4)
    assert max(g_norms) > 0  # a drawn batch moved G
    # no noise, no guarantee: ε is infinite, recorded as null (JSON-safe)
    assert res.epsilon == math.inf
    assert load_model(tmp_path / "c.pt", device="cpu").defense["epsilon"] is None


def test_generator_and_discriminator_updates_are_noised(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # σ = 1, clip C: the noise on the mean gradient has std σC / E[B] per coordinate, so the
    # gradient norm is about σC·sqrt(P)/4 for P parameters, far above the clipped signal (<= 2C).
    seen = _record_adam_grads(monkeypatch)
    C = 1e-4
    train_dpsgd(make_set(), tmp_path / "n.pt", direction="AtoB", arch=ARCH, cfg=dp_cfg(noise_multiplier=1.0, max_grad_norm=C))
    for net in (UnetGenerator(ARCH), NLayerDiscriminator(6, ndf=4, norm="group")):
        P = sum(p.numel() for p in net.parameters())
        norms = [v for n, v in seen if n == _n_tensors(net)]
        expected = C * math.sqrt(P) / 4
        assert norms and all(0.8 * expected < v < 1.2 * expected + 2 * C for v in norms), (norms, expected)


def test_empty_poisson_batches_still_step_and_count(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # q = 1/32 over 64 pairs: P(empty draw) = (31/32)^64 ≈ 0.13, so 64 draws hold several empties.
    calls = []
    orig = dpsgd._prepare
    monkeypatch.setattr(dpsgd, "_prepare", lambda *a: calls.append(1) or orig(*a))
    pairs = make_set(64)
    res = train_dpsgd(pairs, tmp_path / "e.pt", direction="AtoB", arch=ARCH, cfg=dp_cfg(batch_size=2, augment=False))
    assert res.sample_rate == 1 / 32 and res.steps == 32
    assert len(calls) < 2 * res.steps  # some draws were empty ...
    assert res.epsilon == pytest.approx(rdp_epsilon([(1.0, 1 / 32, 2 * 32)], 1 / 64), rel=1e-6)  # ... and still counted


# ---------------------------------------------------------------------------------------------
# reproducibility and resume


def test_same_seed_same_weights(tmp_path: Path) -> None:
    a = train_dpsgd(make_set(), tmp_path / "a.pt", direction="AtoB", arch=ARCH, cfg=dp_cfg(seed=3))
    b = train_dpsgd(make_set(), tmp_path / "b.pt", direction="AtoB", arch=ARCH, cfg=dp_cfg(seed=3))
    train_dpsgd(make_set(), tmp_path / "c.pt", direction="AtoB", arch=ARCH, cfg=dp_cfg(seed=4))
    wa, wb, wc = weights(tmp_path / "a.pt"), weights(tmp_path / "b.pt"), weights(tmp_path / "c.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert a.epsilon == b.epsilon


def test_resume_continues_with_the_same_weights_and_epsilon(tmp_path: Path) -> None:
    full = train_dpsgd(make_set(), tmp_path / "full.pt", direction="AtoB", arch=ARCH, cfg=dp_cfg(epochs=2))
    train_dpsgd(make_set(), tmp_path / "part.pt", direction="AtoB", arch=ARCH, cfg=dp_cfg(epochs=1), keep_state=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = train_dpsgd(make_set(), tmp_path / "part.pt", direction="AtoB", arch=ARCH, cfg=dp_cfg(epochs=2), resume=True, keep_state=True)
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]  # restoring the schedule is no misuse
    wf, wr = weights(tmp_path / "full.pt"), weights(tmp_path / "part.pt")
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    assert resumed.epsilon == pytest.approx(full.epsilon, rel=1e-12)
    assert [h.epoch for h in resumed.history] == [1, 2]
    assert load_model(tmp_path / "part.pt", device="cpu").defense["steps"] == 4
    with pytest.raises(InputError, match="noise_multiplier"):
        train_dpsgd(make_set(), tmp_path / "part.pt", direction="AtoB", arch=ARCH, cfg=dp_cfg(epochs=3, noise_multiplier=2.0), resume=True)
    with pytest.raises(InputError, match="no saved state"):
        train_dpsgd(make_set(), tmp_path / "none.pt", direction="AtoB", arch=ARCH, cfg=dp_cfg(), resume=True)


# ---------------------------------------------------------------------------------------------
# the Opacus-compatible networks compute the reference functions


def test_out_of_place_unet_computes_the_reference_function() -> None:
    torch.manual_seed(0)
    ref = UnetGenerator(UnetArch(num_downs=6, ngf=4, norm="group", use_dropout=True))
    init_weights(ref)
    dp = make_opacus_compatible(copy.deepcopy(ref))
    assert all(not getattr(m, "inplace", False) for m in dp.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ref.eval()(x.clone()), dp.eval()(x.clone()))
    d_ref = NLayerDiscriminator(6, ndf=4, norm="group")
    d_dp = make_opacus_compatible(copy.deepcopy(d_ref))
    z = torch.randn(2, 6, 32, 32)
    with torch.no_grad():
        assert torch.equal(d_ref(z), d_dp(z))
