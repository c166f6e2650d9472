"""The real `privaudit` app driven end to end: train a tiny model, attack it, check the report
contract of DESIGN.md, reproducibility, exit codes, and that bad input gives exit 2 with one line
on stderr and nothing written."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import warnings
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from conftest import OVERFIT_PAIRS, tiny_generator, write_pairs
from privaudit import __version__
from privaudit.cli.app import app
from privaudit.models.arch import UnetArch
from privaudit.models.checkpoint import save_checkpoint

TRAIN_FLAGS = ["--size", "32", "--ngf", "4", "--ndf", "8", "--epochs", "2", "--batch-size", "4"]


def invoke(*args) -> "object":
    return CliRunner().invoke(app, [str(a) for a in args])


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def assert_bad_input(result, *, nothing_in: Path | None = None, mentions: str | None = None) -> None:
    """Exit 2, exactly one line on stderr, no traceback, and no output file written."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("privaudit: error: "), lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""
    if mentions is not None:
        assert mentions in lines[0], lines[0]
    if nothing_in is not None:
        assert _files_under(nothing_in) == [], _files_under(nothing_in)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> SimpleNamespace:
    """8 member pairs, 8 non-member pairs and a tiny model trained on the members for 2 epochs."""
    root = tmp_path_factory.mktemp("cli")
    members = write_pairs(root / "members", 8, seed=1, prefix="m")
    nonmembers = write_pairs(root / "nonmembers", 8, seed=2, prefix="n")
    model = root / "model.pt"
    result = invoke("train", members, "--out", model, *TRAIN_FLAGS)
    assert result.exit_code == 0, result.output
    # a 64px U-Net with 6 downsamplings has a dropout block, for --stochastic
    dropout_model = root / "dropout.pt"
    save_checkpoint(dropout_model, generator=tiny_generator(UnetArch(num_downs=6, ngf=4)), image_size=64, direction="AtoB")
    return SimpleNamespace(root=root, members=members, nonmembers=nonmembers, model=model, dropout_model=dropout_model, train_result=result)


def attack_args(env, model=None, *extra) -> list:
    # 8 pairs a side keep the module fast; below 10 the attack needs --allow-small.
    return ["attack", model or env.model, "--members", env.members, "--nonmembers", env.nonmembers, "--allow-small", *extra]


# --- train ------------------------------------------------------------------------------------


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"privaudit {__version__}"


def test_train_writes_a_self_describing_checkpoint(env):
    assert "wrote" in env.train_result.stderr
    ckpt = torch.load(env.model, weights_only=True)
    assert ckpt["format"] == "privaudit.checkpoint/1"
    assert ckpt["arch"] == {"type": "unet", "input_nc": 3, "output_nc": 3, "num_downs": 5, "ngf": 4, "norm": "batch", "use_dropout": True}
    assert ckpt["image_size"] == 32 and ckpt["direction"] == "AtoB"
    assert ckpt["defense"] == {"method": "none"}
    assert ckpt["provenance"]["epoch"] == 2
    assert ckpt["provenance"]["trained_on"]["count"] == 8
    assert ckpt["training"] == {"complete": True, "epochs_done": 2, "epochs_total": 2}
    assert not (env.model.parent / "model.pt.state").exists()  # a finished run keeps no resume state (--keep-state does)
    assert not [p for p in env.model.parent.iterdir() if p.name.endswith(".tmp")]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_resume_extends_a_run_to_the_same_weights(env, tmp_path):
    # Constant learning rate (--decay-epochs 0), so 1 epoch + 1 resumed epoch is the same schedule as 2.
    flags = ["--size", "32", "--ngf", "4", "--ndf", "8", "--batch-size", "4", "--decay-epochs", "0", "-q"]
    full, part = tmp_path / "full.pt", tmp_path / "part.pt"
    assert invoke("train", env.members, "--out", full, "--epochs", "2", *flags).exit_code == 0
    r1 = invoke("train", env.members, "--out", part, "--epochs", "1", "--keep-state", *flags)
    assert r1.exit_code == 0, r1.output
    assert torch.load(part, weights_only=True)["provenance"]["epoch"] == 1
    r2 = invoke("train", env.members, "--out", part, "--epochs", "2", "--resume", *flags)
    assert r2.exit_code == 0, r2.output
    assert torch.load(part, weights_only=True)["provenance"]["epoch"] == 2
    _assert_same_weights(full, part)


def test_resume_after_an_interruption_matches_the_uninterrupted_run(env, tmp_path, monkeypatch):
    import privaudit.training.loop as loop

    real_save_state = loop.save_state

    def save_then_crash(path, epoch, *args, **kwargs):
        real_save_state(path, epoch, *args, **kwargs)
        if epoch == 1:
            raise KeyboardInterrupt  # the user presses Ctrl-C after the first epoch

    out = tmp_path / "interrupted.pt"
    monkeypatch.setattr(loop, "save_state", save_then_crash)
    r1 = invoke("train", env.members, "--out", out, *TRAIN_FLAGS)
    assert r1.exit_code == 130, r1.output
    assert torch.load(out, weights_only=True)["provenance"]["epoch"] == 1
    monkeypatch.setattr(loop, "save_state", real_save_state)
    r2 = invoke("train", env.members, "--out", out, *TRAIN_FLAGS, "--resume")
    assert r2.exit_code == 0, r2.output
    _assert_same_weights(env.model, out)  # the module's model: the same flags, uninterrupted


def test_resume_with_other_settings_is_refused(env, tmp_path):
    out = tmp_path / "m.pt"
    assert invoke("train", env.members, "--out", out, "--size", "32", "--ngf", "4", "--ndf", "8", "--epochs", "1", "--keep-state", "-q").exit_code == 0
    r = invoke("train", env.members, "--out", out, "--size", "32", "--ngf", "4", "--ndf", "8", "--epochs", "1", "--lr", "1e-3", "--resume", "-q")
    assert_bad_input(r, mentions="lr")


def test_resume_without_state_is_refused(env, tmp_path):
    r = invoke("train", env.members, "--out", tmp_path / "fresh.pt", *TRAIN_FLAGS, "--resume", "-q")
    assert_bad_input(r, mentions="--resume")


def test_train_bad_direction_writes_nothing(env, tmp_path):
    r = invoke("train", env.members, "--out", tmp_path / "x.pt", *TRAIN_FLAGS, "--direction", "sideways")
    assert_bad_input(r, nothing_in=tmp_path, mentions="--direction")


# --- attack: the report ----------------------------------------------------------------------


REPORT_KEYS = {"schema", "tool", "created", "seed", "model", "data", "attack"}
ATTACK_KEYS = {"name", "auc", "auc_ci95", "tpr_at_fpr", "advantage", "balanced_accuracy", "threshold", "member_loss", "nonmember_loss"}


def test_attack_report_has_every_design_key(env, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = invoke(*attack_args(env, None, "--json", out / "r.json", "--scores", out / "s.csv", "--plot-dir", out / "plots"))
    assert result.exit_code == 0, result.output
    assert "AUC" in result.stderr  # the table goes to stderr
    assert result.stdout == ""
    r = json.loads((out / "r.json").read_text())

    assert REPORT_KEYS <= set(r)
    assert r["schema"] == "privaudit.report/1"
    assert r["tool"]["version"] == __version__
    datetime.fromisoformat(r["created"])
    assert r["seed"] == 0

    m = r["model"]
    assert {"path", "sha256", "format", "arch", "defense"} <= set(m)
    assert m["path"] == str(env.model)
    assert m["sha256"] == hashlib.sha256(env.model.read_bytes()).hexdigest()
    assert m["format"] == "privaudit"
    assert m["arch"]["num_downs"] == 5 and m["arch"]["ngf"] == 4 and m["arch"]["norm"] == "batch"
    assert m["defense"]["method"] == "none"

    d = r["data"]
    assert d["members"] == {"path": str(env.members), "count": 8, "resized": None}
    assert d["nonmembers"] == {"path": str(env.nonmembers), "count": 8, "resized": None}
    assert d["direction"] == "AtoB" and d["direction_source"] == "model"
    assert d["image_size"] == 32 and d["image_size_source"] == "model" and d["allow_small"] is True

    a = r["attack"]
    assert ATTACK_KEYS <= set(a)
    assert a["name"] == "reconstruction-loss"
    assert 0.0 <= a["auc"] <= 1.0
    lo, hi = a["auc_ci95"]
    assert 0.0 <= lo <= a["auc"] <= hi <= 1.0
    # 8 non-members: no FPR below 1/8 can be measured, so all three are null, never a number.
    assert a["tpr_at_fpr"] == {"0.001": None, "0.01": None, "0.1": None}
    assert 0.0 <= a["advantage"] <= 1.0
    assert a["balanced_accuracy"] == pytest.approx(0.5 * (1 + a["advantage"]))
    assert isinstance(a["threshold"], float)
    for k in ("member_loss", "nonmember_loss"):
        assert set(a[k]) == {"mean", "std"} and a[k]["mean"] > 0 and a[k]["std"] >= 0

    # per-sample scores: score = -loss, means agree with the report
    rows = list(csv.DictReader(io.StringIO((out / "s.csv").read_text())))
    assert len(rows) == 16
    assert [r_["name"] for r_ in rows[:8]] == [f"m{i:03d}.png" for i in range(8)]
    assert {r_["set"] for r_ in rows[:8]} == {"member"} and {r_["label"] for r_ in rows[8:]} == {"0"}
    for r_ in rows:
        assert float(r_["score"]) == pytest.approx(-float(r_["loss"]))
    member_mean = sum(float(r_["loss"]) for r_ in rows[:8]) / 8
    assert member_mean == pytest.approx(a["member_loss"]["mean"], rel=1e-6)

    for name in ("roc.png", "loss_hist.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in _files_under(out) if p.name.endswith(".tmp")]


def test_json_to_stdout_only(env):
    result = invoke(*attack_args(env, None, "--json", "-"))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stdout is exactly one JSON document
    assert report["schema"] == "privaudit.report/1"
    assert "AUC" in result.stderr and "AUC" not in result.stdout.replace('"auc', "")


def test_same_seed_same_report(env):
    r1 = json.loads(invoke(*attack_args(env, None, "--json", "-", "-q")).stdout)
    r2 = json.loads(invoke(*attack_args(env, None, "--json", "-", "-q")).stdout)
    r1.pop("created"), r2.pop("created")
    assert r1 == r2
    r3 = json.loads(invoke(*attack_args(env, None, "--json", "-", "-q", "--seed", "5")).stdout)
    assert r3["seed"] == 5
    assert r3["attack"]["auc"] == r1["attack"]["auc"]  # eval mode: the losses do not depend on the seed
    assert r3["attack"]["auc_ci95"] != r1["attack"]["auc_ci95"]  # the bootstrap does


def test_stochastic_samples_are_reproducible(env):
    def run(seed):
        result = invoke(*attack_args(env, env.dropout_model, "--stochastic", "--samples", "3", "--seed", seed, "--json", "-", "-q"))
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    a, b, c = run(0), run(0), run(1)
    assert a["attack"]["generator_mode"] == "stochastic-dropout"
    assert a["attack"]["samples"] == 3
    assert a["model"]["image_size"] == 64  # resized to the checkpoint's size
    a.pop("created"), b.pop("created")
    assert a == b
    assert c["attack"]["member_loss"] != a["attack"]["member_loss"]  # other dropout draws

    det = json.loads(invoke(*attack_args(env, env.dropout_model, "--json", "-", "-q")).stdout)
    assert det["attack"]["generator_mode"] == "eval"
    assert det["attack"]["member_loss"] != a["attack"]["member_loss"]


def test_fail_above_auc_exits_1(env, tmp_path):
    result = invoke(*attack_args(env, None, "--fail-above-auc", "0.0", "--json", tmp_path / "r.json", "-q"))
    assert result.exit_code == 1, result.output
    assert "exceeds --fail-above-auc" in result.stderr
    assert "Traceback" not in result.output
    assert json.loads((tmp_path / "r.json").read_text())["attack"]["auc"] > 0.0  # the report is still written
    assert invoke(*attack_args(env, None, "--fail-above-auc", "1.0", "-q")).exit_code == 0


# --- attack: bad input --------------------------------------------------------------------------


class _Malicious:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _make_case(case: str, env, tmp: Path) -> tuple[list, str | None]:
    """Return (attack arguments, a word the error line must contain) for one bad-input case."""
    model, members, extra = env.model, env.members, []
    mentions = None
    if case == "missing model":
        model = tmp / "nope.pt"
        mentions = "does not exist"
    elif case == "garbage model":
        model = tmp / "garbage.pt"
        model.write_bytes(b"\x00\x01garbage" * 100)
    elif case == "malicious model":
        model = tmp / "evil.pt"
        torch.save({"state_dict": {}, "x": _Malicious(str(tmp / "PWNED"))}, model)
        mentions = "refusing to load"
    elif case == "model is a folder":
        model = tmp
        mentions = "folder"
    elif case == "nan weights":
        ckpt = torch.load(env.model, weights_only=True)
        ckpt["state_dict"]["model.model.0.weight"][0, 0, 0, 0] = float("nan")
        model = tmp / "nan.pt"
        torch.save(ckpt, model)
        mentions = "non-finite"
    elif case == "missing members":
        members = tmp / "no_such_folder"
        mentions = "does not exist"
    elif case == "empty members":
        members = tmp / "empty"
        members.mkdir()
        mentions = "holds no images"
    elif case in ("non-image", "truncated image"):
        members = tmp / "members"
        members.mkdir()
        for p in env.members.iterdir():
            (members / p.name).write_bytes(p.read_bytes())
        bad = members / "zz_bad.png"
        if case == "non-image":
            bad.write_text("not an image")
            mentions = "zz_bad.png"
        else:
            data = (env.members / "m000.png").read_bytes()
            bad.write_bytes(data[: len(data) // 2])
            mentions = "zz_bad.png"
    elif case == "invalid direction":
        extra = ["--direction", "CtoD"]
        mentions = "--direction"
    elif case == "wrong ngf override":
        extra = ["--ngf", "8"]
        mentions = "model.model.0.weight"
    elif case == "samples without stochastic":
        extra = ["--samples", "3"]
        mentions = "--stochastic"
    elif case == "stochastic without dropout":
        extra = ["--stochastic"]
        mentions = "dropout"
    elif case == "fail-above-auc out of range":
        extra = ["--fail-above-auc", "2"]
    elif case == "wrong size":
        extra = ["--size", "48"]
        mentions = "--size"
    else:
        raise AssertionError(case)
    return ["attack", model, "--members", members, "--nonmembers", env.nonmembers, "--allow-small", *extra], mentions


BAD_CASES = [
    "missing model",
    "garbage model",
    "malicious model",
    "model is a folder",
    "nan weights",
    "missing members",
    "empty members",
    "non-image",
    "truncated image",
    "invalid direction",
    "wrong ngf override",
    "samples without stochastic",
    "stochastic without dropout",
    "fail-above-auc out of range",
    "wrong size",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(env, tmp_path, case):
    work = tmp_path / "work"
    work.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    args, mentions = _make_case(case, env, work)
    result = invoke(*args, "--json", out / "report.json", "--scores", out / "scores.csv", "--plot-dir", out / "plots")
    assert_bad_input(result, nothing_in=out, mentions=mentions)
    assert not (work / "PWNED").exists()


def test_unwritable_json_path_exits_2_before_any_work(env, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a regular file")
    out = tmp_path / "out"
    out.mkdir()
    result = invoke(*attack_args(env, None, "--json", blocker / "report.json", "--scores", out / "scores.csv", "--plot-dir", out / "plots"))
    assert_bad_input(result, nothing_in=out, mentions="not_a_folder")
    assert blocker.read_text() == "a regular file"


def test_unwritable_scores_path_exits_2(env, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = invoke(*attack_args(env, None, "--json", out / "r.json", "--scores", out / "missing_dir" / "s.csv"))
    assert_bad_input(result, nothing_in=out, mentions="missing_dir")


def test_json_path_is_a_directory_exits_2(env, tmp_path):
    result = invoke(*attack_args(env, None, "--json", tmp_path))
    assert_bad_input(result, mentions="directory")


# --- the attack works: an overfit teacher leaks membership -----------------------------------------


@pytest.mark.slow
def test_overfit_teacher_is_exposed(overfit_teacher):
    ckpt, members, nonmembers = overfit_teacher
    result = invoke("attack", ckpt, "--members", members, "--nonmembers", nonmembers, "--json", "-", "-q")
    assert result.exit_code == 0, result.output
    a = json.loads(result.stdout)["attack"]
    assert a["auc"] > 0.8, a
    assert a["member_loss"]["mean"] < a["nonmember_loss"]["mean"]
    assert json.loads(result.stdout)["data"]["members"]["count"] == OVERFIT_PAIRS
    # The CI gate blocks such a model.
    gate = invoke("attack", ckpt, "--members", members, "--nonmembers", nonmembers, "--fail-above-auc", "0.8", "-q")
    assert gate.exit_code == 1, gate.output
