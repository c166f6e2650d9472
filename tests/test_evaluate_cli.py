"""`privaudit evaluate`, `report` and `gate` driven through the real app (CliRunner).

KID runs on a randomly initialised Inception weights file (tests/inception_helpers.py: BatchNorm
recalibrated, so KID is not 0) and tiny 32px pairs; Inception is fed 75x75 instead of 299x299
except in the one comparison with ``torch_fidelity.calculate_metrics``, which runs at the real size.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import write_pairs
from privaudit.cli.app import app
from privaudit.evaluation.inception import INCEPTION_WEIGHTS_FILENAME, WEIGHTS_ENV

from inception_helpers import make_random_inception_weights

pytestmark = pytest.mark.usefixtures("fast_cpu_inception")  # Inception at 75x75 px, one thread (conftest.py)

N_PAIRS = 8
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_error_line(result, code: int = 2, mentions: str | None = None) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("privaudit: error: "), lines[0]
    assert "Traceback" not in result.output
    if mentions is not None:
        assert mentions in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_checkpoint) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("evaluate_cli")
    return SimpleNamespace(
        root=root,
        model=tiny_checkpoint,
        members=write_pairs(root / "members", N_PAIRS, seed=1, prefix="m"),
        nonmembers=write_pairs(root / "nonmembers", N_PAIRS, seed=2, prefix="n"),
        proxy=write_pairs(root / "proxy", 4, seed=3, prefix="p"),
        weights=make_random_inception_weights(root / "random-inception.pth"),
    )


def evaluate_args(env, *extra) -> list:
    # 8 pairs a side (4 proxy pairs) keep KID fast; below 10 evaluate needs --allow-small.
    return ["evaluate", env.model, "--members", env.members, "--nonmembers", env.nonmembers, "--bootstrap", "50", "-q", "--allow-small", *extra]


@pytest.fixture(scope="module")
def evaluated(env) -> SimpleNamespace:
    """Two evaluate runs sharing one feature cache folder (the second reads the cache)."""
    cache = env.root / "features"
    out = env.root / "reports"
    out.mkdir()
    reports = []
    for i in (1, 2):
        path = out / f"eval{i}.json"
        result = invoke(*evaluate_args(env, "--inception-weights", env.weights, "--feature-cache", cache, "--json", path))
        assert result.exit_code == 0, result.output
        reports.append(path)
    return SimpleNamespace(path=reports[0], report=json.loads(reports[0].read_text()), second=json.loads(reports[1].read_text()), cache=cache)


@pytest.fixture(scope="module")
def no_kid_report(env) -> Path:
    path = env.root / "nokid.json"
    result = invoke(*evaluate_args(env, "--no-kid", "--json", path))
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def attack_report(env) -> Path:
    path = env.root / "attack.json"
    result = invoke("attack", env.model, "--members", env.members, "--nonmembers", env.nonmembers, "--bootstrap", "50", "-q", "--allow-small", "--json", path)
    assert result.exit_code == 0, result.output
    return path


# --- evaluate: the report ---------------------------------------------------------------------


def test_evaluate_report_has_utility_and_gap(evaluated):
    r = evaluated.report
    assert r["schema"] == "privaudit.report/1"
    u, g = r["utility"], r["generalization_gap"]
    assert {"kid", "kid_std", "kid_black", "nkid", "l1", "psnr", "ssim", "sharpness", "feature_extractor", "kid_subset_size"} <= set(u)
    assert {"nkid_train", "nkid_test", "gap", "l1_train", "l1_test"} <= set(g)
    for k in ("kid", "kid_std", "kid_black", "nkid", "l1", "psnr", "ssim", "sharpness"):
        assert isinstance(u[k], float) and math.isfinite(u[k]), (k, u[k])
    assert u["kid"] != 0.0 and u["kid_black"] > 0.0 and u["kid_std"] > 0.0
    assert u["nkid"] == pytest.approx(u["kid"] / u["kid_black"], rel=1e-9)
    assert g["nkid_test"] == pytest.approx(u["nkid"], rel=1e-12)
    assert g["gap"] == pytest.approx(g["nkid_test"] - g["nkid_train"], rel=1e-9, abs=1e-12)
    assert u["kid_subset_size"] == N_PAIRS  # 1000 clamped to the set size
    assert u.get("kid_skipped") is not True
    fe = u["feature_extractor"]
    assert fe["name"] == "inception-v3-compat" and fe["feature_layer"] == "2048"
    # utility L1 is on uint8-rounded outputs, the attack loss on the float outputs
    assert u["l1"] == pytest.approx(r["attack"]["nonmember_loss"]["mean"], abs=1e-2)
    assert g["l1_test"] == u["l1"]
    assert g["l1_train"] == pytest.approx(r["attack"]["member_loss"]["mean"], abs=1e-2)
    assert 0.0 <= u["ssim"] <= 1.0 and u["psnr"] > 0.0
    assert r["data"]["members"]["count"] == N_PAIRS and r["data"]["nonmembers"]["count"] == N_PAIRS


@pytest.mark.slow
def test_report_kid_equals_torch_fidelity_calculate_metrics(env, tmp_path, monkeypatch):
    """The report's KID is torch-fidelity's KID of the model's outputs against the non-member targets."""
    import torch_fidelity
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from privaudit.data.images import load_pairs, to_uint8
    from privaudit.models.checkpoint import load_model
    from privaudit.models.inference import iter_outputs

    monkeypatch.setattr(FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 299)  # the real thing here
    members = write_pairs(tmp_path / "m", 6, seed=11, prefix="m")
    nonmembers = write_pairs(tmp_path / "n", 6, seed=12, prefix="n")
    result = invoke("evaluate", env.model, "--members", members, "--nonmembers", nonmembers, "--inception-weights", env.weights,
                    "--no-feature-cache", "--kid-subsets", "30", "--seed", "3", "--bootstrap", "20", "--json", "-", "-q", "--allow-small")
    assert result.exit_code == 0, result.output
    u = json.loads(result.stdout)["utility"]
    assert (u["kid_subset_size"], u["kid_subsets"], u["kid_seed"]) == (6, 30, 3)

    model = load_model(env.model, device="cpu", seed=3)
    model.set_mode(stochastic=False)
    pairs = load_pairs(nonmembers, direction="AtoB", size=32)
    fake = torch.empty_like(pairs.targets)
    with torch.inference_mode():
        for sl, out in iter_outputs(model, pairs.inputs):
            fake[sl] = to_uint8(out.float()).cpu()

    class U8(torch.utils.data.Dataset):
        def __init__(self, x):
            self.x = x

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i]

    theirs = torch_fidelity.calculate_metrics(
        input1=U8(fake), input2=U8(pairs.targets), kid=True, kid_subset_size=u["kid_subset_size"], kid_subsets=u["kid_subsets"],
        rng_seed=u["kid_seed"], feature_extractor_weights_path=str(env.weights), cuda=False, cache=False, save_cpu_ram=True, verbose=False,
    )
    assert u["kid"] != 0.0
    assert u["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-6)
    assert u["kid_std"] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-6)


def test_no_kid_skips_kid(no_kid_report):
    u = json.loads(no_kid_report.read_text())["utility"]
    assert u["kid"] is None and u["nkid"] is None and u["kid_skipped"] is True
    assert isinstance(u["l1"], float)
    g = json.loads(no_kid_report.read_text())["generalization_gap"]
    assert g["gap"] is None and isinstance(g["l1_train"], float)


def test_missing_weights_exit_2_one_line_no_json(env, tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    empty = tmp_path / "torch_home"
    empty.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(empty))
    out = tmp_path / "r.json"
    result = invoke(*evaluate_args(env, "--no-feature-cache", "--json", out))
    assert_one_error_line(result, mentions=INCEPTION_WEIGHTS_FILENAME)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [empty]


class _Malicious:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_weights_refused_and_never_run(env, tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth"
    torch.save({"fc.weight": _Malicious(str(marker)), "fc.bias": torch.zeros(1008)}, evil)
    out = tmp_path / "r.json"
    result = invoke(*evaluate_args(env, "--inception-weights", evil, "--no-feature-cache", "--json", out))
    line = assert_one_error_line(result, mentions="evil.pth")
    assert "refusing" in line
    assert not marker.exists()
    assert not out.exists()


def test_feature_cache_hits_on_second_run(evaluated):
    first, second = evaluated.report["utility"], evaluated.second["utility"]
    assert first["feature_cache"]["misses"] > 0
    assert second["feature_cache"]["hits"] > 0
    assert second["feature_cache"]["hits"] > first["feature_cache"]["hits"]
    assert list(evaluated.cache.glob("*.pt"))
    for k in ("kid", "kid_std", "kid_black", "nkid"):
        assert second[k] == first[k], k
    assert evaluated.second["generalization_gap"]["gap"] == evaluated.report["generalization_gap"]["gap"]


def test_proxy_pairs_and_repeat(env, tmp_path):
    result = invoke(*evaluate_args(env, "--inception-weights", env.weights, "--feature-cache", tmp_path / "fc", "--kid-subsets", "10",
                                   "--proxy-pairs", env.proxy, "--repeat", "2", "--json", "-"))
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    p = r["proxy_leakage"]
    assert 0.0 <= p["auc"] <= 1.0 and p["count"] == 4
    rep = r["repeats"]
    assert rep["n"] == 2 and rep["seeds"] == [0, 1] and len(rep["runs"]) == 2
    for k in ("auc", "nkid", "kid", "l1", "ssim", "psnr", "gap", "advantage"):
        assert set(rep[k]) == {"mean", "std"}, k
        assert rep[k]["std"] >= 0.0
    assert rep["auc"]["mean"] == pytest.approx(np.mean([run["auc"] for run in rep["runs"]]))
    assert rep["runs"][0]["kid"] == r["utility"]["kid"]


# --- report -------------------------------------------------------------------------------------


def test_report_compares_reports(evaluated, attack_report, no_kid_report, tmp_path):
    md, plot, roc, page = tmp_path / "c.md", tmp_path / "t.png", tmp_path / "roc.png", tmp_path / "r.html"
    result = invoke("report", evaluated.path, attack_report, no_kid_report, "--markdown", md, "--plot", plot, "--roc", roc, "--html", page)
    assert result.exit_code == 0, result.output
    assert "AUC" in result.stderr
    rows = [line for line in md.read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 3  # header + one row per report
    assert rows[1].startswith(f"| {evaluated.path.stem} |") and rows[2].startswith(f"| {attack_report.stem} |")
    for png in (plot, roc):
        assert png.read_bytes()[:8] == PNG_SIGNATURE
    html = page.read_text()
    assert html.lstrip().lower().startswith("<!doctype html")
    srcs = re.findall(r"""src\s*=\s*['"]?([^'" >]+)""", html, flags=re.I)
    assert srcs and all(s.startswith("data:") for s in srcs), srcs
    assert not re.search(r"""(href|url\()\s*=?\s*['"]?(https?:)?//""", html, flags=re.I)
    assert "<table" in html and evaluated.path.stem in html
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_report_names_and_markdown_to_stdout(evaluated, attack_report):
    result = invoke("report", evaluated.path, attack_report, "--names", "a, b", "--markdown", "-")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["a", "b"]


@pytest.mark.parametrize("case", ["other schema", "garbage json", "missing file", "names count"])
def test_report_bad_input_exit_2(evaluated, tmp_path, case):
    extra: list = []
    bad = tmp_path / "bad.json"
    if case == "other schema":
        bad.write_text(json.dumps({"schema": "someone.else/2", "attack": {"auc": 0.5}}))
    elif case == "garbage json":
        bad.write_text("{ not json")
    elif case == "missing file":
        bad = tmp_path / "absent.json"
    else:
        bad = evaluated.path
        extra = ["--names", "only-one"]
    md = tmp_path / "out.md"
    result = invoke("report", evaluated.path, bad, "--markdown", md, *extra)
    assert_one_error_line(result, mentions="--names" if case == "names count" else bad.name)
    assert not md.exists()


# --- gate on an evaluate report -----------------------------------------------------------------


def test_gate_passes_and_fails_on_evaluate_report(evaluated, no_kid_report):
    auc = evaluated.report["attack"]["auc"]
    assert auc > 0.0
    ok = invoke("gate", evaluated.path, "--no-policy", "--max-auc", "1.0", "--max-nkid", "1000")
    assert ok.exit_code == 0, ok.output
    assert "gate passed" in ok.stderr
    bad = invoke("gate", evaluated.path, "--no-policy", "--max-auc", "0.0")
    assert bad.exit_code == 1, bad.output
    assert "gate failed" in bad.stderr and "Traceback" not in bad.output
    no_kid = invoke("gate", no_kid_report, "--no-policy", "--max-nkid", "0.5")
    assert_one_error_line(no_kid, mentions="utility.nkid")
