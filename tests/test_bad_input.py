"""Bad input found in review: each ends in exit 2 (or 1 for a failed gate), one line on stderr,
no traceback, and no output files written."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_generator, write_pairs
from privaudit.cli.app import app

runner = CliRunner()


def _bad(result, needle: str | None = None) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    if needle:
        assert needle in result.stderr


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("d")
    write_pairs(root / "m", 10, seed=1)  # 10: the fewest an attack accepts without --allow-small
    write_pairs(root / "n", 10, seed=2)
    return root


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_export_archive_with_a_pickled_payload_is_refused_and_nothing_runs(tmp_path, data):
    net = tiny_generator()
    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(2, 3, 32, 32),)), good)
    marker = tmp_path / "PWNED"
    payload = io.BytesIO()
    torch.save((_Evil(marker),), payload)
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(evil, "w") as zout:
        for info in zin.infolist():
            blob = payload.getvalue() if info.filename.endswith("sample_inputs/model.pt") else zin.read(info.filename)
            zout.writestr(info, blob)
    ok = runner.invoke(app, ["attack", str(good), "--members", str(data / "m"), "--nonmembers", str(data / "n"), "--direction", "AtoB", "--quiet"])
    assert ok.exit_code == 0, ok.output
    r = runner.invoke(app, ["attack", str(evil), "--members", str(data / "m"), "--nonmembers", str(data / "n"), "--direction", "AtoB", "--quiet"])
    _bad(r, "refusing")
    assert not marker.exists()


def test_failed_plot_leaves_no_outputs(tmp_path, tiny_checkpoint, data):
    plots = tmp_path / "plots"
    (plots / "roc.png").mkdir(parents=True)
    out = tmp_path / "r.json"
    r = runner.invoke(app, ["attack", str(tiny_checkpoint), "--members", str(data / "m"), "--nonmembers", str(data / "n"),
                            "--json", str(out), "--plot-dir", str(plots)])
    _bad(r, "roc.png")
    assert not out.exists()


def test_plot_folder_is_not_created_when_the_data_is_bad(tmp_path, tiny_checkpoint):
    empty = tmp_path / "empty"
    empty.mkdir()
    plots = tmp_path / "new" / "plots"
    r = runner.invoke(app, ["attack", str(tiny_checkpoint), "--members", str(empty), "--nonmembers", str(empty), "--plot-dir", str(plots)])
    _bad(r, "no images")
    assert not plots.exists() and not plots.parent.exists()


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_out_of_range_seed(tiny_checkpoint, data, seed):
    r = runner.invoke(app, ["attack", str(tiny_checkpoint), "--members", str(data / "m"), "--nonmembers", str(data / "n"), "--seed", seed])
    _bad(r, "--seed")


def test_train_rejects_zero_width_discriminator(tmp_path, data):
    r = runner.invoke(app, ["train", str(data / "m"), "--ngf", "4", "--ndf", "0", "--epochs", "1", "--out", str(tmp_path / "t.pt")])
    _bad(r, "--ndf")
    assert not (tmp_path / "t.pt").exists()


@pytest.mark.parametrize("flag, value", [("--batch-size", "0"), ("--ngf", "0"), ("--lambda-l1", "nan")])
def test_defend_rejects_zero_sizes_instead_of_defaulting(tmp_path, tiny_checkpoint, data, flag, value):
    out = tmp_path / "s.pt"
    r = runner.invoke(app, ["defend", str(tiny_checkpoint), "--method", "dmp", "--proxy", str(data / "n"), "--epochs", "1", flag, value, "--out", str(out)])
    _bad(r, flag)
    assert not out.exists()


def test_resume_with_nothing_left_to_train(tmp_path, data):
    out = tmp_path / "t.pt"
    args = ["train", str(data / "m"), "--ngf", "4", "--ndf", "8", "--batch-size", "4", "--no-augment", "--out", str(out), "--quiet"]
    assert runner.invoke(app, args + ["--epochs", "2", "--keep-state"]).exit_code == 0
    before = out.read_bytes()
    r = runner.invoke(app, args + ["--epochs", "1", "--resume"])
    _bad(r, "already holds 2 epochs")
    assert out.read_bytes() == before


def test_gauss_rejects_a_size_the_model_cannot_take(tmp_path, tiny_checkpoint):
    for size in ("-5", "30"):
        out = tmp_path / f"g{size}.pt"
        r = runner.invoke(app, ["defend", str(tiny_checkpoint), "--method", "gauss", "--sigma", "0.1", "--size", size, "--out", str(out)])
        _bad(r, "--size")
        assert not out.exists()


def test_dp_model_without_noise_fails_an_epsilon_gate(tmp_path, data):
    model = tmp_path / "dp0.pt"
    r = runner.invoke(app, ["defend", "--method", "dpsgd", "--train-data", str(data / "m"), "--ngf", "4", "--ndf", "8", "--epochs", "1",
                            "--batch-size", "2", "--noise-multiplier", "0", "--out", str(model), "--quiet"])
    assert r.exit_code == 0, r.output
    rep = tmp_path / "dp0.json"
    r = runner.invoke(app, ["attack", str(model), "--members", str(data / "m"), "--nonmembers", str(data / "n"), "--json", str(rep), "--quiet"])
    assert r.exit_code == 0, r.output
    d = json.loads(rep.read_text())["model"]["defense"]
    assert d["epsilon"] is None and d["epsilon_infinite"] is True
    r = runner.invoke(app, ["gate", str(rep), "--max-epsilon", "10", "--no-policy"])
    assert r.exit_code == 1, r.output


def _report(tmp_path: Path, tiny_checkpoint: Path, data: Path) -> dict:
    rep = tmp_path / "ok.json"
    r = runner.invoke(app, ["attack", str(tiny_checkpoint), "--members", str(data / "m"), "--nonmembers", str(data / "n"), "--json", str(rep), "--quiet"])
    assert r.exit_code == 0, r.output
    return json.loads(rep.read_text())


@pytest.mark.parametrize("field, value", [("auc", "high"), ("tpr_at_fpr", [1]), ("roc", {"fpr": [0, 1], "tpr": [0]})])
def test_report_with_malformed_fields(tmp_path, tiny_checkpoint, data, field, value):
    good = _report(tmp_path, tiny_checkpoint, data)
    bad = json.loads(json.dumps(good))
    bad["attack"][field] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    md, png = tmp_path / "o.md", tmp_path / "o.png"
    r = runner.invoke(app, ["report", str(tmp_path / "ok.json"), str(path), "--markdown", str(md), "--plot", str(png), "--roc", str(tmp_path / "roc.png")])
    if field == "roc":  # a broken curve is left out of the overlay; the rest renders
        assert r.exit_code == 0, r.output
    else:
        _bad(r, "malformed")
        assert not md.exists() and not png.exists()


def test_report_png_to_stdout_is_refused(tmp_path, tiny_checkpoint, data):
    _report(tmp_path, tiny_checkpoint, data)
    r = runner.invoke(app, ["report", str(tmp_path / "ok.json"), "--plot", "-"])
    _bad(r, "--plot")


def test_demo_rejects_an_auc_limit_outside_0_1(tmp_path):
    r = runner.invoke(app, ["demo", "--quick", "--max-auc", "2", "--out", str(tmp_path / "d")])
    _bad(r, "--max-auc")
    assert not (tmp_path / "d").exists()


def test_same_name_twice_in_a_folder_pair(tmp_path, tiny_checkpoint):
    root = write_pairs(tmp_path / "ab", 3, layout="folders")
    (root / "A" / "img000.png").rename(root / "A" / "img000.jpg")
    write_pairs(tmp_path / "tmp", 1, layout="folders")
    (tmp_path / "tmp" / "A" / "img000.png").rename(root / "A" / "img000.png")
    r = runner.invoke(app, ["attack", str(tiny_checkpoint), "--members", str(root), "--nonmembers", str(root)])
    _bad(r, "img000")


@pytest.mark.parametrize("content", [bytes(range(256)) * 8, b"hello world\n"])
def test_garbage_model_files_are_named_not_misread_as_malicious(tmp_path, data, content):
    model = tmp_path / "m.pt"
    model.write_bytes(content)
    r = runner.invoke(app, ["attack", str(model), "--members", str(data / "m"), "--nonmembers", str(data / "n")])
    _bad(r, "m.pt")
    assert "could run code" not in r.stderr
