"""An honest training lifecycle: counts capped with their flag named, diverged runs stopped before
they overwrite the last good model, unfinished checkpoints flagged wherever they are used, resume
state deleted when a run finishes (kept with --keep-state), and temporaries of killed writers removed."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_generator, write_pairs
from privaudit.attacks import metrics
from privaudit.attacks.reconstruction import AttackConfig
from privaudit.cli.app import app
from privaudit.errors import EnvironmentProblem, InputError, TrainingError
from privaudit.limits import MAX_BOOTSTRAP, MAX_KID_SUBSETS, MAX_REPEAT, MAX_SAMPLES
from privaudit.models.arch import UnetArch
from privaudit.models.checkpoint import load_model, save_checkpoint
from privaudit.models.networks import UnetGenerator, init_weights
from privaudit.training import LOSS_BOUNDS, TrainConfig, divergence, fit, training_record, weight_problem

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
TINY = ["--size", "32", "--ngf", "4", "--ndf", "8", "--batch-size", "4", "--device", "cpu"]


def _bad(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lifecycle")
    write_pairs(root / "m", 10, seed=1)
    write_pairs(root / "n", 10, seed=2)
    return root


def _attack(model: Path, data: Path, *extra: str):
    return runner.invoke(app, ["attack", str(model), "--members", str(data / "m"), "--nonmembers", str(data / "n"), *extra])


def _checkpoint(path: Path, training: dict | None) -> Path:
    save_checkpoint(path, generator=tiny_generator(), image_size=32, direction="AtoB", training=training)
    return path


def _states(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".state" in p.name)


# ---------------------------------------------------------------------------------------------
# limits


def test_caps_are_the_documented_numbers():
    assert (MAX_BOOTSTRAP, MAX_SAMPLES, MAX_REPEAT, MAX_KID_SUBSETS) == (100_000, 1_000, 100, 10_000)
    AttackConfig(n_bootstrap=MAX_BOOTSTRAP, samples=MAX_SAMPLES, stochastic=True).validate()  # the cap itself is allowed
    with pytest.raises(InputError, match="--bootstrap 100001 is above the limit of 100000"):
        AttackConfig(n_bootstrap=MAX_BOOTSTRAP + 1).validate()


@pytest.mark.parametrize(
    "command, flags, needle",
    [
        ("attack", ["--bootstrap", "1000000000"], "--bootstrap 1000000000 is above the limit of 100000"),
        ("attack", ["--stochastic", "--samples", "1001"], "--samples 1001 is above the limit of 1000"),
        ("evaluate", ["--no-kid", "--repeat", "101"], "--repeat 101 is above the limit of 100"),
        ("evaluate", ["--no-kid", "--kid-subsets", "10001"], "--kid-subsets 10001 is above the limit of 10000"),
    ],
)
def test_counts_above_their_cap_are_refused_naming_the_flag(data, tmp_path, command, flags, needle):
    report = tmp_path / "r.json"
    r = runner.invoke(app, [command, str(REPO / "missing.pt"), "--members", str(data / "m"), "--nonmembers", str(data / "n"), "--json", str(report), *flags])
    line = _bad(r, needle)  # refused before the model is even looked at
    assert "pass " + flags[-2] in line
    assert not report.exists()


def test_bootstrap_out_of_memory_names_the_bootstrap(monkeypatch, tiny_checkpoint, data):
    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(metrics, "rankdata", no_memory)
    with pytest.raises(EnvironmentProblem, match="--bootstrap"):
        metrics.bootstrap_auc_ci(np.arange(5.0), np.arange(3.0), n_bootstrap=10)
    line = _bad(_attack(tiny_checkpoint, data, "--quiet"), "out of memory while bootstrapping", "--bootstrap")
    assert "--batch-size" not in line


def test_bootstrap_blocks_shrink_for_huge_sets_without_changing_small_ones(monkeypatch):
    rng = np.random.default_rng(0)
    sm, sn = rng.normal(0.5, 1, 40), rng.normal(0, 1, 30)
    before = metrics.bootstrap_auc_ci(sm, sn, n_bootstrap=300, seed=1)
    # 70 scores per replicate: the default budget keeps 256-row blocks, so the interval is as before
    assert metrics.BOOTSTRAP_BLOCK_ELEMENTS // 70 >= 256
    monkeypatch.setattr(metrics, "BOOTSTRAP_BLOCK_ELEMENTS", 70 * 3)  # 3 rows per block
    small = metrics.bootstrap_auc_ci(sm, sn, n_bootstrap=300, seed=1)
    auc = metrics._auc(sm, sn)
    assert before[0] <= auc <= before[1] and small[0] <= auc <= small[1]
    assert abs(small[0] - before[0]) < 0.1 and abs(small[1] - before[1]) < 0.1  # same distribution, other draws


# ---------------------------------------------------------------------------------------------
# divergence


def test_divergence_rule():
    assert divergence({"D_real": 0.7, "D_fake": 0.6, "G_GAN": 2.5, "G_L1": 0.3, "G": 31.0}) is None
    assert divergence({"G_L1": 2.0, "G_GAN": 999.0}) is None  # at the bounds: still possible
    assert "G_L1 loss 2.5 is above 2" in divergence({"G_L1": 2.5})
    assert "D_fake loss 3.5e+13 is above 1000" in divergence({"G_L1": 0.9, "D_fake": 3.5e13})
    assert "G loss is nan" in divergence({"G_L1": 0.3, "G": math.nan})
    assert "G loss is inf" in divergence({"G": math.inf})  # the total has no bound, but must be finite
    assert set(LOSS_BOUNDS) == {"G_L1", "G_GAN", "G_FM", "D_real", "D_fake"}  # G_FM: feature matching (defend --feature-matching)


def test_weight_rule():
    net = tiny_generator()
    assert weight_problem(net, None) is None
    with torch.no_grad():
        net.model.model[0].weight[0, 0, 0, 0] = 2e5
    assert weight_problem(net) == "a weight of 2e+05 in model.model.0.weight, above 100000, which healthy training never reaches"
    net = tiny_generator()
    buf = dict(net.named_buffers())["model.model.1.model.2.running_var"]
    buf[0] = math.nan
    assert weight_problem(net) == "non-finite weights in model.model.1.model.2.running_var"


def test_train_with_a_huge_lr_stops_in_one_line_and_writes_nothing(data, tmp_path):
    out = tmp_path / "m.pt"
    r = runner.invoke(app, ["train", str(data / "m"), "--out", str(out), "--epochs", "3", "--lr", "1e6", *TINY, "--quiet"])
    _bad(r, "training diverged at epoch 1", "lower --lr (it was 1e+06", "no model was written")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("method", ["akd", "dmp"])
def test_distillation_with_a_huge_lr_stops_in_one_line_and_writes_nothing(tiny_checkpoint, data, tmp_path, method):
    out = tmp_path / "s.pt"
    r = runner.invoke(app, ["defend", str(tiny_checkpoint), "--method", method, "--proxy", str(data / "n"), "--out", str(out), "--epochs", "2",
                            "--lr", "1e6", "--ndf", "8", "--batch-size", "2", "--device", "cpu", "--quiet"])
    _bad(r, "diverged at epoch 1", "lower --lr")
    assert list(tmp_path.iterdir()) == []


def test_dpsgd_with_a_huge_lr_stops_in_one_line_and_writes_nothing(data, tmp_path):
    out = tmp_path / "dp.pt"
    r = runner.invoke(app, ["defend", "--method", "dpsgd", "--train-data", str(data / "m"), "--out", str(out), "--epochs", "2", "--lr", "1e6",
                            "--ngf", "4", "--ndf", "8", "--batch-size", "2", "--device", "cpu", "--quiet"])
    _bad(r, "DP-SGD training diverged at epoch 1", "lower --lr")
    assert list(tmp_path.iterdir()) == []


def test_divergence_in_a_later_epoch_keeps_the_previous_epochs_model(tmp_path):
    out, state = tmp_path / "m.pt", tmp_path / "m.pt.state"
    cfg = TrainConfig(epochs=3, batch_size=2, ndf=8, device="cpu", augment=False)
    torch.manual_seed(0)
    G = UnetGenerator(UnetArch(num_downs=5, ngf=4))
    init_weights(G)
    inputs = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    targets = torch.rand(4, 3, 32, 32) * 2 - 1
    saved: dict[str, bytes] = {}

    def save(path: Path, net: UnetGenerator, epoch: int) -> None:
        save_checkpoint(path, generator=net, image_size=32, direction="AtoB", provenance={"epoch": epoch}, training=training_record(epoch, cfg.epochs))

    def blow_up(epoch: int, step: int, steps: int, losses: dict) -> None:
        if epoch == 1 and step == 0:
            saved["model"], saved["state"] = out.read_bytes(), state.read_bytes()
        if epoch == 1 and step == steps - 1:  # the weights turn to inf late in epoch 2
            with torch.no_grad():
                next(G.parameters()).fill_(math.inf)

    with pytest.raises(TrainingError) as info:
        fit(G, inputs, targets, cfg, out=out, save_model=save, on_step=blow_up)
    msg = str(info.value)
    assert "training diverged at epoch 2 (non-finite weights in model.model.0.weight)" in msg
    assert f"{out} keeps the model of epoch 1 (unfinished)" in msg and "\n" not in msg
    assert out.read_bytes() == saved["model"]  # not overwritten by the diverged epoch
    assert state.read_bytes() == saved["state"]
    model = load_model(out, device="cpu")  # the loader refuses non-finite weights, so this one has none
    assert model.training == {"complete": False, "epochs_done": 1, "epochs_total": 3}
    assert model.provenance["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in torch.load(out, weights_only=True)["state_dict"].values() if v.is_floating_point())


def test_dpsgd_divergence_after_epoch_one_keeps_epoch_ones_model(monkeypatch, tmp_path):
    import privaudit.defenses.dpsgd as dpsgd
    import privaudit.training.loop as loop
    from privaudit.data.images import load_pairs

    pairs = load_pairs(write_pairs(tmp_path / "d", 4, seed=3), direction="AtoB", size=32)
    out = tmp_path / "dp.pt"
    calls = {"n": 0}
    real = loop.weight_problem

    def second_epoch_diverges(*nets):
        calls["n"] += 1
        if calls["n"] == 2:
            assert out.exists()
            calls["model"] = out.read_bytes()
            return "non-finite weights in model.model.0.weight"
        return real(*nets)

    monkeypatch.setattr(loop, "weight_problem", second_epoch_diverges)
    cfg = dpsgd.DPConfig(train=TrainConfig(epochs=3, batch_size=2, ndf=8, device="cpu", augment=False))
    with pytest.raises(TrainingError, match="DP-SGD training diverged at epoch 2 .* keeps the model of epoch 1"):
        dpsgd.train_dpsgd(pairs, out, direction="AtoB", arch=UnetArch(num_downs=5, ngf=4, norm="group"), cfg=cfg)
    assert out.read_bytes() == calls["model"]
    model = load_model(out, device="cpu")
    assert model.training == {"complete": False, "epochs_done": 1, "epochs_total": 3}
    assert model.defense["epochs"] == 1


# ---------------------------------------------------------------------------------------------
# unfinished checkpoints


def test_an_interrupted_training_writes_an_unfinished_checkpoint_and_the_attack_says_so(monkeypatch, data, tmp_path):
    import privaudit.training.loop as loop

    real_save_state = loop.save_state

    def save_then_crash(path, epoch, *args, **kwargs):
        real_save_state(path, epoch, *args, **kwargs)
        raise KeyboardInterrupt  # Ctrl-C right after epoch 1 was saved

    out = tmp_path / "m.pt"
    monkeypatch.setattr(loop, "save_state", save_then_crash)
    r = runner.invoke(app, ["train", str(data / "m"), "--out", str(out), "--epochs", "3", *TINY, "--quiet"])
    assert r.exit_code == 130, r.output
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["training"] == {"complete": False, "epochs_done": 1, "epochs_total": 3}
    assert out.with_name("m.pt.state").exists()  # an interrupted run keeps its state, for --resume

    report = tmp_path / "r.json"
    r = _attack(out, data, "--json", str(report))
    assert r.exit_code == 0, r.output
    assert json.loads(report.read_text())["model"]["training"] == {"complete": False, "epochs_done": 1, "epochs_total": 3}
    warnings = [line for line in r.stderr.splitlines() if line.startswith("privaudit: warning:")]
    assert warnings == [f"privaudit: warning: {out} is an unfinished model: its training stopped after epoch 1 of 3 (interrupted or diverged); "
                        "finish the run with --resume, or use a finished model"]
    assert "UNFINISHED" in r.stderr and "epoch 1 of 3" in r.stderr  # the table's row

    monkeypatch.setattr(loop, "save_state", real_save_state)
    r = runner.invoke(app, ["train", str(data / "m"), "--out", str(out), "--epochs", "3", *TINY, "--resume", "--quiet"])
    assert r.exit_code == 0, r.output
    assert load_model(out).training == {"complete": True, "epochs_done": 3, "epochs_total": 3}
    assert _states(tmp_path) == []


def test_unfinished_warning_survives_quiet_and_json_to_stdout(data, tmp_path):
    model = _checkpoint(tmp_path / "u.pt", training_record(2, 5))
    r = _attack(model, data, "--quiet", "--json", "-")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["model"]["training"] == {"complete": False, "epochs_done": 2, "epochs_total": 5}
    assert r.stderr.splitlines() == [f"privaudit: warning: {model} is an unfinished model: its training stopped after epoch 2 of 5 "
                                     "(interrupted or diverged); finish the run with --resume, or use a finished model"]


def test_evaluate_flags_an_unfinished_model(data, tmp_path):
    model = _checkpoint(tmp_path / "u.pt", training_record(1, 4))
    report = tmp_path / "r.json"
    r = runner.invoke(app, ["evaluate", str(model), "--members", str(data / "m"), "--nonmembers", str(data / "n"), "--no-kid", "--json", str(report), "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads(report.read_text())["model"]["training"]["complete"] is False
    assert "unfinished model" in r.stderr and "epoch 1 of 4" in r.stderr


@pytest.mark.parametrize("training, expected", [(training_record(4, 4), {"complete": True, "epochs_done": 4, "epochs_total": 4}), (None, None)])
def test_finished_and_older_checkpoints_are_not_flagged(data, tmp_path, training, expected):
    # None: a checkpoint from before the record existed; unknown is not "unfinished"
    model = _checkpoint(tmp_path / "f.pt", training)
    report = tmp_path / "r.json"
    r = _attack(model, data, "--json", str(report))
    assert r.exit_code == 0, r.output
    assert json.loads(report.read_text())["model"]["training"] == expected
    assert "warning" not in r.stderr and "UNFINISHED" not in r.stderr


def test_malformed_training_record_reads_as_unknown(tmp_path):
    model = _checkpoint(tmp_path / "x.pt", {"complete": "no", "epochs_done": 1, "epochs_total": 2})
    assert load_model(model).training is None
    model = _checkpoint(tmp_path / "y.pt", {"complete": False, "epochs_done": -1, "epochs_total": 2})
    assert load_model(model).training is None


def test_an_unfinished_teacher_is_flagged_in_defend_and_in_its_students_reports(data, tmp_path):
    teacher = _checkpoint(tmp_path / "t.pt", training_record(3, 10))
    gauss, student = tmp_path / "g.pt", tmp_path / "s.pt"
    r = runner.invoke(app, ["defend", str(teacher), "--method", "gauss", "--sigma", "0.1", "--out", str(gauss), "--quiet"])
    assert r.exit_code == 0, r.output
    assert r.stderr.splitlines() == [f"privaudit: warning: {teacher} is an unfinished model: its training stopped after epoch 3 of 10 "
                                     "(interrupted or diverged); finish the run with --resume, or use a finished model"]
    assert load_model(gauss).training == {"complete": False, "epochs_done": 3, "epochs_total": 10}  # the teacher's weights

    r = runner.invoke(app, ["defend", str(teacher), "--method", "dmp", "--proxy", str(data / "n"), "--out", str(student), "--epochs", "1",
                            "--batch-size", "2", "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "unfinished model" in r.stderr
    s = load_model(student)
    assert s.training == {"complete": True, "epochs_done": 1, "epochs_total": 1}
    assert s.defense["teacher"]["training"] == {"complete": False, "epochs_done": 3, "epochs_total": 10}
    r = _attack(student, data, "--quiet")
    assert r.exit_code == 0, r.output
    assert r.stderr.splitlines() == ["privaudit: warning: its teacher is an unfinished model: its training stopped after epoch 3 of 10 "
                                     "(interrupted or diverged); finish the run with --resume, or use a finished model"]


def test_report_comparison_marks_an_unfinished_model(data, tmp_path):
    from privaudit.report.tables import row

    model = _checkpoint(tmp_path / "u.pt", training_record(2, 5))
    report = tmp_path / "r.json"
    assert _attack(model, data, "--quiet", "--json", str(report)).exit_code == 0
    assert row("u", json.loads(report.read_text())).method == "regular (unfinished: epoch 2/5)"


# ---------------------------------------------------------------------------------------------
# resume state


def test_a_finished_run_deletes_its_state_unless_keep_state(data, tmp_path):
    args = ["train", str(data / "m"), "--epochs", "2", *TINY, "--quiet"]
    assert runner.invoke(app, args + ["--out", str(tmp_path / "a.pt")]).exit_code == 0
    assert _states(tmp_path) == []
    assert runner.invoke(app, args + ["--out", str(tmp_path / "b.pt"), "--keep-state"]).exit_code == 0
    assert _states(tmp_path) == ["b.pt.state"]
    state = torch.load(tmp_path / "b.pt.state", weights_only=True)
    assert state["epoch"] == 2

    # extending a finished run needs the state: without it, the message names --keep-state
    r = runner.invoke(app, ["train", str(data / "m"), "--epochs", "3", *TINY, "--out", str(tmp_path / "a.pt"), "--resume", "--quiet"])
    _bad(r, "no saved state", "--keep-state", "drop --resume")
    r = runner.invoke(app, ["train", str(data / "m"), "--epochs", "3", *TINY, "--out", str(tmp_path / "b.pt"), "--resume", "--quiet"])
    assert r.exit_code == 0, r.output
    assert load_model(tmp_path / "b.pt").training == {"complete": True, "epochs_done": 3, "epochs_total": 3}
    assert _states(tmp_path) == []  # this (resumed) run finished without --keep-state


def test_defend_deletes_its_state_unless_keep_state(tiny_checkpoint, data, tmp_path):
    base = ["defend", str(tiny_checkpoint), "--method", "dmp", "--proxy", str(data / "n"), "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--quiet"]
    assert runner.invoke(app, base + ["--out", str(tmp_path / "a.pt")]).exit_code == 0
    assert _states(tmp_path) == []
    assert runner.invoke(app, base + ["--out", str(tmp_path / "b.pt"), "--keep-state"]).exit_code == 0
    assert _states(tmp_path) == ["b.pt.state"]


# ---------------------------------------------------------------------------------------------
# temporaries of killed writers


KILLED_WRITER = """
import os, signal, sys
from privaudit.io import atomic_path
model, state = sys.argv[1], sys.argv[2]
with atomic_path(model) as a, atomic_path(state) as b:
    a.write_bytes(b"half a model")
    b.write_bytes(b"half a state")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_run(data, tmp_path):
    out = tmp_path / "m.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(out), str(tmp_path / "m.pt.state")], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and all(n.endswith(".tmp") for n in left), left
    assert any(n.startswith(".m.pt.state.") for n in left) and any(n.startswith(".m.pt.") and ".state." not in n for n in left)

    # a one-epoch run never writes the state, yet removes the killed writer's state temporary too
    r = runner.invoke(app, ["train", str(data / "m"), "--out", str(out), "--epochs", "1", *TINY, "--quiet"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
