"""benchmarks/segmentation_study.py in --quick mode: every model and its shadow trained, audited with
the three attacks, summarised into the Markdown document; a rerun reuses every stage."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "segmentation_study.py"

pytestmark = pytest.mark.slow  # trains twelve toy models


def test_quick_study_runs_and_resumes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("segmentation_study", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)
    spec.loader.exec_module(mod)
    out = tmp_path / "study"
    argv = ["--quick", "--out", str(out), "--bootstrap", "20", "--members", "12"]
    summary = mod.run(argv)
    names = [r["model"] for r in summary["rows"]]
    assert names == ["regular", "argmax", "gauss0.1", "gauss0.5", "dmp", "dpsgd"]
    for name in names:
        report = json.loads((out / "reports" / f"{name}.json").read_text())
        assert report["task"] == "segmentation" and {"loss", "label-only", "loss-map"} <= set(report["attacks"])
        assert report["segmentation"]["loss_map"]["shadow"]["path"].endswith(f"shadow_{name}.pt")  # the adaptive shadow
        assert 0 <= report["utility"]["miou"] <= 1
    rows = {r["model"]: r for r in summary["rows"]}
    assert rows["argmax"]["loss"]["auc"] == pytest.approx(rows["argmax"]["label_only"]["auc"])  # labels only: loss = label-only
    assert rows["argmax"]["miou"] == pytest.approx(rows["regular"]["miou"])  # argmax keeps the labels
    assert rows["dpsgd"]["epsilon"] > 0 and rows["regular"]["loss_map_regular_shadow"] is None and rows["dmp"]["loss_map_regular_shadow"]
    doc = (out / "segmentation.md").read_text()
    assert "| regular (overfit) |" in doc and "Best trade-off" in doc and "Segmentations-Leak" in doc
    timings = json.loads((out / "timings.json").read_text())

    def boom(*args, **kwargs):
        raise AssertionError("a finished stage was redone")

    monkeypatch.setattr(mod, "train_segmentation", boom)
    monkeypatch.setattr(mod, "defend", boom)
    monkeypatch.setattr(mod, "evaluate", boom)
    again = mod.run(argv)
    assert again["rows"] == summary["rows"]
    assert json.loads((out / "timings.json").read_text()) == timings
