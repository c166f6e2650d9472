"""Defenses: AKD and DMP weaken the attack on an overfit teacher, the proxy's targets are never
read, Gauss noise is applied on every load, and an interrupted distillation resumes exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import write_pairs
from privaudit import defaults
from privaudit.attacks.reconstruction import AttackConfig
from privaudit.cli.app import app
from privaudit.data.images import load_inputs
from privaudit.defenses.distill import distill, student_arch
from privaudit.attacks.api import attack
from privaudit.defenses.gauss import OutputNoise
from privaudit.models.checkpoint import load_model
from privaudit.training import TrainConfig

runner = CliRunner()


def _auc(model: Path, members: Path, nonmembers: Path) -> float:
    report, _ = attack(model, members, nonmembers, AttackConfig(n_bootstrap=0), device="cpu")
    return report["attack"]["auc"]


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def facade_teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    """A teacher overfit on 16 procedural facades (the demo's data), with non-members and a proxy
    set from the same distribution: (checkpoint, members, non-members, proxy)."""
    from privaudit.demo import make_facades, write_aligned
    from privaudit.models.arch import ModelSpec
    from privaudit.training import train

    root = tmp_path_factory.mktemp("facades")
    for name, n, seed in (("members", 16, 1), ("nonmembers", 16, 2), ("proxy", 16, 3)):
        photos, labels = make_facades(n, size=32, seed=seed)
        write_aligned(root / name, photos, labels, name)
    ckpt = root / "teacher.pt"
    cfg = TrainConfig(epochs=60, batch_size=4, augment=False, ndf=8, seed=0, device="cpu", lr=1e-3)
    train(root / "members", ckpt, direction="BtoA", size=32, model=ModelSpec(ngf=8, num_downs=5), config=cfg)
    return ckpt, root / "members", root / "nonmembers", root / "proxy"


@pytest.mark.slow
@pytest.mark.parametrize("method, extra", [("akd", []), ("akd", ["--paper", "--epochs", "30"]), ("dmp", ["--epochs", "30"])], ids=["akd", "akd-paper", "dmp"])
def test_distilled_student_leaks_less_than_overfit_teacher(facade_teacher, tmp_path, method, extra):
    """The default AKD student (the sharper one, at its own step budget), the AKD paper's (--paper)
    and DMP's, each on 16 proxy inputs of an overfit teacher, each for 120 steps (the default's: 30
    epochs of the proxy inputs alone, so 6 epochs of its 5x set; the others 30 epochs)."""
    teacher_path, members, nonmembers, proxy = facade_teacher
    out = tmp_path / f"{method}.pt"
    result = runner.invoke(app, ["defend", str(teacher_path), "--method", method, "--proxy", str(proxy), "--out", str(out), "--direction", "BtoA",
                                 "--batch-size", "4", "--lr", "1e-3", "--no-augment", "--ndf", "8", "--device", "cpu", "--quiet",
                                 *extra])
    assert result.exit_code == 0, result.output
    teacher_auc = _auc(teacher_path, members, nonmembers)
    student_auc = _auc(out, members, nonmembers)
    assert teacher_auc >= 0.95
    assert student_auc <= teacher_auc - 0.3, (teacher_auc, student_auc)
    ckpt = torch.load(out, weights_only=True)
    d = ckpt["defense"]
    assert d["method"] == method and d["lambda_l1"] == (defaults.AKD_SHARP["lambda_l1"] if method == "akd" and not extra else 100.0)
    assert d["epochs"] == (6 if method == "akd" and not extra else 30)
    assert d["teacher"]["sha256"] == load_model(teacher_path).sha256
    assert d["proxy"]["count"] == 16


def _corrupt_targets(src: Path, dst: Path, seed: int) -> Path:
    """Copy aligned pairs with the target (right) half replaced by noise."""
    dst.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for p in sorted(src.glob("*.png")):
        arr = np.asarray(Image.open(p).convert("RGB")).copy()
        w = arr.shape[1] // 2
        arr[:, w:] = rng.integers(0, 256, arr[:, w:].shape, dtype=np.uint8)
        Image.fromarray(arr).save(dst / p.name)
    return dst


def test_proxy_targets_are_never_read(tiny_checkpoint, tmp_path):
    clean = write_pairs(tmp_path / "clean", 6, seed=3)
    noisy = _corrupt_targets(clean, tmp_path / "noisy", seed=1)
    teacher = load_model(tiny_checkpoint, device="cpu")
    cfg = TrainConfig(epochs=2, batch_size=2, augment=True, ndf=8, seed=0, device="cpu")
    outs = []
    for i, folder in enumerate((clean, noisy)):
        proxy = load_inputs(folder, direction="AtoB", size=32)
        assert proxy.targets is None
        out = tmp_path / f"s{i}.pt"
        distill(teacher, proxy, out, method="akd", arch=student_arch(teacher, None), cfg=cfg, direction="AtoB")
        outs.append(_state(out))
    assert outs[0].keys() == outs[1].keys()
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


def test_proxy_target_folder_is_not_needed(tiny_checkpoint, tmp_path):
    folders = write_pairs(tmp_path / "ab", 4, layout="folders", seed=3)
    for f in (folders / "B").iterdir():
        f.write_bytes(b"not an image")  # would fail to decode if anything read it
    proxy = load_inputs(folders, direction="AtoB", size=32)
    assert len(proxy) == 4 and proxy.targets is None and proxy.layout == "folders"


class _Interrupt(Exception):
    pass


def test_distillation_resume_matches_uninterrupted_run(tiny_checkpoint, tmp_path):
    teacher = load_model(tiny_checkpoint, device="cpu")
    proxy = load_inputs(write_pairs(tmp_path / "p", 4, seed=5), direction="AtoB", size=32)
    cfg = TrainConfig(epochs=3, batch_size=2, ndf=8, seed=0, device="cpu")  # jitter on: its RNG must resume too
    arch = student_arch(teacher, None)
    full, cut = tmp_path / "full.pt", tmp_path / "cut.pt"
    distill(teacher, proxy, full, method="akd", arch=arch, cfg=cfg, direction="AtoB")

    def interrupt(epoch: int, step: int, steps: int, losses: dict) -> None:
        if epoch == 2 and step == 1:  # a crash in the middle of the last epoch
            raise _Interrupt

    with pytest.raises(_Interrupt):
        distill(teacher, proxy, cut, method="akd", arch=arch, cfg=cfg, direction="AtoB", on_step=interrupt)
    assert torch.load(cut, weights_only=True)["defense"]["epochs_done"] == 2
    r = runner.invoke(app, ["defend", str(tiny_checkpoint), "--method", "akd", "--proxy", str(tmp_path / "p"), "--out", str(cut), "--epochs", "3",
                            "--batch-size", "2", "--ndf", "8", "--device", "cpu", "--resume", "--quiet", "--paper"])
    assert r.exit_code == 0, r.output
    a, b = _state(full), _state(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_other_settings(tiny_checkpoint, tmp_path):
    p = write_pairs(tmp_path / "p", 4, seed=5)
    base = ["defend", str(tiny_checkpoint), "--method", "dmp", "--proxy", str(p), "--out", str(tmp_path / "s.pt"), "--epochs", "1",
            "--batch-size", "2", "--device", "cpu", "--quiet"]
    assert runner.invoke(app, base + ["--keep-state"]).exit_code == 0
    r = runner.invoke(app, base + ["--resume", "--lr", "0.01"])
    assert r.exit_code == 2 and "lr" in r.stderr


def test_gauss_noise_is_applied_on_load_and_seeded(tiny_checkpoint, tmp_path):
    out = tmp_path / "g.pt"
    r = runner.invoke(app, ["defend", str(tiny_checkpoint), "--method", "gauss", "--sigma", "0.3", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    plain = load_model(tiny_checkpoint, device="cpu")
    noisy = load_model(out, device="cpu", seed=1)
    assert isinstance(noisy.module, OutputNoise) and noisy.defense["sigma"] == 0.3
    with torch.no_grad():
        base = plain.module(x)
        a = noisy.module(x)
        noisy.reseed(1)
        b = noisy.module(x)
        noisy.reseed(2)
        c = noisy.module(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    resid = (a - base)[(a.abs() < 0.99)]  # away from the clamp the noise is N(0, 0.3^2)
    assert 0.25 < float(resid.std()) < 0.35
    # the weights are the teacher's
    assert all(torch.equal(_state(out)[k], _state(tiny_checkpoint)[k]) for k in _state(out))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--method", "gauss", "--sigma", "-1"], "--sigma"),
        (["--method", "gauss"], "--sigma"),
        (["--method", "akd"], "--proxy"),
        (["--method", "magic"], "'--method': 'magic' is not one of 'akd', 'dmp', 'gauss', 'dpsgd'"),
        (["--method", "dpsgd"], "--train-data"),
    ],
)
def test_defend_bad_input_exits_2_with_one_line(tiny_checkpoint, tmp_path, args, needle):
    out = tmp_path / "o.pt"
    r = runner.invoke(app, ["defend", str(tiny_checkpoint), *args, "--out", str(out), "--quiet"])
    assert r.exit_code == 2, r.output
    assert needle in r.stderr and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_defend_empty_proxy_and_missing_teacher(tiny_checkpoint, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(app, ["defend", str(tiny_checkpoint), "--method", "akd", "--proxy", str(empty), "--out", str(tmp_path / "o.pt")])
    assert r.exit_code == 2 and "no images" in r.stderr
    r = runner.invoke(app, ["defend", str(tmp_path / "nope.pt"), "--method", "dmp", "--proxy", str(empty), "--out", str(tmp_path / "o.pt")])
    assert r.exit_code == 2 and "does not exist" in r.stderr
