"""The built-in demo: procedural facades (deterministic per seed) and `privaudit demo --quick` end to end.

The demo run gets a random Inception weights file through $PRIVAUDIT_INCEPTION_WEIGHTS (so its
reports carry KID/NKID), an empty torch hub folder and a temporary $HOME (so nothing lands in the
user's feature cache); Inception is fed 75x75 instead of 299x299 to keep it fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from privaudit.cli.app import app
from privaudit.demo import DemoConfig, build_data, make_facades, write_splits
from privaudit.evaluation.inception import WEIGHTS_ENV

from inception_helpers import make_random_inception_weights

pytestmark = pytest.mark.usefixtures("fast_cpu_inception")  # Inception at 75x75 px, one thread (conftest.py)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# --- procedural data ------------------------------------------------------------------------------


def test_make_facades_is_deterministic_per_seed():
    photos, labels = make_facades(3, size=32, seed=5)
    again_p, again_l = make_facades(3, size=32, seed=5)
    other_p, other_l = make_facades(3, size=32, seed=6)
    for x in (photos, labels):
        assert x.shape == (3, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(photos, again_p) and torch.equal(labels, again_l)
    assert not torch.equal(photos, other_p)
    assert not torch.equal(labels, other_l)
    assert make_facades(2, size=16, seed=0)[0].shape == (2, 3, 16, 16)
    # a photo is not its label map
    assert not torch.equal(photos, labels)


def test_write_splits_writes_disjoint_aligned_splits_once(tmp_path):
    root = write_splits(tmp_path / "d", 3, size=16, seed=7)
    names = {s: sorted(p.name for p in (root / s).iterdir()) for s in ("train", "val", "test")}
    assert all(len(v) == 3 for v in names.values())
    pixels = {s: [np.asarray(Image.open(root / s / n)) for n in names[s]] for s in names}
    assert pixels["train"][0].shape == (16, 32, 3)  # aligned: photo | label side by side
    photos, labels = make_facades(3, size=16, seed=8)  # val is the second split: seed + 1
    assert np.array_equal(pixels["val"][0][:, :16], photos[0].permute(1, 2, 0).numpy())
    assert np.array_equal(pixels["val"][0][:, 16:], labels[0].permute(1, 2, 0).numpy())
    assert not any(np.array_equal(a, b) for a in pixels["train"] for b in pixels["test"])
    # a split already there is kept (a resumed benchmark reads the same data)
    (root / "val" / names["val"][0]).unlink()
    write_splits(root, 3, size=16, seed=99)
    assert len(list((root / "val").iterdir())) == 2
    assert np.array_equal(np.asarray(Image.open(root / "train" / names["train"][0])), pixels["train"][0])


def test_build_data_writes_aligned_pngs(tmp_path):
    cfg = DemoConfig(size=16, n_train=3, n_proxy=2, n_test=4)
    paths = build_data(tmp_path, cfg)
    assert set(paths) == {"train", "proxy", "test"}
    for name, n in (("train", 3), ("proxy", 2), ("test", 4)):
        files = sorted(paths[name].glob("*.png"))
        assert len(files) == n, (name, files)
        for f in files:
            with Image.open(f) as im:
                assert im.size == (2 * 16, 16) and im.mode == "RGB"
    # train and test come from different seeds: disjoint images
    train = Image.open(paths["train"] / "train_0000.png").tobytes()
    test = Image.open(paths["test"] / "test_0000.png").tobytes()
    assert train != test
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


# --- privaudit demo ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("demo")
    weights = make_random_inception_weights(root / "random-inception.pth")
    (root / "home").mkdir()
    (root / "torch_home").mkdir()
    out = root / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(WEIGHTS_ENV, str(weights))
        mp.setenv("HOME", str(root / "home"))
        mp.setenv("TORCH_HOME", str(root / "torch_home"))
        result = invoke("demo", "--quick", "--out", out)
    return SimpleNamespace(root=root, out=out, result=result)


@pytest.mark.slow
def test_demo_quick_runs_the_whole_pipeline(demo_run):
    result, out = demo_run.result, demo_run.out
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    for name in ("teacher.pt", "akd.pt", "teacher.json", "akd.json", "comparison.md", "tradeoff.png", "summary.json"):
        assert (out / name).is_file(), name
    assert (out / "tradeoff.png").read_bytes()[:8] == PNG_SIGNATURE
    reports = {n: json.loads((out / f"{n}.json").read_text()) for n in ("teacher", "akd")}
    for name, r in reports.items():
        assert r["schema"] == "privaudit.report/1"
        assert 0.0 <= r["attack"]["auc"] <= 1.0
        assert r["utility"]["nkid"] is not None  # the weights came from $PRIVAUDIT_INCEPTION_WEIGHTS
        assert r["utility"]["kid_subset_size"] == r["data"]["nonmembers"]["count"]
    assert reports["teacher"]["model"]["defense"]["method"] == "none"
    assert reports["akd"]["model"]["defense"]["method"] == "akd"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kid"] is True
    assert summary["teacher_auc"] == reports["teacher"]["attack"]["auc"]
    assert summary["akd_auc"] == reports["akd"]["attack"]["auc"]
    md_rows = [line for line in (out / "comparison.md").read_text().splitlines() if line.startswith("| ")]
    assert len(md_rows) == 3 and md_rows[1].startswith("| teacher |") and md_rows[2].startswith("| akd |")
    # the gate's verdict for both models, on stderr; stdout stays clean
    for name in ("teacher", "akd"):
        assert any(line.startswith(f"gate --max-auc 0.6: {name} ") and ("PASS" in line or "FAIL" in line) for line in result.stderr.splitlines()), result.stderr
    assert result.stdout == ""
    # nothing half-written, and nothing in the user's feature cache outside the temporary $HOME
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert list((demo_run.root / "torch_home").iterdir()) == []


def test_demo_out_below_a_file_exits_2(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = invoke("demo", "--quick", "--out", blocker / "demo")
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("privaudit: error: ") and "a_file" in lines[0], lines[0]
    assert blocker.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


# --- progress: the stage callbacks (library level) ------------------------------------------------


def test_run_demo_reports_each_stage_with_its_progress_counts(tmp_path, monkeypatch):
    from privaudit.demo import STAGES, run_demo, stage_totals

    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no Inception weights: KID is skipped
    cfg = DemoConfig(size=32, n_train=4, n_proxy=3, n_test=5, ngf=4, teacher_epochs=2, student_epochs=3, batch_size=2)
    events: list[tuple] = []
    run_demo(tmp_path / "out", cfg, on_stage=lambda key, text, total: events.append(("stage", key, total)),
             on_progress=lambda p: events.append(("progress", p)))

    # group the progress events under the stage that was running
    order: list[tuple[str, int]] = []
    seen: dict[str, list] = {}
    for kind, *rest in events:
        if kind == "stage":
            order.append((rest[0], rest[1]))
            seen[rest[0]] = []
        else:
            seen[order[-1][0]].append(rest[0])
    # images written; steps = epochs x ceil(n / batch size); images through the generator (members + non-members)
    expected = {"data": 12, "teacher": 2 * 2, "akd": 3 * 2, "evaluate:teacher": 9, "evaluate:akd": 9}
    assert stage_totals(cfg) == expected
    assert order == list(expected.items()) and [k for k, _ in order] == list(STAGES)

    for key, total in expected.items():
        mine = seen[key]
        assert mine and all(p.stage == key and p.total == total for p in mine), key
        done = [p.done for p in mine]
        assert done == sorted(done) and done[-1] == total, (key, done)
        if key in ("teacher", "akd"):
            assert done == list(range(1, total + 1))  # one event per training step
            epochs = 2 if key == "teacher" else 3
            assert [(p.epoch, p.step) for p in mine] == [(e, s) for e in range(epochs) for s in range(2)]
            assert {(p.epochs, p.steps_per_epoch) for p in mine} == {(epochs, 2)}
            assert set(mine[-1].losses) == {"D_real", "D_fake", "G_GAN", "G_L1"}
        else:
            assert all(p.epochs is None and p.losses == {} for p in mine)
    assert [p.done for p in seen["data"]] == list(range(1, 13))  # one event per image
    assert [p.done for p in seen["evaluate:teacher"]] == [4, 9]  # members, then non-members (batch size 32)
