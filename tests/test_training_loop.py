"""The one training loop (privaudit/training/loop.py) with its plain and DP-SGD steps.

The pinned values were computed with the two loops this one replaced (privaudit at commit b503e7d,
training.fit and defenses.dpsgd.train_dpsgd): the same seed must still draw the same batches,
jitter, dropout, Poisson samples and noise in the same order, so the running losses of every step
match. (Bit-identical weights were checked at the merge, on this machine; the tolerance below only
absorbs float differences between CPUs, far smaller than any change of the random draws.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import write_pairs
from privaudit.cli.app import app
from privaudit.data.images import ImageSet
from privaudit.defenses import dpsgd
from privaudit.defenses.dpsgd import DPConfig, train_dpsgd
from privaudit.errors import InternalError
from privaudit.models.arch import UnetArch
from privaudit.models.networks import UnetGenerator, init_weights
from privaudit.training import TrainConfig, fit

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

REPO = Path(__file__).resolve().parents[1]

# Running mean losses after each of the 4 steps (2 epochs x 2 batches), from the old loops.
PLAIN_STEPS = [
    {"D_real": 0.732075, "D_fake": 0.702481, "G_GAN": 0.724717, "G_L1": 0.412628},
    {"D_real": 0.70717, "D_fake": 0.718591, "G_GAN": 0.702179, "G_L1": 0.409523},
    {"D_real": 0.72606, "D_fake": 0.693627, "G_GAN": 0.717654, "G_L1": 0.407822},
    {"D_real": 0.696858, "D_fake": 0.706209, "G_GAN": 0.705216, "G_L1": 0.406909},
]
PLAIN_WEIGHT_SUM = 182.88635288474256
# DP-SGD: the last step drew two empty Poisson batches (noise only), so its running means stay put.
DP_STEPS = [
    {"D_real": 0.733899, "D_fake": 0.637433, "G_GAN": 0.670766, "G_L1": 0.411758},
    {"D_real": 0.711708, "D_fake": 0.688, "G_GAN": 0.659119, "G_L1": 0.410692},
    {"D_real": 0.660476, "D_fake": 0.724827, "G_GAN": 0.646738, "G_L1": 0.407615},
    {"D_real": 0.660476, "D_fake": 0.724827, "G_GAN": 0.646738, "G_L1": 0.407615},
]
DP_WEIGHT_SUM = 106.85899660791665
DP_EPSILON = [1.4023354452422163, 2.5801577131810527]


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g)
    return x, y


def _weight_sum(state: dict[str, torch.Tensor]) -> float:
    return float(sum(t.double().sum() for t in state.values() if t.is_floating_point()))


def _assert_steps(seen: list[dict[str, float]], pinned: list[dict[str, float]]) -> None:
    assert len(seen) == len(pinned)
    for got, want in zip(seen, pinned):
        assert list(got) == list(want)
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_plain_step_matches_the_old_pix2pix_loop(tmp_path: Path) -> None:
    x, y = _data()
    torch.manual_seed(0)
    G = UnetGenerator(UnetArch(num_downs=5, ngf=4))
    init_weights(G)
    steps: list[dict[str, float]] = []
    history = fit(G, x, y.float() / 127.5 - 1, TrainConfig(epochs=2, batch_size=2, ndf=4, device="cpu"), out=tmp_path / "p.pt",
                  save_model=lambda *a: None, on_step=lambda e, s, n, losses: steps.append(dict(losses)))
    _assert_steps(steps, PLAIN_STEPS)
    assert [h.losses for h in history] == [steps[1], steps[3]]  # an epoch's means are its last running means
    assert _weight_sum(G.state_dict()) == pytest.approx(PLAIN_WEIGHT_SUM, rel=1e-5)


def test_dp_step_matches_the_old_dpsgd_loop(tmp_path: Path) -> None:
    x, y = _data()
    pairs = ImageSet(inputs=x, targets=y, names=[str(i) for i in range(4)], path="<memory>", layout="aligned")
    steps: list[dict[str, float]] = []
    res = train_dpsgd(pairs, tmp_path / "d.pt", direction="AtoB", arch=UnetArch(num_downs=5, ngf=4, norm="group"),
                      cfg=DPConfig(train=TrainConfig(epochs=2, batch_size=2, ndf=4, device="cpu")), on_step=lambda e, s, n, losses: steps.append(dict(losses)))
    _assert_steps(steps, DP_STEPS)
    assert [h.losses["epsilon"] for h in res.history] == pytest.approx(DP_EPSILON, rel=1e-9)  # the accountant is exact
    assert _weight_sum(torch.load(tmp_path / "d.pt", weights_only=True)["state_dict"]) == pytest.approx(DP_WEIGHT_SUM, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# DP-SGD: what the loop's DP step must not do


def test_importing_or_running_dpsgd_leaves_the_warning_filters_alone(tmp_path: Path) -> None:
    # (scipy, imported by the attack metrics, adds filters of its own: look for ours by message)
    code = (
        "import warnings\n"
        "import privaudit.defenses.dpsgd, privaudit.cli.app\n"
        "ours = [f for f in warnings.filters if f[1] is not None and 'backward hook' in f[1].pattern]\n"
        "assert ours == [], ours\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import warnings

    x, y = _data()
    pairs = ImageSet(inputs=x, targets=y, names=[str(i) for i in range(4)], path="<memory>", layout="aligned")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before = list(warnings.filters)
        train_dpsgd(pairs, tmp_path / "d.pt", direction="AtoB", arch=UnetArch(num_downs=5, ngf=4, norm="group"),
                    cfg=DPConfig(train=TrainConfig(epochs=1, batch_size=2, ndf=4, device="cpu", augment=False)))
        assert warnings.filters == before
    # ... yet the warnings it expects are silenced while it trains
    assert not [w for w in caught if "backward hook" in str(w.message) or "Secure RNG" in str(w.message)]


def test_opacus_disagreeing_with_the_planned_rate_is_a_bug_not_bad_input(monkeypatch, tmp_path: Path) -> None:
    real = dpsgd.poisson_schedule
    monkeypatch.setattr(dpsgd, "poisson_schedule", lambda n, b: (real(n, b)[0], real(n, b)[1] + 1))
    x, y = _data()
    pairs = ImageSet(inputs=x, targets=y, names=[str(i) for i in range(4)], path="<memory>", layout="aligned")
    with pytest.raises(InternalError, match="please report"):
        train_dpsgd(pairs, tmp_path / "d.pt", direction="AtoB", arch=UnetArch(num_downs=5, ngf=4, norm="group"),
                    cfg=DPConfig(train=TrainConfig(epochs=1, batch_size=2, ndf=4, device="cpu")))
    data = write_pairs(tmp_path / "pairs", 4)
    r = CliRunner().invoke(app, ["defend", "--method", "dpsgd", "--train-data", str(data), "--out", str(tmp_path / "o.pt"), "--epochs", "1",
                                 "--ngf", "4", "--ndf", "4", "--batch-size", "2", "--device", "cpu", "--quiet"])
    assert r.exit_code == 3, r.output
    assert "InternalError" in r.stderr and "please report" in r.stderr
    assert not (tmp_path / "o.pt").exists()
