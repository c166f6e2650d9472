"""The gate cannot be fooled, and output never misleads (issue 10).

* A score that ranks members BELOW non-members (AUC < 0.5) leaks as much as its negation, which any
  attacker can use: the gate judges the stronger direction, reports say when the score is flipped.
* Reports with impossible numbers (a rate outside [0, 1], NaN, an interval with lo > hi) are refused
  in one line (exit 2), by `gate` and `report` alike.
* A missing value is never drawn or tabulated as 0; tables never cut a number or a name to "…".
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from privaudit.attacks.metrics import attack_metrics
from privaudit.cli.app import app
from privaudit.cli.render import attack_table, compare_table, evaluate_table
from privaudit.errors import ReportError
from privaudit.gate import GatePolicy, evaluate_gate
from privaudit.gate.verdict import flipped_bound_advantage, flipped_bound_tpr, flipped_roc, roc_advantage, roc_tpr_at
from privaudit.report.markdown import to_markdown
from privaudit.report.plots import figure_png, report_curves, roc_figure, tradeoff_figure
from privaudit.report.schema import REPORT_SCHEMA, load_report
from privaudit.report.tables import HEADERS, Row, cells, row

runner = CliRunner()


def _scores(n_members: int, n_nonmembers: int, shift: float, seed: int = 0, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Member scores N(shift, 1), non-member scores N(0, 1); a negative shift flips the attack."""
    rng = np.random.default_rng(seed)
    sm, sn = rng.normal(shift, 1.0, n_members), rng.normal(0.0, 1.0, n_nonmembers)
    if decimals is not None:  # ties
        sm, sn = sm.round(decimals), sn.round(decimals)
    return sm, sn


def _report(sm: np.ndarray, sn: np.ndarray, *, roc: str = "full", flipped_score: bool = True) -> dict[str, Any]:
    """A report whose attack section is what privaudit writes for these scores (score = -loss).

    roc: "full" (every ROC point), "thinned" (256 points, as AttackResult.roc_points), "none".
    """
    m = attack_metrics(sm, sn, n_bootstrap=200, seed=0)
    attack = {"name": "reconstruction-loss", **m.to_dict(), "threshold": -m.threshold,
              "member_loss": {"mean": float(-sm.mean()), "std": float(sm.std())}, "nonmember_loss": {"mean": float(-sn.mean()), "std": float(sn.std())}}
    fpr, tpr = m.fpr, m.tpr
    if roc == "thinned":
        idx = np.unique(np.linspace(0, len(fpr) - 1, 256).round().astype(int))
        fpr, tpr = fpr[idx], tpr[idx]
    if roc != "none":
        attack["roc"] = {"fpr": [float(v) for v in fpr], "tpr": [float(v) for v in tpr]}
    if not flipped_score:
        for k in ("flipped_score", "flipped", "auc_effective"):
            attack.pop(k)
    return {
        "schema": REPORT_SCHEMA, "tool": {"version": "0.1.0"}, "created": "2026-01-01T00:00:00+00:00", "seed": 0,
        "model": {"path": "model.pt", "sha256": "0" * 64, "format": "privaudit", "arch": {}, "defense": {"method": "none"}},
        "data": {"members": {"path": "m", "count": len(sm)}, "nonmembers": {"path": "n", "count": len(sn)}},
        "attack": attack,
    }


def _hand(auc: float, ci: list[float], **attack: Any) -> dict[str, Any]:
    """A hand-written report (no ROC, no flipped_score): what a reviewer or an old tool could hand the gate."""
    a = {"name": "reconstruction-loss", "auc": auc, "auc_ci95": ci, "tpr_at_fpr": {"0.01": 0.03, "0.1": 0.14},
         "advantage": 0.12, "balanced_accuracy": 0.56, **attack}
    return {"schema": REPORT_SCHEMA, "model": {"path": "m.pt", "defense": {"method": "none"}},
            "data": {"members": {"path": "m", "count": 200}, "nonmembers": {"path": "n", "count": 200}}, "attack": a}


def _write(path: Path, report: dict[str, Any]) -> Path:
    path.write_text(json.dumps(report), encoding="utf-8")  # NaN is written as NaN, as json.dumps does by default
    return path


def _gate(*args: Any) -> Any:
    return runner.invoke(app, ["gate", *[str(a) for a in args], "--no-policy"])


def _one_line_exit_2(result: Any, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------
# The producer: a report carries the flipped score, exactly


@pytest.mark.parametrize("decimals", [None, 1])
def test_flipped_score_is_the_attack_on_the_negated_score(decimals: int | None) -> None:
    sm, sn = _scores(150, 120, shift=-0.8, decimals=decimals)  # decimals=1: many ties
    m = attack_metrics(sm, sn, n_bootstrap=200, seed=3)
    neg = attack_metrics(-sm, -sn, n_bootstrap=200, seed=3)
    d = m.to_dict()
    assert d["flipped"] is True and m.auc < 0.5
    assert d["auc_effective"] == pytest.approx(1 - m.auc) == pytest.approx(neg.auc)
    fs = d["flipped_score"]
    assert fs["auc"] == pytest.approx(neg.auc, abs=1e-12)
    assert fs["tpr_at_fpr"] == neg.tpr_at_fpr and fs["tpr_at_fpr"]["0.01"] is not None
    assert fs["advantage"] == pytest.approx(neg.advantage, abs=1e-12)
    assert fs["balanced_accuracy"] == pytest.approx(neg.balanced_accuracy, abs=1e-12)
    # each bootstrap AUC of the negated score is 1 − the AUC, so the interval mirrors exactly
    assert fs["auc_ci95"] == pytest.approx([1 - m.auc_ci95[1], 1 - m.auc_ci95[0]], abs=1e-12)
    assert fs["auc_ci95"] == pytest.approx(list(neg.auc_ci95), abs=1e-9)
    # the measured keys keep their meaning (DESIGN.md contract)
    assert d["auc"] == m.auc and d["advantage"] == m.advantage and d["tpr_at_fpr"] == m.tpr_at_fpr


def test_unflipped_attack_says_so() -> None:
    d = attack_metrics(*_scores(50, 50, shift=1.0)).to_dict()
    assert d["flipped"] is False and d["auc_effective"] == d["auc"] > 0.5


@pytest.mark.parametrize("seed", range(6))
def test_bounds_are_upper_bounds(seed: int) -> None:
    """The conservative readings (thinned ROC, AUC alone) never under-state the flipped attack."""
    sm, sn = _scores(400, 300, shift=[-1.5, -0.5, 0.0, 0.3, 1.0, -0.1][seed], seed=seed, decimals=2 if seed % 2 else None)
    m = attack_metrics(sm, sn, n_bootstrap=0)
    neg = attack_metrics(-sm, -sn, n_bootstrap=0)
    idx = np.unique(np.linspace(0, len(m.fpr) - 1, 256).round().astype(int))
    ffpr, ftpr = flipped_roc(list(m.fpr[idx]), list(m.tpr[idx]))
    full_f, full_t = flipped_roc(list(m.fpr), list(m.tpr))
    assert roc_advantage(full_f, full_t, exact=True) == pytest.approx(neg.advantage)
    assert neg.advantage <= roc_advantage(ffpr, ftpr, exact=False) + 1e-12
    assert neg.advantage <= flipped_bound_advantage(m.auc) + 1e-12
    for f in (0.01, 0.1):
        exact = neg.tpr_at_fpr[format(f, "g")]
        assert roc_tpr_at(full_f, full_t, f, exact=True) == pytest.approx(exact)
        assert exact <= roc_tpr_at(ffpr, ftpr, f, exact=False) + 1e-12
        assert exact <= flipped_bound_tpr(m.auc, f) + 1e-12


# ---------------------------------------------------------------------------------------------
# The gate judges the stronger direction


def test_flipped_auc_fails_the_gate_and_says_flipped(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.json", _hand(0.236, [0.15, 0.33]))
    result = _gate(path, "--max-auc", "0.6")
    assert result.exit_code == 1, result.output
    assert "score flipped" in result.stderr and "0.764" in result.stderr and "0.236" in result.stderr
    check = evaluate_gate(load_report(path), GatePolicy(max_auc=0.6)).checks[0]
    assert (check.value, check.metric, check.passed) == (pytest.approx(0.764), "1 − attack.auc", False)
    assert check.note.startswith("score flipped")
    # JUnit and Markdown say it too
    junit = _gate(path, "--max-auc", "0.6", "--junit", "-").stdout
    assert 'message="AUC (score flipped) 0.764 exceeds the limit 0.6"' in junit
    md = _gate(path, "--max-auc", "0.6", "--markdown", "-").stdout
    assert "| AUC [1] | 0.764 | 0.6 | **FAIL** |" in md and "- [1] score flipped" in md
    # the raw direction, on request
    raw = _gate(path, "--max-auc", "0.6", "--as-measured")
    assert raw.exit_code == 0, raw.output


def test_auc_above_half_is_judged_as_before(tmp_path: Path) -> None:
    v = evaluate_gate(_hand(0.7, [0.62, 0.78]), GatePolicy(max_auc=0.75, max_auc_ci_upper=0.8))
    assert [(c.value, c.metric, c.note, c.passed) for c in v.checks] == [
        (0.7, "attack.auc", "", True), (0.78, "attack.auc_ci95[1]", "", True)]
    assert not evaluate_gate(_hand(0.7, [0.62, 0.78]), GatePolicy(max_auc=0.69)).passed


def test_ci_upper_of_a_flipped_score(tmp_path: Path) -> None:
    # measured [0.30, 0.60]: the flipped interval is [0.40, 0.70]; its upper end crosses 0.65
    report = _hand(0.45, [0.30, 0.60])
    c = evaluate_gate(report, GatePolicy(max_auc_ci_upper=0.65)).checks[0]
    assert (c.value, c.metric, c.passed) == (pytest.approx(0.70), "1 − attack.auc_ci95[0]", False)
    assert "[0.4, 0.7]" in c.note
    assert evaluate_gate(report, GatePolicy(max_auc_ci_upper=0.65), as_measured=True).passed
    assert evaluate_gate(report, GatePolicy(max_auc=0.6)).passed  # the AUC itself: max(0.45, 0.55) = 0.55


def test_tpr_and_advantage_of_a_flipped_report(tmp_path: Path) -> None:
    sm, sn = _scores(100, 100, shift=-1.2)  # 201 ROC points: the stored curve is complete
    neg = attack_metrics(-sm, -sn, n_bootstrap=0)
    want_tpr, want_adv = neg.tpr_at_fpr["0.1"], neg.advantage
    assert want_tpr > 0.2 and want_adv > 0.3
    policy = GatePolicy(max_tpr_at_fpr={"0.1": 0.2}, max_advantage=0.3)
    for variant, metric in ((dict(), 'attack.flipped_score.tpr_at_fpr["0.1"]'), (dict(flipped_score=False), "attack.roc, flipped")):
        report = _report(sm, sn, **variant)
        assert report["attack"]["tpr_at_fpr"]["0.1"] < 0.2 and report["attack"]["advantage"] < 0.3  # measured: harmless
        tpr, adv = evaluate_gate(report, policy).checks
        assert (tpr.value, tpr.metric, tpr.passed) == (pytest.approx(want_tpr, abs=1e-12), metric, False)
        assert (adv.value, adv.passed) == (pytest.approx(want_adv, abs=1e-12), False)
        assert tpr.note.startswith("score flipped") and "at most" not in tpr.note
        assert evaluate_gate(report, policy, as_measured=True).passed
    # through the CLI, from the file
    path = _write(tmp_path / "flip.json", _report(sm, sn, flipped_score=False))
    result = _gate(path, "--max-tpr-at-fpr", "0.1=0.2")
    assert result.exit_code == 1, result.output
    assert "score flipped" in result.stderr


def test_tpr_without_exact_data_is_judged_by_a_bound_and_says_so() -> None:
    sm, sn = _scores(300, 300, shift=-1.2)  # 601 ROC points, thinned to 256
    exact = attack_metrics(-sm, -sn, n_bootstrap=0).tpr_at_fpr["0.1"]
    policy = GatePolicy(max_tpr_at_fpr={"0.1": 0.99})
    thinned = evaluate_gate(_report(sm, sn, roc="thinned", flipped_score=False), policy).checks[0]
    assert thinned.value >= exact and "a bound read from the thinned attack.roc" in thinned.note
    assert thinned.note.startswith("flipped score not exactly known")
    bare = evaluate_gate(_report(sm, sn, roc="none", flipped_score=False), policy).checks[0]
    auc = attack_metrics(sm, sn, n_bootstrap=0).auc
    assert bare.value == pytest.approx((1 - auc) / 0.9) and bare.value >= exact
    assert "a bound from the AUC alone" in bare.note and "re-create it" in bare.note


# ---------------------------------------------------------------------------------------------
# Impossible numbers are refused in one line


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("auc", -0.3, "attack.auc = -0.3"),
        ("auc", 1.7, "attack.auc = 1.7"),
        ("auc", float("nan"), "attack.auc = nan"),
        ("auc_ci95", [0.7, 0.5], "attack.auc_ci95 = [0.7, 0.5], lo > hi"),
        ("auc_ci95", [0.5, 1.2], "attack.auc_ci95[1] = 1.2"),
        ("tpr_at_fpr", {"0.01": 1.5, "0.1": 0.2}, 'attack.tpr_at_fpr["0.01"] = 1.5'),
        ("advantage", -0.1, "attack.advantage = -0.1"),
        ("balanced_accuracy", float("inf"), "attack.balanced_accuracy = inf"),
    ],
)
def test_impossible_values_exit_2_in_one_line(tmp_path: Path, key: str, value: Any, shown: str) -> None:
    report = _hand(0.6, [0.5, 0.7])
    report["attack"][key] = value
    path = _write(tmp_path / "bad.json", report)
    line = _one_line_exit_2(_gate(path, "--max-auc", "0.9"), "bad.json", shown)
    assert "re-create it with privaudit attack/evaluate --json" in line
    _one_line_exit_2(runner.invoke(app, ["report", str(path)]), shown)
    with pytest.raises(ReportError, match="malformed"):
        evaluate_gate(report, GatePolicy(max_auc=0.9))


def test_other_sections_are_checked_too(tmp_path: Path) -> None:
    for section, patch, shown in (
        ("utility", {"l1": -0.2, "nkid": 0.1}, "utility.l1 = -0.2"),
        ("utility", {"l1": 0.2, "nkid": float("nan")}, "utility.nkid = nan"),
        ("generalization_gap", {"gap": float("nan")}, "generalization_gap.gap = nan"),
        ("proxy_leakage", {"auc": 1.3}, "proxy_leakage.auc = 1.3"),
    ):
        r = _hand(0.6, [0.5, 0.7])
        r[section] = patch
        _one_line_exit_2(_gate(_write(tmp_path / "bad.json", r), "--max-auc", "0.9"), shown)
    r = _hand(0.6, [0.5, 0.7])
    r["model"]["defense"] = {"method": "dpsgd", "epsilon": -1.0}
    _one_line_exit_2(_gate(_write(tmp_path / "bad.json", r), "--max-auc", "0.9"), "model.defense.epsilon = -1.0")
    # a flipped_score that is not the negated attack is refused, not trusted
    r = _report(*_scores(40, 40, shift=-1.0))
    r["attack"]["flipped_score"]["auc"] = 0.5
    _one_line_exit_2(_gate(_write(tmp_path / "bad.json", r), "--max-auc", "0.9"), "attack.flipped_score.auc = 0.5")


def test_valid_reports_still_load(tmp_path: Path) -> None:
    # a negative NKID is a legitimate estimate (KID is unbiased), and epsilon may be infinite
    r = _report(*_scores(40, 40, shift=0.5))
    r["utility"] = {"l1": 0.2, "ssim": -0.1, "nkid": -0.002, "kid": -0.0001}
    r["model"]["defense"] = {"method": "dpsgd", "epsilon": float("inf")}
    assert load_report(_write(tmp_path / "ok.json", r))["utility"]["nkid"] == -0.002


def test_gate_and_report_modules_do_not_import_torch() -> None:
    # privaudit gate and privaudit report (without plots) read JSON: no torch, no numpy, no matplotlib
    modules = "privaudit.gate, privaudit.report, privaudit.report.tables, privaudit.report.markdown, privaudit.report.html, privaudit.report.plots, privaudit.report.build, privaudit.cli.gate, privaudit.cli.report"
    code = f"import sys, {modules}; print(*(m in sys.modules for m in ('torch', 'numpy', 'matplotlib')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["False", "False", "False"], out.stderr


# ---------------------------------------------------------------------------------------------
# Missing values are never 0; tables fit 80 columns without "…"


def _row(name: str, *, auc: float = 0.6, nkid: float | None = None, l1: float | None = None) -> Row:
    return Row(name=name, method="regular", auc=auc, auc_ci95=(auc - 0.05, auc + 0.05), tpr_1=None, tpr_10=None, nkid=nkid,
               gap=None, l1=l1, ssim=None, epsilon=None)


def _points(fig) -> dict[str, tuple[float, float]]:
    """The plotted points of the trade-off figure by legend label."""
    ax = fig.axes[0]
    return {c.get_label(): tuple(c.get_offsets()[0]) for c in ax.collections}


def test_plot_leaves_out_a_model_without_the_metric() -> None:
    fig = tradeoff_figure([_row("teacher", auc=0.96, l1=0.21), _row("akd", auc=0.58, l1=0.23), _row("attack-only", auc=0.7)])
    pts = _points(fig)
    assert pts == {"teacher (regular)": pytest.approx((0.21, 96.0)), "akd (regular)": pytest.approx((0.23, 58.0)), "ideal (0, 50%)": (0.0, 50.0)}
    assert "not plotted: attack-only (no L1)" in fig.axes[0].get_title()
    # NKID in every report that has L1: NKID is the x axis; a model without it is left out, not put at 0
    fig = tradeoff_figure([_row("teacher", auc=0.96, nkid=0.059, l1=0.2), _row("akd", auc=0.58, nkid=0.078, l1=0.2), _row("x", auc=0.9)])
    pts = _points(fig)
    assert pts["teacher (regular)"] == pytest.approx((5.9, 96.0)) and pts["akd (regular)"] == pytest.approx((7.8, 58.0))
    assert len(pts) == 3  # and the ideal; "x" is not drawn anywhere
    assert "not plotted: x (no NKID)" in fig.axes[0].get_title()
    # a flipped model is plotted at the AUC an attacker gets, and labelled
    flipped = row("f", _report(*_scores(60, 60, shift=-1.0)) | {"utility": {"l1": 0.3}})
    assert flipped.flipped and flipped.auc > 0.5
    assert _points(tradeoff_figure([flipped]))["f (regular), score flipped"] == pytest.approx((0.3, 100 * flipped.auc))


def test_one_roc_plotter_for_attack_arrays_and_report_curves() -> None:
    measured, flipped = _report(*_scores(60, 60, shift=1.0)), _report(*_scores(60, 60, shift=-1.0))
    no_curve = _report(*_scores(60, 60, shift=1.0), roc="none")
    curves = report_curves([("teacher", measured), ("flipped", flipped), ("no-roc", no_curve)])
    assert [c[0] for c in curves] == ["teacher", "flipped"]  # a report without a usable curve is left out
    assert curves[0][1] == measured["attack"]["roc"]["fpr"] and curves[0][3] == measured["attack"]["auc"]
    m = attack_metrics(*_scores(60, 60, shift=1.0), n_bootstrap=0)
    fig = roc_figure([("live", m.fpr, m.tpr, m.auc)] + curves)  # numpy arrays (privaudit attack) and report lists alike
    linear, log = fig.axes
    labels = [line.get_label() for line in linear.get_lines()]
    assert labels == [f"live (AUC {m.auc:.3f})", f"teacher (AUC {measured['attack']['auc']:.3f})",
                      f"flipped (AUC {flipped['attack']['auc']:.3f}, below chance: score flipped)", "chance"]
    assert [line.get_label() for line in log.get_lines()] == labels
    assert list(linear.get_lines()[0].get_xdata()) == list(m.fpr)
    assert min(log.get_lines()[1].get_xdata()) > 0  # log axes: the (0, 0) point is left out, not drawn at 1e-300
    assert figure_png(fig).startswith(b"\x89PNG")


def test_missing_values_are_dashes_in_markdown() -> None:
    r = _report(*_scores(30, 30, shift=1.0))  # an attack-only report, and 30 non-members: no TPR at 1% FPR
    del r["attack"]["auc_ci95"]
    shown = cells(row("attack-only", r))
    cols = dict(zip(HEADERS, shown))
    assert [cols[h] for h in ("AUC 95% CI", "TPR@1%FPR", "NKID", "gap (NKID)", "L1", "SSIM", "ε")] == ["–"] * 7
    assert cols["TPR@10%FPR"] == f"{100 * r['attack']['tpr_at_fpr']['0.1']:.1f}%"
    assert "| " + " | ".join(shown) + " |" in to_markdown([row("attack-only", r)])


def _render(renderable: Any, width: int = 80) -> str:
    buf = io.StringIO()
    Console(width=width, file=buf, color_system=None).print(renderable)
    return buf.getvalue()


FIVE = [
    # name, method, auc, ci, tpr1, tpr10, nkid, gap, l1, ssim, eps
    ("teacher", "regular", 0.9646, (0.931, 0.987), 0.412, 0.873, 0.0593, 0.0151, 0.2134, 0.3456, None),
    ("gauss", "gauss σ=0.1", 0.9640, (0.929, 0.986), 0.405, 0.869, 0.0649, 0.0162, 0.2411, 0.2987, None),
    ("dpsgd-strong", "dpsgd σ=1.69", 0.5806, (0.502, 0.655), 0.022, 0.144, 0.1257, 0.0023, 0.2901, 0.2111, 13.742),
    ("dmp", "dmp", 0.5773, (0.499, 0.651), 0.018, 0.131, 0.1364, 0.0019, 0.2533, 0.2456, None),
    ("akd-student", "akd", 0.5756, (0.497, 0.650), 0.016, 0.129, 0.0780, 0.0031, 0.2189, 0.3012, None),
]


def test_comparison_of_five_models_fits_80_columns() -> None:
    rows = [Row(name=n, method=m, auc=a, auc_ci95=ci, tpr_1=t1, tpr_10=t10, nkid=k, gap=g, l1=l, ssim=s, epsilon=e)
            for n, m, a, ci, t1, t10, k, g, l, s, e in FIVE]
    out = _render(compare_table(rows))
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out
    flat = " ".join(out.split())
    note = flat[flat.index("not shown at this width:"):] if "not shown at this width:" in flat else ""
    for r in rows:
        assert r.name in out and r.method in out  # whole, on one line
    for i, h in enumerate(HEADERS[2:], start=2):
        if h in ("AUC", "AUC 95% CI", "TPR@1%FPR", "NKID", "L1", "ε"):  # the important columns stay, every number whole
            assert all(cells(r)[i] in out for r in rows), h
        else:  # a column left out is named, with where to see it
            assert all(cells(r)[i] in out for r in rows) or h.replace("@", " @ ").replace("%FPR", "% FPR") in note, h
    assert note and "--markdown -" in note  # at 80 columns something had to go
    # on a wide terminal everything shows
    wide = _render(compare_table(rows), width=200)
    assert "not shown" not in wide and "…" not in wide
    assert all(cell in wide for r in rows for cell in cells(r))


def test_gate_attack_and_evaluate_tables_fit_80_columns(tmp_path: Path) -> None:
    from privaudit.cli.render import gate_table

    sm, sn = _scores(200, 200, shift=-1.0)
    report = _report(sm, sn)
    report["model"]["path"] = "runs/2026-01-01/facades-256px-unet-teacher-epoch-200/checkpoints/latest_net_G.pth"
    report["attack"].update({"generator_mode": "eval", "samples": 1, "loss": "l1"})
    verdict = evaluate_gate(report, GatePolicy(max_auc=0.6, max_auc_ci_upper=0.7, max_tpr_at_fpr={"0.01": 0.05}, max_advantage=0.2))
    out = _render(gate_table(verdict, Path(report["model"]["path"]).with_suffix(".json"), "command-line flags"))
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80
    from privaudit.gate import format_number

    for c in verdict.checks:
        assert format_number(c.value) in out and format_number(c.limit) in out
    assert out.count("score flipped") == 4

    a = _render(attack_table(report))
    assert "…" not in a and max(len(line) for line in a.splitlines()) <= 80
    auc = report["attack"]["auc"]
    assert f"{auc:.4f}" in a and "score flipped" in a
    assert f"an attacker who predicts 'member' for high loss gets AUC {1 - auc:.4f}" in " ".join(a.replace("│", " ").split())

    report["utility"] = {"kid": 0.0123, "kid_std": 0.0011, "kid_subset_size": 50, "nkid": 0.0789, "l1": 0.2134, "psnr": 14.21, "ssim": 0.3456, "sharpness": 0.912}
    report["generalization_gap"] = {"nkid_train": 0.0701, "nkid_test": 0.0789, "gap": 0.0088, "l1_train": 0.1987, "l1_test": 0.2134}
    e = _render(evaluate_table(report))
    assert "…" not in e and max(len(line) for line in e.splitlines()) <= 80
    for text in ("0.01230 ± 0.00110", "7.89%", "7.01% / 7.89% / 0.88%", "0.2134 / 14.21 dB / 0.3456", "0.912", "0.1987 / 0.2134"):
        assert text in e, text


def test_attack_table_says_nothing_when_not_flipped() -> None:
    report = _report(*_scores(50, 50, shift=1.0))
    report["attack"].update({"generator_mode": "eval", "samples": 1, "loss": "l1"})
    assert "flipped" not in _render(attack_table(report))


# ---------------------------------------------------------------------------------------------
# End to end: a real attack whose score runs the wrong way


@pytest.mark.slow
def test_swapped_sets_give_a_flipped_report_the_gate_fails(overfit_teacher, tmp_path: Path) -> None:
    ckpt, members, nonmembers = overfit_teacher
    # members and non-members swapped: the "members" are unseen, so their loss is HIGHER
    out = tmp_path / "swapped.json"
    result = runner.invoke(app, ["attack", str(ckpt), "--members", str(nonmembers), "--nonmembers", str(members), "--json", str(out)])
    assert result.exit_code == 0, result.output
    a = json.loads(out.read_text())["attack"]
    assert a["auc"] < 0.2 and a["flipped"] is True
    assert a["auc_effective"] == pytest.approx(1 - a["auc"]) and a["flipped_score"]["auc"] == pytest.approx(1 - a["auc"])
    assert "score flipped" in result.stderr
    gate = _gate(out, "--max-auc", "0.6")
    assert gate.exit_code == 1, gate.output
    assert "score flipped" in gate.stderr
    fail = runner.invoke(app, ["attack", str(ckpt), "--members", str(nonmembers), "--nonmembers", str(members), "--fail-above-auc", "0.6", "-q"])
    assert fail.exit_code == 1 and "score flipped" in fail.stderr, fail.output
    shown = runner.invoke(app, ["report", str(out), "--markdown", "-"])
    assert shown.exit_code == 0, shown.output
    assert f"{100 * (1 - a['auc']):.2f}%*" in shown.stdout and "score flipped" in shown.stdout
