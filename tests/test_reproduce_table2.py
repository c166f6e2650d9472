"""benchmarks/reproduce_table2.py in --quick mode: every method trained, audited and summarised;
a second run reuses every checkpoint and report; an interrupted training continues where it stopped."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce_table2.py"
MODELS = ["regular", "gauss_s0.1", "gauss_s0.3", "dpsgd_n1", "dpsgd_n0.1", "dmp", "akd"]

pytestmark = pytest.mark.slow  # every test here runs the benchmark (quick mode: several trainings)


@pytest.fixture
def table2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    """The script as a module, with no Inception weights to be found (KID is skipped)."""
    monkeypatch.delenv("PRIVAUDIT_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    spec = importlib.util.spec_from_file_location("reproduce_table2", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)  # dataclasses look their module up while it loads
    spec.loader.exec_module(mod)
    return mod


def _forbid(monkeypatch: pytest.MonkeyPatch, mod: ModuleType, *names: str) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("a finished checkpoint or report was redone")

    for name in names:
        monkeypatch.setattr(mod, name, boom)


def test_quick_run_summarises_every_method_and_reuses_checkpoints(table2, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert table2.main(["--quick", "--out", str(out)]) == 0

    md = (out / "summary.md").read_text(encoding="utf-8")
    assert (out / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert list(summary["models"]) == MODELS
    assert {m["method"] for m in summary["models"].values()} == set(table2.METHODS)
    assert summary["seeds"] == [0] and summary["kid"] is False and "not found" in summary["kid_skipped"]
    for name, m in summary["models"].items():
        auc = m["per_seed"]["0"]["auc"]
        assert 0.0 <= auc <= 1.0, name
        assert m["mean"]["auc"] == auc and m["std"]["auc"] is None  # one seed: no spread
        assert m["mean"]["nkid"] is None
        assert m["mean"]["sharpness"] > 0, name
        assert (m["mean"]["proxy_auc"] is not None) == (m["method"] in ("dmp", "akd")), name
        assert (m["mean"]["epsilon"] is not None) == (m["method"] == "dpsgd"), name
    # the larger noise multiplier spends less ε and faces the paper's more private DP-SGD row
    dp_hi, dp_lo = summary["models"]["dpsgd_n1"], summary["models"]["dpsgd_n0.1"]
    assert dp_hi["mean"]["epsilon"] < dp_lo["mean"]["epsilon"]
    assert (dp_hi["paper"]["auc"], dp_lo["paper"]["auc"]) == (58.06, 89.20)
    assert summary["models"]["akd"]["paper"] == {"row": "AKD", "auc": 57.56, "nkid": 7.80}
    assert summary["command"].endswith("benchmarks/reproduce_table2.py --quick --out " + str(out))
    assert summary["machine"]["torch"] == torch.__version__
    assert summary["timings_s"]["seed0/akd/train"]["outcome"] == "trained"
    assert "KID was skipped" in md and "| AKD |" in md and "57.56" in md and "96.46" in md
    assert "| AKD |" in capsys.readouterr().out

    # Second run: nothing is trained or evaluated again, and no file is rewritten.
    files = sorted((out / "seed0").glob("*.pt")) + sorted((out / "seed0").glob("*.json"))
    assert len(files) == 3 * len(MODELS)  # checkpoint, report, training time
    before = {f: f.stat().st_mtime_ns for f in files}
    _forbid(monkeypatch, table2, "train", "defend", "evaluate")
    assert table2.main(["--quick", "--out", str(out)]) == 0
    assert {f: f.stat().st_mtime_ns for f in files} == before
    again = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert {v["outcome"] for v in again["timings_s"].values()} == {"reused"}
    # a reused stage reports the seconds it took when it was done, so the summary still adds up
    for key, v in summary["timings_s"].items():
        first = again["timings_s"][key]["first"]
        assert first["outcome"] == v["outcome"] and 0 < first["s"] <= v["s"], key  # the stage less its bookkeeping
    assert 0 < again["stages_s"] <= summary["stages_s"]
    assert "| seed0/akd/train | reused; first trained |" in (out / "summary.md").read_text(encoding="utf-8")
    assert again["models"]["akd"]["per_seed"] == summary["models"]["akd"]["per_seed"]

    # OUT holds models of other settings: refused before any work, exit code 2
    assert table2.main(["--quick", "--out", str(out), "--direction", "AtoB"]) == 2
    assert "other settings (direction)" in capsys.readouterr().err


def test_interrupted_training_resumes_to_the_same_student(table2, tmp_path, monkeypatch):
    real_defend = table2.defend

    def interrupted(*args, **kwargs):
        def on_step(epoch, step, steps, losses):
            if epoch == 1:  # epoch 1 is saved, epoch 2 has begun
                raise KeyboardInterrupt

        return real_defend(*args, **{**kwargs, "on_step": on_step})

    out = tmp_path / "out"
    argv = ["--quick", "--out", str(out), "--methods", "akd"]
    monkeypatch.setattr(table2, "defend", interrupted)
    with pytest.raises(KeyboardInterrupt):
        table2.main(argv)
    seed0 = out / "seed0"
    assert (seed0 / "akd.partial.pt.state").exists() and not (seed0 / "akd.pt").exists()

    monkeypatch.setattr(table2, "defend", real_defend)
    assert table2.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["timings_s"]["seed0/akd/train"]["outcome"] == "resumed"
    assert list(summary["models"]) == ["akd"]
    assert (seed0 / "akd.pt").exists() and not list(seed0.glob("*.partial*"))

    fresh = tmp_path / "fresh"
    assert table2.main(["--quick", "--out", str(fresh), "--methods", "akd"]) == 0
    resumed_sd = torch.load(seed0 / "akd.pt", weights_only=True)["state_dict"]
    fresh_sd = torch.load(fresh / "seed0" / "akd.pt", weights_only=True)["state_dict"]
    assert resumed_sd.keys() == fresh_sd.keys()
    assert all(torch.equal(resumed_sd[k], fresh_sd[k]) for k in resumed_sd)


def test_sweep_points_train_on_the_sweep_seeds_only(table2, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--quick", "--out", str(out), "--seeds", "0", "1", "--methods", "regular", "gauss", "--sweep"]
    assert table2.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    grid = {f"gauss_s{x:g}" for x in table2.SWEEP["gauss"]} - {"gauss_s0.1", "gauss_s0.3"}
    assert set(summary["models"]) == {"regular", "gauss_s0.1", "gauss_s0.3"} | grid
    for name, m in summary["models"].items():
        assert m["sweep"] == (name in grid), name
        assert list(m["per_seed"]) == (["0"] if name in grid else ["0", "1"]), name
        assert (m["std"]["auc"] is None) == (name in grid), name  # one seed: no spread
    assert not list((out / "seed1").glob("gauss_s0.05*")) and (out / "seed0" / "gauss_s0.05.pt").exists()
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "## Sweep" in md and "| Gauss σ=0.05 | 1 |" in md and "| regular | 2 |" in md
    # more output noise costs fidelity on the very same teacher
    l1 = [summary["models"][f"gauss_s{x:g}"]["per_seed"]["0"]["l1"] for x in sorted(table2.SWEEP["gauss"])]
    assert l1 == sorted(l1)

    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["settings"]["sweep_seeds"] == [0]

    # sweep points on another seed than the first; seeds outside --seeds are refused
    assert table2.main([*argv, "--sweep-seeds", "1"]) == 0
    assert (out / "seed1" / "gauss_s0.05.pt").exists()
    models = json.loads((out / "summary.json").read_text(encoding="utf-8"))["models"]
    assert list(models["gauss_s0.05"]["per_seed"]) == ["1"]
    assert table2.main([*argv, "--sweep-seeds", "2"]) == 2
    assert table2.main(argv[:-1] + ["--sweep-seeds", "0"]) == 2  # without --sweep
    err = capsys.readouterr().err
    assert "--sweep-seeds 2 must be among --seeds 0 1" in err and "--sweep-seeds needs --sweep" in err

    # a report written before the summary read sharpness is evaluated again; the others are reused
    rep_file = out / "seed1" / "regular.json"
    rep = json.loads(rep_file.read_text(encoding="utf-8"))
    del rep["utility"]["sharpness"]
    rep_file.write_text(json.dumps(rep), encoding="utf-8")
    assert table2.main(argv) == 0
    timings = json.loads((out / "summary.json").read_text(encoding="utf-8"))["timings_s"]
    assert [k for k, v in timings.items() if v["outcome"] != "reused"] == ["seed1/regular/evaluate"]
    assert "sharpness" in json.loads(rep_file.read_text(encoding="utf-8"))["utility"]


def test_dp_sweep_has_its_noise_grid_and_a_no_dp_control(table2, tmp_path):
    out = tmp_path / "out"
    assert table2.main(["--quick", "--out", str(out), "--methods", "dpsgd", "--sweep"]) == 0
    models = json.loads((out / "summary.json").read_text(encoding="utf-8"))["models"]
    assert set(models) == {f"dpsgd_n{x:g}" for x in table2.SWEEP["dpsgd"]} | {"nodp_budget"}
    assert not (out / "seed0" / "regular.pt").exists()  # DP-SGD and its control need no teacher
    control = torch.load(out / "seed0" / "nodp_budget.pt", weights_only=True)
    assert control["arch"]["norm"] == "group" and models["nodp_budget"]["mean"]["epsilon"] is None
    assert "| DP-SGD noise=0 | 1 |" in (out / "summary.md").read_text(encoding="utf-8") and "| ∞ |" in (out / "summary.md").read_text(encoding="utf-8")


def test_no_train_summarises_what_out_holds(table2, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    argv = ["--quick", "--out", str(out), "--methods", "regular", "gauss"]
    assert table2.main([*argv, "--no-train"]) == 2  # nothing trained yet
    assert "holds no finished model" in capsys.readouterr().err
    assert table2.main([*argv, "--seeds", "0"]) == 0
    (out / "seed0" / "gauss_s0.3.pt").unlink()
    _forbid(monkeypatch, table2, "train", "defend")
    assert table2.main([*argv, "--seeds", "0", "1", "--no-train"]) == 0
    models = json.loads((out / "summary.json").read_text(encoding="utf-8"))["models"]
    assert list(models) == ["regular", "gauss_s0.1"]  # gauss σ=0.3 is in OUT for no seed
    assert all(list(m["per_seed"]) == ["0"] for m in models.values())
    timings = json.loads((out / "summary.json").read_text(encoding="utf-8"))["timings_s"]
    assert timings["seed0/regular/train"]["outcome"] == "reused" and timings["seed0/regular/train"]["first"]["outcome"] == "trained"
    assert "seed1/regular/train" not in timings
    assert not list((out / "seed1").glob("*.pt"))
    assert table2.main([*argv, "--no-train", "--force"]) == 2
