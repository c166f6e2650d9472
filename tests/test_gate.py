"""The release gate: library (policy, verdict, loaders, JUnit, Markdown) and `privaudit gate` CLI."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from privaudit.cli.gate import gate
from privaudit.errors import InputError, ReportError
from privaudit.gate import (
    GatePolicy,
    discover_policy,
    evaluate_gate,
    load_policy,
    make_policy,
    merge_policies,
    parse_tpr_flag,
    to_junit_xml,
    to_markdown,
)
from privaudit.report.schema import REPORT_SCHEMA, load_report

EXAMPLE_POLICY = Path(__file__).resolve().parents[1] / "examples" / "privaudit.toml"


def make_report(**overrides: Any) -> dict[str, Any]:
    """A minimal valid privaudit.report/1 dict (an AKD-like model); ``overrides`` set dotted keys."""
    r: dict[str, Any] = {
        "schema": "privaudit.report/1",
        "tool": {"version": "0.1.0"},
        "created": "2026-01-01T00:00:00+00:00",
        "seed": 0,
        "model": {"path": "student.pt", "sha256": "0" * 64, "format": "privaudit", "arch": {}, "defense": {"method": "akd"}},
        "data": {"members": {"path": "train", "count": 400}, "nonmembers": {"path": "test", "count": 106}},
        "attack": {
            "name": "reconstruction-l1", "auc": 0.5756, "auc_ci95": [0.52, 0.63],
            "tpr_at_fpr": {"0.001": None, "0.01": 0.03, "0.1": 0.14},
            "advantage": 0.12, "balanced_accuracy": 0.56, "threshold": 0.2,
            "member_loss": {"mean": 0.2, "std": 0.05}, "nonmember_loss": {"mean": 0.21, "std": 0.05},
            # the negated score, as privaudit writes it (its auc follows attack.auc below)
            "flipped_score": {"auc": None, "auc_ci95": [0.37, 0.48], "tpr_at_fpr": {"0.001": None, "0.01": 0.0, "0.1": 0.05},
                              "advantage": 0.02, "balanced_accuracy": 0.51},
        },
        "utility": {"kid": 0.01, "kid_std": 0.001, "kid_black": 0.13, "nkid": 0.078, "l1": 0.2, "psnr": 14.0, "ssim": 0.3},
        "generalization_gap": {"nkid_train": 0.07, "nkid_test": 0.078, "gap": 0.008, "l1_train": 0.19, "l1_test": 0.2},
    }
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        node = r
        for p in parents:
            node = node[p]
        node[last] = value
    a = r.get("attack")
    if isinstance(a, dict) and isinstance(a.get("flipped_score"), dict) and a["flipped_score"].get("auc") is None:
        auc = a.get("auc")
        a["flipped_score"]["auc"] = 1.0 - auc if isinstance(auc, (int, float)) and not isinstance(auc, bool) else None
    return r


def write_report(path: Path, report: dict[str, Any] | None = None) -> Path:
    path.write_text(json.dumps(report if report is not None else make_report()), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# CLI harness

app = typer.Typer()
app.command("gate")(gate)


@app.command("other")
def _other() -> None:
    """A second command so that Typer keeps the `gate` subcommand name."""


runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(app, ["gate", *[str(a) for a in args]])


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in an empty folder, so no privaudit.toml / pyproject.toml is discovered by accident."""
    monkeypatch.chdir(tmp_path)


# ---------------------------------------------------------------------------------------------
# Library: evaluate_gate


def test_a_report_written_by_attack_is_read_by_the_gate(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The schema string on disk is the one the reader accepts, and the whole report passes its checks."""
    from conftest import write_pairs
    from privaudit.cli.app import app as real_app

    m, n = write_pairs(tmp_path / "m", 10, seed=1), write_pairs(tmp_path / "n", 10, seed=2)
    out = tmp_path / "r.json"
    result = runner.invoke(real_app, ["attack", str(tiny_checkpoint), "--members", str(m), "--nonmembers", str(n), "--json", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["schema"] == "privaudit.report/1"  # the literal: the contract, not the constant compared with itself
    data = load_report(out)
    v = evaluate_gate(data, GatePolicy(max_auc=1.0, max_advantage=1.0))
    assert v.passed and v.checks[0].value == max(data["attack"]["auc"], 1 - data["attack"]["auc"])
    # and a report of another schema version is refused, not read as this one
    write_report(tmp_path / "next.json", {**data, "schema": "privaudit.report/3"})
    with pytest.raises(ReportError, match="has schema 'privaudit.report/3'"):
        load_report(tmp_path / "next.json")


def test_all_thresholds_pass_in_order() -> None:
    policy = GatePolicy(max_auc=0.6, max_auc_ci_upper=0.65, max_tpr_at_fpr={"0.1": 0.2, "0.01": 0.05}, max_advantage=0.2,
                        max_nkid=0.1, max_gap=0.02)
    v = evaluate_gate(make_report(), policy)
    assert v.passed and not v.failed
    assert [c.name for c in v.checks] == ["AUC", "AUC 95% CI upper", "TPR @ 1% FPR", "TPR @ 10% FPR", "advantage", "NKID", "generalization gap"]
    assert v.checks[0].value == 0.5756 and v.checks[0].limit == 0.6 and v.checks[0].metric == "attack.auc"
    assert v.checks[1].value == 0.63


def test_value_equal_to_limit_passes_and_above_fails() -> None:
    assert evaluate_gate(make_report(), GatePolicy(max_auc=0.5756)).passed
    v = evaluate_gate(make_report(**{"attack.auc": 0.9646}), GatePolicy(max_auc=0.6, max_nkid=0.1))
    assert not v.passed
    assert [c.name for c in v.failed] == ["AUC"]


def test_ci_upper_is_stricter_than_auc() -> None:
    v = evaluate_gate(make_report(), GatePolicy(max_auc=0.6, max_auc_ci_upper=0.6))
    assert [c.passed for c in v.checks] == [True, False]


def test_epsilon_checked_on_dpsgd_model_and_inf_fails() -> None:
    dp = make_report(**{"model.defense": {"method": "dpsgd", "epsilon": 3.2, "delta": 1e-5}})
    assert evaluate_gate(dp, GatePolicy(max_epsilon=8)).passed
    no_noise = make_report(**{"model.defense": {"method": "dpsgd", "epsilon": float("inf"), "delta": 1e-5}})
    assert not evaluate_gate(no_noise, GatePolicy(max_epsilon=8)).passed


def test_empty_policy_is_an_error_not_a_pass() -> None:
    with pytest.raises(InputError, match="no thresholds given"):
        evaluate_gate(make_report(), GatePolicy())


@pytest.mark.parametrize(
    ("policy", "overrides", "needle"),
    [
        (GatePolicy(max_nkid=0.1), {"utility": {"l1": 0.2}}, "utility.nkid; run `privaudit evaluate` with Inception weights"),
        (GatePolicy(max_nkid=0.1), {"utility.nkid": None}, "--max-nkid"),
        (GatePolicy(max_gap=0.1), {"generalization_gap": None}, "generalization_gap.gap"),
        (GatePolicy(max_epsilon=8), {}, "model.defense.epsilon (defense: akd)"),
        (GatePolicy(max_auc_ci_upper=0.6), {"attack.auc_ci95": None}, "attack.auc_ci95"),
        (GatePolicy(max_auc=0.6), {"attack.auc": "high"}, "not a number"),
        (GatePolicy(max_advantage=0.2), {"attack.advantage": True}, "not a number"),
    ],
)
def test_missing_or_bad_metric_is_a_report_error(policy: GatePolicy, overrides: dict[str, Any], needle: str) -> None:
    with pytest.raises(ReportError, match=None) as info:
        evaluate_gate(make_report(**overrides), policy, report_name="r.json")
    assert needle in str(info.value)
    assert "r.json" in str(info.value)


@pytest.mark.parametrize("key", ["0.01", "1e-2", "0.010", "1.0E-2", ".01"])
def test_tpr_fpr_keys_match_numerically(key: str) -> None:
    v = evaluate_gate(make_report(), GatePolicy(max_tpr_at_fpr={key: 0.05}))
    assert len(v.checks) == 1 and v.checks[0].value == 0.03 and v.passed
    # and the report's own keys may be spelled differently too
    v = evaluate_gate(make_report(**{"attack.tpr_at_fpr": {"1e-2": 0.07}}), GatePolicy(max_tpr_at_fpr={key: 0.05}))
    assert not v.passed and v.checks[0].value == 0.07


def test_null_tpr_is_a_report_error_naming_the_needed_count() -> None:
    with pytest.raises(ReportError) as info:
        evaluate_gate(make_report(), GatePolicy(max_tpr_at_fpr={"1e-3": 0.01}), report_name="r.json")
    msg = str(info.value)
    assert "null" in msg and "1000 non-members" in msg and "106" in msg


def test_tpr_at_fpr_the_report_lacks_is_a_report_error() -> None:
    with pytest.raises(ReportError, match="it has FPRs 0.001, 0.01, 0.1"):
        evaluate_gate(make_report(), GatePolicy(max_tpr_at_fpr={"0.05": 0.1}))


# ---------------------------------------------------------------------------------------------
# Library: policies


def test_parse_tpr_flag_normalises_and_rejects_malformed() -> None:
    assert parse_tpr_flag(["1e-2=0.05", "0.1 = 0.2"]) == {"0.01": 0.05, "0.1": 0.2}
    for bad in ["0.01", "x=0.05", "0.01=y", "2=0.1", "0=0.1", "=0.1"]:
        with pytest.raises(InputError, match="FPR=MAX"):
            parse_tpr_flag([bad])
    with pytest.raises(InputError, match="twice"):
        parse_tpr_flag(["0.01=0.05", "1e-2=0.04"])


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"max_auc": 1.5}, "--max-auc must be a number in [0, 1]"),
        ({"max_auc": float("nan")}, "--max-auc"),
        ({"max_nkid": -0.1}, "--max-nkid must be a finite number >= 0"),
        ({"max_epsilon": float("inf")}, "--max-epsilon"),
        ({"max_tpr_at_fpr": {"0.01": 1.2}}, "--max-tpr-at-fpr[0.01]"),
    ],
)
def test_make_policy_rejects_bad_flag_values(values: dict[str, Any], needle: str) -> None:
    with pytest.raises(InputError) as info:
        make_policy(values)
    assert needle in str(info.value)


def test_merge_flags_override_policy() -> None:
    base = GatePolicy(max_auc=0.6, max_nkid=0.1, max_tpr_at_fpr={"0.01": 0.05, "0.1": 0.2})
    over = GatePolicy(max_auc=0.7, max_tpr_at_fpr={"1e-2": 0.08})
    m = merge_policies(base, over)
    assert m.max_auc == 0.7 and m.max_nkid == 0.1
    assert m.max_tpr_at_fpr == {"0.01": 0.08, "0.1": 0.2}


def test_load_policy_privaudit_toml(tmp_path: Path) -> None:
    p = tmp_path / "privaudit.toml"
    p.write_text('[gate]\nmax_auc = 0.6\nmax_epsilon = 8\nmax_tpr_at_fpr = { "1e-2" = 0.05 }\n', encoding="utf-8")
    assert load_policy(p) == GatePolicy(max_auc=0.6, max_epsilon=8.0, max_tpr_at_fpr={"0.01": 0.05})


def test_load_policy_pyproject(tmp_path: Path) -> None:
    p = tmp_path / "pyproject.toml"
    p.write_text('[project]\nname = "x"\n\n[tool.privaudit.gate]\nmax_nkid = 0.1\n', encoding="utf-8")
    assert load_policy(p) == GatePolicy(max_nkid=0.1)


def test_example_policy_loads() -> None:
    policy = load_policy(EXAMPLE_POLICY)
    assert policy.max_auc == 0.6 and policy.max_tpr_at_fpr == {"0.01": 0.05} and policy.max_nkid == 0.1
    assert evaluate_gate(make_report(), policy).passed


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[gate]\nmax_aux = 0.6\n", "unknown key(s) max_aux; valid keys: max_auc"),
        ('[gate]\nmax_auc = "0.6"\n', "max_auc must be a number in [0, 1]"),
        ("[gate]\nmax_auc = true\n", "max_auc must be a number"),
        ("[gate]\nmax_advantage = 1.5\n", "max_advantage must be a number in [0, 1]"),
        ("[gate]\nmax_tpr_at_fpr = { 0.01 = 0.05 }\n", "quote the FPR keys"),
        ('[gate]\nmax_tpr_at_fpr = { "0.01" = 2 }\n', "max_tpr_at_fpr[0.01]"),
        ('[gate]\nmax_tpr_at_fpr = { "abc" = 0.1 }\n', "FPR 'abc'"),
        ("[gate]\nmax_tpr_at_fpr = 0.05\n", "must be a table of FPR = MAX"),
        ("[gate\nmax_auc = 0.6\n", "not valid TOML"),
        ("[other]\nmax_auc = 0.6\n", "has no [gate] table"),
        ("gate = 3\n", "must be a table of thresholds"),
    ],
)
def test_load_policy_errors(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "policy.toml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ReportError) as info:
        load_policy(p)
    assert needle in str(info.value) and str(p) in str(info.value)


def test_load_policy_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        load_policy(tmp_path / "nope.toml")


def test_discover_policy(tmp_path: Path) -> None:
    assert discover_policy(tmp_path) is None
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n', encoding="utf-8")
    assert discover_policy(tmp_path) is None  # a pyproject without [tool.privaudit.gate] does not count
    (tmp_path / "pyproject.toml").write_text("[tool.privaudit.gate]\nmax_auc = 0.7\n", encoding="utf-8")
    assert discover_policy(tmp_path) == tmp_path / "pyproject.toml"
    (tmp_path / "privaudit.toml").write_text("[gate]\nmax_auc = 0.6\n", encoding="utf-8")
    assert discover_policy(tmp_path) == tmp_path / "privaudit.toml"  # privaudit.toml wins


# ---------------------------------------------------------------------------------------------
# Library: loaders and renderers


def test_load_report_ok_and_errors(tmp_path: Path) -> None:
    assert load_report(write_report(tmp_path / "r.json"))["attack"]["auc"] == 0.5756
    assert load_report(tmp_path / "r.json", require_attack=True)["attack"]["auc"] == 0.5756
    no_attack = make_report()
    del no_attack["attack"]
    assert "attack" not in load_report(write_report(tmp_path / "utility.json", no_attack))  # the gate says which metric it lacks
    with pytest.raises(ReportError, match="utility.json has no attack results; write it with privaudit attack or evaluate"):
        load_report(tmp_path / "utility.json", require_attack=True)
    with pytest.raises(ReportError, match="does not exist"):
        load_report(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ReportError, match="not readable JSON"):
        load_report(tmp_path / "bad.json")
    write_report(tmp_path / "old.json", make_report(schema="privaudit.report/0"))
    with pytest.raises(ReportError, match="has schema 'privaudit.report/0'"):
        load_report(tmp_path / "old.json")
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ReportError, match="has schema 'list'"):
        load_report(tmp_path / "list.json")
    with pytest.raises(ReportError, match="is a folder"):
        load_report(tmp_path)


def test_junit_one_testcase_per_check_with_failures_marked() -> None:
    report = make_report(**{"attack.auc": 0.9646})
    v = evaluate_gate(report, GatePolicy(max_auc=0.6, max_tpr_at_fpr={"0.01": 0.05}, max_nkid=0.1))
    root = ET.fromstring(to_junit_xml(v, 'a "b" <c> & d.json'))
    suites = root.findall(".//testsuite")
    assert len(suites) == 1 and suites[0].get("name") == "privaudit.gate"
    cases = suites[0].findall("testcase")
    assert [c.get("name") for c in cases] == ["AUC", "TPR @ 1% FPR", "NKID"]
    assert [c.find("failure") is not None for c in cases] == [True, False, False]
    assert "0.9646" in cases[0].find("failure").get("message")  # type: ignore[union-attr]
    assert suites[0].get("tests") == "3" and suites[0].get("failures") == "1"
    prop = root.find(".//property[@name='report']")
    assert prop is not None and prop.get("value") == 'a "b" <c> & d.json'  # escaped on the way in, intact on the way out


def test_markdown_summary() -> None:
    v = evaluate_gate(make_report(), GatePolicy(max_auc=0.6, max_auc_ci_upper=0.6))
    md = to_markdown(v, "r|1.json")
    assert md.startswith("### privaudit gate: FAIL")
    assert "| check | value | limit | result |" in md
    assert "| AUC | 0.5756 | 0.6 | PASS |" in md and "| AUC 95% CI upper | 0.63 | 0.6 | **FAIL** |" in md
    assert "r\\|1.json" in md and md.endswith("\n")
    assert to_markdown(evaluate_gate(make_report(), GatePolicy(max_auc=0.6)), "r.json").startswith("### privaudit gate: PASS")


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_pass(tmp_path: Path) -> None:
    r = write_report(tmp_path / "r.json")
    result = invoke(r, "--max-auc", "0.6", "--max-tpr-at-fpr", "0.01=0.05", "--max-nkid", "0.1")
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "FAIL" not in result.output


def test_cli_fail(tmp_path: Path) -> None:
    r = write_report(tmp_path / "r.json", make_report(**{"attack.auc": 0.9646}))
    result = invoke(r, "--max-auc", "0.6")
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "gate failed" in result.output


def test_cli_missing_metric(tmp_path: Path) -> None:
    report = make_report()
    del report["utility"]
    r = write_report(tmp_path / "r.json", report)
    result = invoke(r, "--max-nkid", "0.1")
    assert result.exit_code == 2, result.output
    assert "has no utility.nkid" in result.output and "privaudit evaluate" in result.output
    assert "Traceback" not in result.output


def test_cli_bad_schema(tmp_path: Path) -> None:
    r = write_report(tmp_path / "r.json", make_report(schema="something/2"))
    result = invoke(r, "--max-auc", "0.6")
    assert result.exit_code == 2, result.output
    assert "schema 'something/2'" in result.output


def test_cli_unreadable_json(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text('{"schema": "privaudit.report/1",', encoding="utf-8")
    result = invoke(tmp_path / "r.json", "--max-auc", "0.6")
    assert result.exit_code == 2, result.output
    assert "not readable JSON" in result.output


def test_cli_missing_file(tmp_path: Path) -> None:
    result = invoke(tmp_path / "nope.json", "--max-auc", "0.6")
    assert result.exit_code == 2, result.output
    assert "nope.json does not exist" in result.output


def test_cli_no_thresholds(tmp_path: Path) -> None:
    r = write_report(tmp_path / "r.json")
    result = invoke(r)
    assert result.exit_code == 2, result.output
    assert "no thresholds given; pass --max-auc ... or --policy FILE" in result.output


def test_cli_out_of_range_and_malformed_flags(tmp_path: Path) -> None:
    r = write_report(tmp_path / "r.json")
    result = invoke(r, "--max-auc", "1.5")
    assert result.exit_code == 2, result.output
    assert "--max-auc must be a number in [0, 1]" in result.output
    result = invoke(r, "--max-tpr-at-fpr", "0.01;0.05")  # "0.01:0.05" is accepted since issue 12
    assert result.exit_code == 2, result.output
    assert "is not FPR:MAX (or FPR=MAX)" in result.output
    assert len([line for line in result.output.splitlines() if "error" in line]) == 1


def test_cli_null_tpr(tmp_path: Path) -> None:
    r = write_report(tmp_path / "r.json")
    result = invoke(r, "--max-tpr-at-fpr", "0.001=0.01")
    assert result.exit_code == 2, result.output
    assert "null" in result.output and "1000 non-members" in result.output


def test_cli_tpr_key_normalisation(tmp_path: Path) -> None:
    r = write_report(tmp_path / "r.json")
    for spelling in ("0.01", "1e-2", "0.010"):
        result = invoke(r, "--max-tpr-at-fpr", f"{spelling}=0.02")
        assert result.exit_code == 1, result.output  # 0.03 > 0.02: the key matched, the check ran
        result = invoke(r, "--max-tpr-at-fpr", f"{spelling}=0.05")
        assert result.exit_code == 0, result.output


def test_cli_policy_file_and_flag_override(tmp_path: Path) -> None:
    r = write_report(tmp_path / "r.json", make_report(**{"attack.auc": 0.65}))
    policy = tmp_path / "strict.toml"
    policy.write_text("[gate]\nmax_auc = 0.6\nmax_nkid = 0.1\n", encoding="utf-8")
    result = invoke(r, "--policy", policy)
    assert result.exit_code == 1, result.output
    assert "strict.toml" in result.output
    result = invoke(r, "--policy", policy, "--max-auc", "0.7")
    assert result.exit_code == 0, result.output
    assert "command-line flags" in result.output
    # the flag overrides only its own key: NKID from the policy still applies
    r2 = write_report(tmp_path / "r2.json", make_report(**{"attack.auc": 0.65, "utility.nkid": 0.2}))
    result = invoke(r2, "--policy", policy, "--max-auc", "0.7")
    assert result.exit_code == 1, result.output


def test_cli_bad_policy_file(tmp_path: Path) -> None:
    r = write_report(tmp_path / "r.json")
    policy = tmp_path / "p.toml"
    policy.write_text("[gate]\nmax_aucc = 0.6\n", encoding="utf-8")
    result = invoke(r, "--policy", policy)
    assert result.exit_code == 2, result.output
    assert "unknown key(s) max_aucc" in result.output
    result = invoke(r, "--policy", tmp_path / "none.toml")
    assert result.exit_code == 2, result.output


def test_cli_discovers_pyproject_gate_table(tmp_path: Path) -> None:
    r = write_report(tmp_path / "r.json", make_report(**{"attack.auc": 0.65}))
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "m"\n\n[tool.privaudit.gate]\nmax_auc = 0.6\n', encoding="utf-8")
    result = invoke("r.json")  # cwd is tmp_path (autouse fixture)
    assert result.exit_code == 1, result.output
    assert "policy: pyproject.toml (found in the current folder)" in result.output
    result = invoke(r, "--max-auc", "0.7")
    assert result.exit_code == 0, result.output
    result = invoke(r, "--no-policy")
    assert result.exit_code == 2, result.output  # no thresholds left
    result = invoke(r, "--policy", tmp_path / "pyproject.toml")
    assert result.exit_code == 1, result.output


def test_cli_discovers_privaudit_toml(tmp_path: Path) -> None:
    r = write_report(tmp_path / "r.json")
    (tmp_path / "privaudit.toml").write_text("[gate]\nmax_nkid = 0.05\n", encoding="utf-8")
    result = invoke(r.name)
    assert result.exit_code == 1, result.output
    assert "policy: privaudit.toml (found in the current folder)" in result.output


def test_cli_junit(tmp_path: Path) -> None:
    r = write_report(tmp_path / "r.json")
    out = tmp_path / "gate.xml"
    result = invoke(r, "--max-auc", "0.6", "--max-auc-ci-upper", "0.6", "--max-tpr-at-fpr", "1e-2=0.05", "--max-advantage", "0.1", "--junit", out)
    assert result.exit_code == 1, result.output
    root = ET.parse(out).getroot()
    cases = root.findall(".//testsuite[@name='privaudit.gate']/testcase")
    assert [c.get("name") for c in cases] == ["AUC", "AUC 95% CI upper", "TPR @ 1% FPR", "advantage"]
    assert [c.find("failure") is not None for c in cases] == [False, True, False, True]
    assert not list(tmp_path.glob(".gate.xml.*"))  # no temporary file left behind


def test_cli_markdown_appends(tmp_path: Path) -> None:
    r = write_report(tmp_path / "r.json")
    summary = tmp_path / "summary.md"
    first = invoke(r, "--max-auc", "0.6", "--markdown", summary)
    assert first.exit_code == 0, first.output
    second = invoke(r, "--max-auc", "0.5", "--markdown", summary)
    assert second.exit_code == 1, second.output
    text = summary.read_text(encoding="utf-8")
    assert text.count("### privaudit gate:") == 2
    assert text.index("### privaudit gate: PASS") < text.index("### privaudit gate: FAIL")
    assert "\n\n### privaudit gate: FAIL" in text


def test_cli_markdown_appends_to_existing_file(tmp_path: Path) -> None:
    r = write_report(tmp_path / "r.json")
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step", encoding="utf-8")
    result = invoke(r, "--max-auc", "0.6", "--markdown", summary)
    assert result.exit_code == 0, result.output
    assert summary.read_text(encoding="utf-8").startswith("# earlier step\n### privaudit gate: PASS")


def test_cli_unwritable_junit_writes_nothing(tmp_path: Path) -> None:
    r = write_report(tmp_path / "r.json")
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    summary = tmp_path / "summary.md"
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke(r, "--max-auc", "0.6", "--junit", blocker / "gate.xml", "--markdown", summary)
    assert result.exit_code == 2, result.output
    assert "is not a folder" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no summary, no temporary files
    assert blocker.read_text(encoding="utf-8") == "x"


def test_cli_unwritable_markdown_writes_nothing(tmp_path: Path) -> None:
    r = write_report(tmp_path / "r.json")
    junit = tmp_path / "gate.xml"
    result = invoke(r, "--max-auc", "0.6", "--junit", junit, "--markdown", tmp_path / "missing" / "s.md")
    assert result.exit_code == 2, result.output
    assert not junit.exists()


def test_cli_report_is_not_modified(tmp_path: Path) -> None:
    report = make_report()
    r = write_report(tmp_path / "r.json", copy.deepcopy(report))
    invoke(r, "--max-auc", "0.6", "--junit", tmp_path / "j.xml")
    assert json.loads(r.read_text(encoding="utf-8")) == report
