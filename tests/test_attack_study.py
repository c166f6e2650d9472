"""benchmarks/attack_study.py in --quick mode: every model trained, its online references built,
attacked with and without them, summarised; a rerun reuses every stage."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "attack_study.py"

pytestmark = pytest.mark.slow  # trains four toy models and their references


def test_quick_study_runs_and_resumes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("attack_study", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)
    spec.loader.exec_module(mod)
    out = tmp_path / "study"
    argv = ["--quick", "--out", str(out), "--device", "cpu", "--bootstrap", "20"]
    summary = mod.run(argv)
    assert {r["model"] for r in summary["rows"]} == {"regular", "dmp", "akd", "dpsgd"}
    for model in ("regular", "dmp", "akd", "dpsgd"):
        report = json.loads((out / "reports" / f"{model}.json").read_text())
        assert report["schema"] == "privaudit.report/2" and report["references"]["count"] == 2 and report["references"]["mode"] == "online"
        assert {"loss", "calibrated", "reference-only"} <= set(report["attacks"])  # 2 references: 1 IN and 1 OUT per pair
        assert "lira-online" in report["references"]["skipped"]
        assert sum(r["strongest"] for r in summary["rows"] if r["model"] == model) == 1
    dp = [r for r in summary["rows"] if r["model"] == "dpsgd"]
    assert all(r["claimed_epsilon"] is not None and r["epsilon_lb"] >= 0 for r in dp)
    assert (out / "summary.md").read_text().startswith("| model | attack |")
    timings = json.loads((out / "timings.json").read_text())

    def boom(*args, **kwargs):
        raise AssertionError("a finished stage was redone")

    for name in ("train", "defend", "attack"):
        monkeypatch.setattr(mod, name, boom)
    assert mod.run(argv)["rows"] == summary["rows"]  # everything reused: references too (build_references reuses finished ones)
    assert json.loads((out / "timings.json").read_text()) == timings
