"""The calibrated attacks inside `attack`, `evaluate` and `gate` (issue 12): privaudit.report/2,
the strongest attack, the distribution check, the ε lower bound, DP claim vs bound, gate pinning.

The references are tiny: K=4 online references of the session's overfit teacher (its own recipe,
10 members + 10 non-members as the population), built once for the module.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from privaudit.attacks.suite import CALIBRATED, measure, report_sections, shift_detected, strongest
from privaudit.cli.app import app
from privaudit.gate import evaluate_gate, make_policy, parse_tpr_flag
from privaudit.report.schema import REPORT_SCHEMA_2, load_report
from privaudit.report.tables import rows_of

runner = CliRunner()
ATTACK_KEYS = {"auc", "auc_ci95", "tpr_at_fpr", "tpr_at_fpr_ci95", "advantage", "epsilon_lb", "delta"}


@pytest.fixture(scope="module")
def online(overfit_teacher, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from privaudit.references import build_references

    ckpt, members, nonmembers = overfit_teacher
    out = tmp_path_factory.mktemp("calib") / "refs"
    build_references(ckpt, population=[members, nonmembers], count=4, out=out, online=True, seed=1, device="cpu")
    return out


@pytest.fixture(scope="module")
def report2(overfit_teacher, online, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    """The CLI's report/2 of the overfit teacher with the online references, its scores CSV and the JSON path."""
    ckpt, members, nonmembers = overfit_teacher
    out = tmp_path_factory.mktemp("calib_out")
    r = runner.invoke(app, ["attack", str(ckpt), "--members", str(members), "--nonmembers", str(nonmembers), "--references", str(online),
                            "--bootstrap", "50", "--device", "cpu", "--quiet", "--json", str(out / "r.json"), "--scores", str(out / "s.csv")])
    assert r.exit_code == 0, r.output
    return json.loads((out / "r.json").read_text()), (out / "s.csv").read_text(), out / "r.json"


# ---------------------------------------------------------------------------------------------
# report/2 from the real command


def test_report2_lists_every_attack_with_its_metrics(report2):
    r, _, path = report2
    assert r["schema"] == REPORT_SCHEMA_2 == "privaudit.report/2"
    assert set(r["attacks"]) == {"loss", "calibrated", "lira-offline", "lira-online", "reference-only"}
    for name, a in r["attacks"].items():
        assert ATTACK_KEYS <= set(a), name
        assert a["name"] == name
        assert a["epsilon_lb"] >= 0.0 and a["delta"] == 0.0  # the teacher claims no DP: δ = 0
        assert set(a["tpr_at_fpr_ci95"]) == set(a["tpr_at_fpr"])
        assert a["tpr_at_fpr_ci95"]["0.001"] is None and a["tpr_at_fpr_ci95"]["0.01"] is None  # 10 non-members resolve 10% only
        lo, hi = a["tpr_at_fpr_ci95"]["0.1"]
        assert 0.0 <= lo <= hi <= 1.0
    # the overfit teacher is separated perfectly by the plain and every calibrated attack
    for name in ("loss", *CALIBRATED):
        assert r["attacks"][name]["auc"] == 1.0 and r["attacks"][name]["tpr_at_fpr"]["0.1"] == 1.0
    # with a perfect tie everywhere the first in order wins: the plain loss attack
    assert r["attack"]["name"] == "loss" and "TPR at 10% FPR" in r["attack"]["selected_by"]
    assert r["references"]["count"] == 4 and r["references"]["mode"] == "online" and r["references"]["skipped"] == {}
    assert load_report(path)["schema"] == REPORT_SCHEMA_2  # the one loader reads and validates it


def test_report2_distribution_check_and_most_exposed(report2, overfit_teacher):
    r, _, _ = report2
    shift = r["data"]["distribution_shift"]
    lo, hi = shift["auc_ci95"]
    assert shift["attack"] == "reference-only" and shift["auc"] == r["attacks"]["reference-only"]["auc"]
    assert shift["detected"] == (lo > 0.5 or hi < 0.5)
    exposed = r["most_exposed"]
    members = sorted(p.name for p in overfit_teacher[1].iterdir())
    assert len(exposed) == 10 and sorted(e["name"] for e in exposed) == members  # 10 members, k = 10: all of them
    assert [e["score"] for e in exposed] == sorted((e["score"] for e in exposed), reverse=True)
    assert set(exposed[0]) == {"name", "score"}


def test_scores_csv_has_one_column_per_attack(report2):
    _, text, _ = report2
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["name", "set", "label", "loss", "score", "score_calibrated", "score_lira-offline", "score_lira-online",
                             "score_reference-only"]
    assert len(rows) == 20 and sum(r["label"] == "1" for r in rows) == 10
    for r in rows:  # calibrated = mean OUT loss − target loss and reference-only = −mean OUT loss
        assert float(r["score_calibrated"]) == pytest.approx(-float(r["score_reference-only"]) - float(r["loss"]), rel=1e-6, abs=1e-7)


def test_report2_renders_every_attack_side_by_side(report2, tmp_path):
    r, _, path = report2
    rows = rows_of("teacher", r)
    assert [x.name for x in rows] == ["teacher · loss", "teacher · calibrated", "teacher · lira-offline", "teacher · lira-online"]
    assert [x.primary for x in rows] == [True, False, False, False]
    result = runner.invoke(app, ["report", str(path), "--markdown", "-"])
    assert result.exit_code == 0, result.output
    assert "| r · lira-online |" in result.stdout and "ε lb" in result.stdout


def test_evaluate_takes_the_same_references(overfit_teacher, online, report2, tmp_path):
    ckpt, members, nonmembers = overfit_teacher
    result = runner.invoke(app, ["evaluate", str(ckpt), "--members", str(members), "--nonmembers", str(nonmembers), "--references", str(online),
                                 "--no-kid", "--bootstrap", "50", "--device", "cpu", "--quiet", "--json", str(tmp_path / "e.json")])
    assert result.exit_code == 0, result.output
    e, a = json.loads((tmp_path / "e.json").read_text()), report2[0]
    assert e["schema"] == REPORT_SCHEMA_2 and e["utility"]["l1"] > 0
    for name in a["attacks"]:  # the same losses, seed and bootstrap: the same figures as attack's
        assert e["attacks"][name]["auc"] == a["attacks"][name]["auc"] and e["attacks"][name]["auc_ci95"] == a["attacks"][name]["auc_ci95"]
    assert e["most_exposed"] == a["most_exposed"]


def test_attack_skips_what_the_references_cannot_run(overfit_teacher, online, tmp_path):
    """Two of the four online references: each sample is IN for at most 2, so lira-online (2 IN + 2 OUT) is skipped with a note, not a failure."""
    ckpt, members, nonmembers = overfit_teacher
    two = tmp_path / "two"
    shutil.copytree(online, two)
    m = json.loads((two / "references.json").read_text())
    for e in m["references"][2:]:
        (two / e["file"]).unlink()
    m["references"], m["count"] = m["references"][:2], 2
    (two / "references.json").write_text(json.dumps(m))
    result = runner.invoke(app, ["attack", str(ckpt), "--members", str(members), "--nonmembers", str(nonmembers), "--references", str(two),
                                 "--bootstrap", "10", "--device", "cpu", "--quiet", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    r = json.loads((tmp_path / "r.json").read_text())
    assert "lira-online" not in r["attacks"] and "lira-online" in r["references"]["skipped"]
    assert "--online --count 4" in r["references"]["skipped"]["lira-online"]
    assert "attack lira-online skipped" in result.stderr
    assert set(r["attacks"]) | set(r["references"]["skipped"]) == {"loss", "calibrated", "lira-offline", "lira-online", "reference-only"}


def test_plain_attack_still_writes_report1_with_an_epsilon_bound(overfit_teacher, tmp_path):
    ckpt, members, nonmembers = overfit_teacher
    result = runner.invoke(app, ["attack", str(ckpt), "--members", str(members), "--nonmembers", str(nonmembers), "--bootstrap", "10",
                                 "--device", "cpu", "--quiet", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["schema"] == "privaudit.report/1" and "attacks" not in r and r["attack"]["name"] == "reconstruction-loss"
    # 10 perfectly separated pairs: TPR 1 at FPR 0, Bonferroni over the distinct thresholds (20 scores) at 95%
    assert r["attack"]["epsilon_lb"] > 0.0 and r["attack"]["delta"] == 0.0
    assert r["attack"]["tpr_at_fpr_ci95"]["0.1"] == [1.0, 1.0]


# ---------------------------------------------------------------------------------------------
# the strongest attack and the distribution check, on hand-made scores


def _outcomes(**scores: tuple[list[float], list[float]]):
    return {name.replace("_", "-"): measure(name.replace("_", "-"), np.array(m), np.array(n), n_bootstrap=200, seed=0) for name, (m, n) in scores.items()}


NON = [float(i) for i in range(20)]  # 20 non-members: 10% FPR is the lowest resolved (2 false positives)


def test_strongest_is_the_highest_tpr_at_the_lowest_resolved_fpr():
    # loss: every member just below the 3rd-highest non-member (AUC 0.85, TPR 0 at 10% FPR);
    # calibrated: 5 members far above every non-member, the rest in the middle (AUC 0.625, TPR 25%)
    outs = _outcomes(loss=([16.9] * 20, NON), calibrated=([100.0] * 5 + [9.5] * 15, NON))
    assert outs["loss"].metrics.tpr_at_fpr["0.1"] == 0.0 and outs["calibrated"].metrics.tpr_at_fpr["0.1"] == 0.25
    assert outs["loss"].metrics.auc == 0.85 and outs["calibrated"].metrics.auc == 0.625
    name, why = strongest(outs, (0.001, 0.01, 0.1), 20, shift=False)
    assert name == "calibrated" and "TPR at 10% FPR" in why


def test_strongest_ties_broken_by_auc_and_never_the_reference_only_check():
    outs = _outcomes(loss=([100.0] * 5 + [9.5] * 15, NON), calibrated=([100.0] * 5 + [15.5] * 15, NON),
                     reference_only=([1000.0] * 20, NON))
    assert outs["loss"].metrics.tpr_at_fpr["0.1"] == outs["calibrated"].metrics.tpr_at_fpr["0.1"] == 0.25
    assert outs["loss"].metrics.auc == 0.625 and outs["calibrated"].metrics.auc == pytest.approx(0.85)
    assert strongest(outs, (0.1,), 20, shift=False)[0] == "calibrated"  # same TPR, higher AUC


def test_a_flipped_score_counts_in_the_direction_an_attacker_uses():
    # lira-offline ranks members BELOW every non-member: flipped, it catches all of them
    outs = _outcomes(loss=([100.0] * 5 + [-1.0] * 15, NON), lira_offline=([-50.0] * 20, NON))
    assert outs["lira-offline"].metrics.auc == 0.0 and outs["lira-offline"].metrics.flipped_tpr_at_fpr["0.1"] == 1.0
    name, why = strongest(outs, (0.1,), 20, shift=False)
    assert name == "lira-offline" and "flipped score" in why
    assert "flipped" not in strongest(_outcomes(loss=([100.0] * 20, NON)), (0.1,), 20, shift=False)[1]


def test_over_shifted_sets_the_strongest_is_a_calibrated_attack():
    outs = _outcomes(loss=([100.0] * 20, NON), calibrated=([100.0] * 5 + [-1.0] * 15, NON), reference_only=([50.0] * 20, NON))
    assert strongest(outs, (0.1,), 20, shift=False)[0] == "loss"
    assert strongest(outs, (0.1,), 20, shift=True)[0] == "calibrated"
    sections = report_sections(outs, outs["loss"].to_dict(), fprs=(0.1,), member_names=[f"m{i:02d}" for i in range(20)], n_bootstrap=200)
    assert sections["distribution_shift"]["detected"] is True and "differ in distribution" in sections["distribution_shift"]["note"]
    assert sections["attack"]["name"] == "calibrated" and "calibrated attacks" in sections["attack"]["selected_by"]
    assert [e["name"] for e in sections["most_exposed"]] == ["m00", "m01", "m02", "m03", "m04", "m05", "m06", "m07", "m08", "m09"]


def test_shift_detected_from_the_reference_only_interval():
    sep = measure("reference-only", np.arange(20.0) + 15, np.arange(20.0), n_bootstrap=200, seed=0).metrics
    mixed = measure("reference-only", np.arange(0.0, 40.0, 2), np.arange(1.0, 41.0, 2), n_bootstrap=200, seed=0).metrics
    assert sep.auc_ci95[0] > 0.5 and shift_detected(sep, 200) is True
    assert mixed.auc_ci95[0] < 0.5 < mixed.auc_ci95[1] and shift_detected(mixed, 200) is False
    assert shift_detected(sep, 0) is None and shift_detected(None, 200) is None


# ---------------------------------------------------------------------------------------------
# the gate


def _report(schema: str = "privaudit.report/2", **defense: Any) -> dict[str, Any]:
    def attack(name: str, auc: float, tpr: float, eps: float) -> dict[str, Any]:
        return {"name": name, "auc": auc, "auc_ci95": [auc - 0.05, min(auc + 0.05, 1.0)], "tpr_at_fpr": {"0.01": tpr / 2, "0.1": tpr},
                "tpr_at_fpr_ci95": {"0.01": [0.0, tpr], "0.1": [tpr / 2, tpr]}, "advantage": 0.1, "balanced_accuracy": 0.55,
                "epsilon_lb": eps, "delta": defense.get("delta", 0.0)}

    loss, lira = attack("loss", 0.55, 0.2, 0.1), attack("lira-online", 0.9, 0.7, 1.2)
    r: dict[str, Any] = {"schema": schema, "model": {"path": "m.pt", "defense": {"method": "none", **defense}},
                         "data": {"members": {"path": "a", "count": 200}, "nonmembers": {"path": "b", "count": 200}}}
    if schema == "privaudit.report/1":
        r["attack"] = {**loss, "name": "reconstruction-loss"}
    else:
        r["attacks"] = {"loss": loss, "lira-online": lira}
        r["attack"] = {**lira, "selected_by": "highest TPR at 1% FPR, ties by AUC"}
    return json.loads(json.dumps(r))


def _gate(tmp_path: Path, report: dict[str, Any], *args: str):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    return runner.invoke(app, ["gate", str(path), "--no-policy", *args])


def test_max_tpr_at_fpr_takes_a_colon():
    assert parse_tpr_flag(["0.1:0.5", "1e-2=0.05"]) == {"0.1": 0.5, "0.01": 0.05}


def test_gate_judges_the_strongest_by_default_and_the_pinned_attack_on_request(tmp_path):
    r = _report()
    result = _gate(tmp_path, r, "--max-auc", "0.6", "--max-tpr-at-fpr", "0.1:0.5")
    assert result.exit_code == 1, result.output  # the strongest (lira-online): AUC 0.9, TPR 0.7 at 10%
    assert _gate(tmp_path, r, "--max-auc", "0.6", "--max-tpr-at-fpr", "0.1:0.5", "--attack", "loss").exit_code == 0
    v = evaluate_gate(r, make_policy({"max_auc": 0.6, "attack": "loss"}))
    assert [(c.name, c.value, c.metric) for c in v.checks] == [("AUC [loss]", 0.55, "attacks.loss.auc")]
    bad = _gate(tmp_path, r, "--max-auc", "0.6", "--attack", "lira-offline")
    assert bad.exit_code == 2 and "has no attack 'lira-offline'" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    (tmp_path / "privaudit.toml").write_text('[gate]\nmax_auc = 0.6\nattack = "loss"\n')
    path = tmp_path / "r.json"
    assert runner.invoke(app, ["gate", str(path), "--policy", str(tmp_path / "privaudit.toml")]).exit_code == 0


def test_gate_max_epsilon_lb(tmp_path):
    r = _report()
    assert _gate(tmp_path, r, "--max-epsilon-lb", "1.0").exit_code == 1  # lira-online's bound 1.2
    assert _gate(tmp_path, r, "--max-epsilon-lb", "1.0", "--attack", "loss").exit_code == 0


def test_a_bound_above_the_dp_claim_fails_the_gate_whatever_the_thresholds(tmp_path):
    r = _report(epsilon=0.5, delta=1e-5)
    r["model"]["defense"]["method"] = "dpsgd"
    result = _gate(tmp_path, r, "--max-auc", "1")
    assert result.exit_code == 1, result.output
    assert "DP implementation or its privacy accounting is wrong" in result.stderr
    r["model"]["defense"]["epsilon"] = 2.0  # the claim covers the measured 1.2
    assert _gate(tmp_path, r, "--max-auc", "1").exit_code == 0
    v = evaluate_gate(r, make_policy({"max_auc": 1.0}))
    assert [(c.name, c.value, c.limit, c.passed) for c in v.checks][-1] == ("DP claim (ε lower bound ≤ claimed ε)", 1.2, 2.0, True)


def test_report1_still_gates(tmp_path):
    r = _report("privaudit.report/1")
    assert _gate(tmp_path, r, "--max-auc", "0.6").exit_code == 0
    assert _gate(tmp_path, r, "--max-auc", "0.5").exit_code == 1
    assert _gate(tmp_path, r, "--max-auc", "0.6", "--attack", "loss").exit_code == 0  # a report/1's attack is the loss attack
    older = _report("privaudit.report/1")
    del older["attack"]["epsilon_lb"]
    result = _gate(tmp_path, older, "--max-epsilon-lb", "1")
    assert result.exit_code == 2 and "attack.epsilon_lb" in result.stderr
    result = _gate(tmp_path, r, "--max-auc", "0.6", "--attack", "lira-online")
    assert result.exit_code == 2 and "--online --count 4" in result.stderr


def test_report2_values_are_validated(tmp_path):
    r = _report()
    r["attacks"]["lira-online"]["tpr_at_fpr_ci95"]["0.1"] = [0.8, 0.2]
    result = _gate(tmp_path, r, "--max-auc", "1")
    assert result.exit_code == 2 and "attacks.lira-online.tpr_at_fpr_ci95" in result.stderr
    r = _report()
    r["attacks"]["loss"]["epsilon_lb"] = -1.0
    assert "attacks.loss.epsilon_lb" in _gate(tmp_path, r, "--max-auc", "1").stderr
    r = _report()
    del r["attacks"]
    assert "attacks" in _gate(tmp_path, r, "--max-auc", "1").stderr


def test_a_shifted_report_is_flagged_in_the_comparison(tmp_path):
    from privaudit.report.markdown import to_markdown
    from privaudit.report.tables import SHIFT_NOTE

    r = _report()
    r["data"]["distribution_shift"] = {"detected": True, "auc": 0.8, "auc_ci95": [0.7, 0.9], "attack": "reference-only", "note": "differ"}
    rows = rows_of("m", r)
    assert [x.shift for x in rows] == [True, True] and rows[0].name == "m · lira-online"
    text = to_markdown(rows)
    assert "| m · lira-online † |" in text and "| m · loss |" in text and SHIFT_NOTE in text
    r["data"]["distribution_shift"]["detected"] = False
    assert SHIFT_NOTE not in to_markdown(rows_of("m", r))


def test_fail_above_auc_judges_the_strongest(overfit_teacher, online, tmp_path):
    ckpt, members, nonmembers = overfit_teacher
    result = runner.invoke(app, ["attack", str(ckpt), "--members", str(members), "--nonmembers", str(nonmembers), "--references", str(online),
                                 "--bootstrap", "0", "--device", "cpu", "--quiet", "--fail-above-auc", "0.9"])
    assert result.exit_code == 1, result.output
    assert "attack AUC (loss) 1.0000 exceeds --fail-above-auc 0.9" in result.stderr


def test_the_comparison_marks_a_bound_above_the_dp_claim(tmp_path):
    from privaudit.report.tables import cells

    r = _report(epsilon=0.5, delta=1e-5)
    shown = cells(rows_of("dp", r)[0])
    assert shown[-2:] == ["0.500", "1.200 > ε!"]
    r["model"]["defense"]["epsilon"] = 2.0
    assert cells(rows_of("dp", r)[0])[-2:] == ["2.000", "1.200"]
