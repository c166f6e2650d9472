"""The release gate: thresholds on a report's metrics → a verdict (pass / fail per check).

``evaluate_gate(report, policy)`` is a pure function; the loaders around it read a report
(``load_report``) and a policy file (``load_policy``: ``privaudit.toml`` with a ``[gate]`` table,
or ``pyproject.toml`` with ``[tool.privaudit.gate]``), and the renderers turn a verdict into
JUnit XML and a Markdown summary for CI. A check passes when ``value <= limit``.

Every problem with the inputs (unreadable report, a metric the report lacks, a bad threshold,
no threshold at all) raises a ``ReportError`` or ``InputError`` (exit code 2): a gate never
passes silently because it had nothing to check.
"""

from __future__ import annotations

import math
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from privaudit.errors import InputError, PrivauditError, ReportError
from privaudit.report import (  # noqa: F401  (REPORT_SCHEMA and load_report re-exported)
    REPORT_SCHEMA,
    ROC_POINTS_LIMIT,
    flipped_bound_advantage,
    flipped_bound_tpr,
    flipped_roc,
    load_report,
    roc_advantage,
    roc_tpr_at,
    usable_roc,
    validate_report,
)

POLICY_FILE = "privaudit.toml"

_EVALUATE_HINT = "run `privaudit evaluate` with Inception weights (--inception-weights FILE, not --no-kid) and --json"
_ATTACK_HINT = "run `privaudit attack` or `privaudit evaluate` with --json"


@dataclass(frozen=True)
class _Spec:
    """One scalar threshold: its policy key, check name, report key and range of valid limits."""

    key: str
    label: str
    metric: str
    kind: str  # "rate": [0, 1]; "nonneg": >= 0; "real": any finite number
    hint: str


_SPECS: tuple[_Spec, ...] = (
    _Spec("max_auc", "AUC", "attack.auc", "rate", _ATTACK_HINT),
    _Spec("max_auc_ci_upper", "AUC 95% CI upper", "attack.auc_ci95", "rate", _ATTACK_HINT + " (and --bootstrap > 0)"),
    _Spec("max_advantage", "advantage", "attack.advantage", "rate", _ATTACK_HINT),
    _Spec("max_nkid", "NKID", "utility.nkid", "nonneg", _EVALUATE_HINT),
    _Spec("max_epsilon", "ε (DP-SGD)", "model.defense.epsilon", "nonneg",
          "only DP-SGD models record one: harden with `privaudit defend --method dpsgd`"),
    _Spec("max_gap", "generalization gap", "generalization_gap.gap", "real", _EVALUATE_HINT),
)
_TPR_KEY = "max_tpr_at_fpr"
VALID_KEYS: tuple[str, ...] = tuple(s.key for s in _SPECS) + (_TPR_KEY,)


@dataclass(frozen=True)
class GatePolicy:
    """Optional upper limits on a report's metrics; ``None`` (or no entry) means "not checked".

    ``max_tpr_at_fpr`` maps an FPR (a string such as ``"0.01"``; ``"1e-2"`` means the same) to the
    largest TPR allowed at that FPR.
    """

    max_auc: float | None = None
    max_auc_ci_upper: float | None = None
    max_tpr_at_fpr: dict[str, float] = field(default_factory=dict)
    max_advantage: float | None = None
    max_nkid: float | None = None
    max_epsilon: float | None = None
    max_gap: float | None = None

    @property
    def empty(self) -> bool:
        """True when the policy sets no threshold at all."""
        return not self.max_tpr_at_fpr and all(getattr(self, s.key) is None for s in _SPECS)


@dataclass(frozen=True)
class GateCheck:
    """One threshold applied to one metric: passed is ``value <= limit``; ``metric`` says where the
    value came from (``1 − attack.auc`` when the flipped score is the stronger direction)."""

    name: str
    value: float
    limit: float
    passed: bool
    metric: str = ""
    note: str = ""  # e.g. that the value is the flipped score's, or an upper bound


@dataclass(frozen=True)
class GateVerdict:
    """All checks of one gate run, in a fixed order."""

    checks: tuple[GateCheck, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> tuple[GateCheck, ...]:
        return tuple(c for c in self.checks if not c.passed)


# ---------------------------------------------------------------------------------------------
# FPR keys


def parse_fpr(key: str | float) -> float:
    """``"0.01"``, ``"1e-2"``, ``"0.010"`` or ``0.01`` → 0.01; ValueError unless a number in (0, 1)."""
    if isinstance(key, bool):
        raise ValueError(f"{key!r} is not an FPR")
    f = float(key)
    if not (math.isfinite(f) and 0.0 < f < 1.0):
        raise ValueError(f"FPR {key!r} is not in (0, 1)")
    return f


def fpr_label(fpr: float) -> str:
    """0.01 → ``"0.01"``: the canonical spelling of an FPR (as the report writes it)."""
    return format(fpr, "g")


def _canonical(key: str) -> str:
    """The canonical spelling of an FPR key; an invalid key is kept (evaluate_gate reports it)."""
    try:
        return fpr_label(parse_fpr(key))
    except (TypeError, ValueError):
        return key


def _pct(fpr: float) -> str:
    return f"{format(100 * fpr, '.4g')}%"


def parse_tpr_flag(values: list[str] | None) -> dict[str, float]:
    """``["0.01=0.05", "1e-3=0.01"]`` → ``{"0.01": 0.05, "0.001": 0.01}``; InputError on a malformed item."""
    out: dict[str, float] = {}
    for item in values or []:
        fpr_text, sep, limit_text = item.partition("=")
        try:
            if not sep:
                raise ValueError
            fpr = parse_fpr(fpr_text.strip())
            limit = float(limit_text.strip())
        except ValueError:
            raise InputError(f"--max-tpr-at-fpr {item!r} is not FPR=MAX; write e.g. --max-tpr-at-fpr 0.01=0.05 (FPR in (0, 1), MAX in [0, 1])") from None
        label = fpr_label(fpr)
        if label in out:
            raise InputError(f"--max-tpr-at-fpr gives FPR {label} twice; give each FPR once")
        out[label] = limit
    return out


# ---------------------------------------------------------------------------------------------
# Policies


def _limit(value: Any, kind: str, name: str, error: type[PrivauditError]) -> float:
    """Validate one threshold value; ``name`` says where it came from (a flag or a policy key)."""
    ranges = {"rate": "a number in [0, 1]", "nonneg": "a finite number >= 0", "real": "a finite number"}
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and kind == "rate":
        ok = 0.0 <= value <= 1.0
    elif ok and kind == "nonneg":
        ok = value >= 0.0
    if not ok:
        raise error(f"{name} must be {ranges[kind]}, not {value!r}")
    return float(value)


def make_policy(values: Mapping[str, Any], *, source: str | None = None) -> GatePolicy:
    """Build a validated GatePolicy from a mapping of policy keys (``None`` values are skipped).

    ``source=None`` means command-line flags (errors are InputError and name ``--max-auc`` etc.);
    otherwise ``source`` names a policy file and table (errors are ReportError and name the key).
    """
    error: type[PrivauditError] = InputError if source is None else ReportError

    def name(key: str) -> str:
        return "--" + key.replace("_", "-") if source is None else f"{source}: {key}"

    unknown = sorted(k for k in values if k not in VALID_KEYS)
    if unknown:
        raise error(f"{source or 'command line'}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(VALID_KEYS)}")
    kwargs: dict[str, Any] = {}
    for spec in _SPECS:
        if values.get(spec.key) is not None:
            kwargs[spec.key] = _limit(values[spec.key], spec.kind, name(spec.key), error)
    tpr = values.get(_TPR_KEY)
    if tpr is not None:
        if not isinstance(tpr, Mapping):
            raise error(f"{name(_TPR_KEY)} must be a table of FPR = MAX, e.g. {_TPR_KEY} = {{ \"0.01\" = 0.05 }}")
        limits: dict[str, float] = {}
        for fpr_key, limit in tpr.items():
            if isinstance(limit, Mapping):  # {0.01 = 0.05} is the dotted key 0 -> 01 in TOML
                raise error(f"{name(_TPR_KEY)}: quote the FPR keys, e.g. {{ \"0.01\" = 0.05 }} (a bare 0.01 is a dotted key in TOML)")
            try:
                label = fpr_label(parse_fpr(fpr_key))
            except (TypeError, ValueError):
                raise error(f"{name(_TPR_KEY)}: FPR {fpr_key!r} is not a number in (0, 1)") from None
            if label in limits:
                raise error(f"{name(_TPR_KEY)} gives FPR {label} twice; give each FPR once")
            limits[label] = _limit(limit, "rate", f"{name(_TPR_KEY)}[{label}]", error)
        kwargs[_TPR_KEY] = limits
    return GatePolicy(**kwargs)


def merge_policies(base: GatePolicy, override: GatePolicy) -> GatePolicy:
    """``base`` with every threshold that ``override`` sets replaced (TPR limits merged per FPR)."""
    changes: dict[str, Any] = {s.key: getattr(override, s.key) for s in _SPECS if getattr(override, s.key) is not None}
    tpr = {_canonical(k): v for k, v in base.max_tpr_at_fpr.items()}
    tpr.update({_canonical(k): v for k, v in override.max_tpr_at_fpr.items()})
    return replace(base, **changes, max_tpr_at_fpr=tpr)


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        raise ReportError(f"{what} {path} does not exist; check the path")
    if path.is_dir():
        raise ReportError(f"{what} {path} is a folder; give the TOML file (privaudit.toml or pyproject.toml)")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ReportError(f"{what} {path} is not valid TOML ({exc}); fix the syntax") from None


def _gate_table(data: dict[str, Any], path: Path) -> tuple[str, Any] | None:
    """The gate table of a parsed TOML file and its name, or None when it has none."""
    if path.name != "pyproject.toml" and "gate" in data:
        return "[gate]", data["gate"]
    tool = data.get("tool")
    pa = tool.get("privaudit") if isinstance(tool, dict) else None
    if isinstance(pa, dict) and "gate" in pa:
        return "[tool.privaudit.gate]", pa["gate"]
    return None


def load_policy(path: str | Path) -> GatePolicy:
    """Read a policy file → GatePolicy; ReportError when unreadable, lacking the table, or invalid.

    ``pyproject.toml`` is read from ``[tool.privaudit.gate]``; any other file from ``[gate]``
    (or ``[tool.privaudit.gate]`` when it has no ``[gate]``).
    """
    p = Path(path)
    found = _gate_table(_read_toml(p, "policy file"), p)
    if found is None:
        raise ReportError(f"policy file {p} has no [gate] table (privaudit.toml) or [tool.privaudit.gate] table (pyproject.toml); add one with e.g. max_auc = 0.6")
    table_name, table = found
    if not isinstance(table, dict):
        raise ReportError(f"policy file {p}: {table_name} must be a table of thresholds, e.g. max_auc = 0.6")
    return make_policy(table, source=f"policy {p} {table_name}")


def discover_policy(directory: str | Path = ".") -> Path | None:
    """The policy file that applies in ``directory``, as ruff or pytest would find theirs.

    ``privaudit.toml`` with a ``[gate]`` table, else ``pyproject.toml`` with ``[tool.privaudit.gate]``,
    else None. A found file that is not valid TOML raises ReportError.
    """
    for name in (POLICY_FILE, "pyproject.toml"):
        p = Path(directory) / name
        if p.is_file() and _gate_table(_read_toml(p, "policy file"), p) is not None:
            return p
    return None


# ---------------------------------------------------------------------------------------------
# Reports and the verdict


def _lookup(report: Mapping[str, Any], metric: str) -> Any:
    node: Any = report
    for part in metric.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _number(value: Any, metric: str, report_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ReportError(f"report {report_name} has {metric} = {value!r}, not a number; re-create it with privaudit attack/evaluate --json")
    return float(value)


def _drop(key: str) -> str:
    return f"or drop the {key} threshold (--{key.replace('_', '-')} / {key} in the policy)"


def _spec_value(report: Mapping[str, Any], spec: _Spec, report_name: str) -> float:
    value = _lookup(report, spec.metric)
    if spec.key == "max_epsilon" and value is None and _lookup(report, "model.defense.epsilon_infinite") is True:
        return math.inf  # DP-SGD without noise: no guarantee at all, which fails any ε limit
    if spec.key == "max_auc_ci_upper":
        if value is None:
            raise ReportError(f"report {report_name} has no {spec.metric}; {spec.hint}, {_drop(spec.key)}")
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ReportError(f"report {report_name} has {spec.metric} = {value!r}, not [lo, hi]; re-create it with privaudit attack/evaluate --json")
        value = value[1]
    if value is None:
        extra = ""
        if spec.key == "max_epsilon":
            method = _lookup(report, "model.defense.method") or "none"
            extra = f" (defense: {method})"
        raise ReportError(f"report {report_name} has no {spec.metric}{extra}; {spec.hint}, {_drop(spec.key)}")
    return _number(value, spec.metric, report_name)


_FLIP = "score flipped: an attacker who predicts 'member' for HIGH loss gets"
_FLIP_BOUND = "flipped score not exactly known: an attacker who predicts 'member' for HIGH loss gets at most"


def _flipped_value(report: Mapping[str, Any], what: str, fpr: float | None = None) -> tuple[float, str, str] | None:
    """The flipped score's advantage (``what="advantage"``) or TPR at ``fpr`` (``what="tpr"``) →
    (value, where it came from, note), or None when it cannot be had (a TPR the report holds as null).

    From ``attack.flipped_score`` (exact, written by privaudit); else from the stored ``attack.roc``
    (exact when the curve is complete, an upper bound when it may be thinned); else an upper bound
    from the AUC alone. A bound is conservative: the gate may fail a report it cannot judge exactly.
    """
    a = _lookup(report, "attack") or {}
    fs = a.get("flipped_score") if isinstance(a, Mapping) else None
    if isinstance(fs, Mapping):
        if what == "advantage" and isinstance(fs.get("advantage"), (int, float)):
            v = float(fs["advantage"])
            return v, "attack.flipped_score.advantage", f"{_FLIP} {format_number(v)}"
        table = fs.get("tpr_at_fpr")
        if what == "tpr" and isinstance(table, Mapping):
            for key, value in table.items():
                try:
                    same = math.isclose(float(key), fpr, rel_tol=1e-9, abs_tol=0.0)
                except (TypeError, ValueError):
                    continue
                if same:
                    if value is None:
                        return None
                    return float(value), f'attack.flipped_score.tpr_at_fpr["{key}"]', f"{_FLIP} {format_number(float(value))}"
    roc = usable_roc(a)
    if roc is not None:
        exact = len(roc[0]) < ROC_POINTS_LIMIT
        ffpr, ftpr = flipped_roc(*roc)
        v = roc_advantage(ffpr, ftpr, exact=exact) if what == "advantage" else roc_tpr_at(ffpr, ftpr, fpr, exact=exact)
        if exact:
            return v, "attack.roc, flipped", f"{_FLIP} {format_number(v)} (read from attack.roc)"
        return v, "attack.roc, flipped, a bound", f"{_FLIP_BOUND} {format_number(v)} (a bound read from the thinned attack.roc)"
    auc = _lookup(report, "attack.auc")
    if not isinstance(auc, (int, float)) or isinstance(auc, bool):
        return None
    if what == "advantage":
        v, metric = flipped_bound_advantage(auc), "1 − attack.auc, a bound"
    else:
        v, metric = flipped_bound_tpr(auc, fpr), "(1 − attack.auc) / (1 − FPR), a bound"
    return v, metric, (f"{_FLIP_BOUND} {format_number(v)} (a bound from the AUC alone: the report has no attack.flipped_score "
                       "or attack.roc; re-create it with privaudit attack/evaluate --json for the exact value)")


def _judge(name: str, measured: tuple[float, str], flipped: tuple[float, str, str] | None, limit: float) -> GateCheck:
    """One check on the stronger of the measured and the flipped direction."""
    value, metric = measured
    note = ""
    if flipped is not None and flipped[0] > value:
        note = f"{flipped[2]}; as measured, {metric} = {format_number(value)}"
        value, metric = flipped[0], flipped[1]
    return GateCheck(name, value, float(limit), value <= limit, metric, note)


def _tpr_value(report: Mapping[str, Any], fpr: float, report_name: str) -> tuple[str, float]:
    """The report's TPR at ``fpr`` (keys matched numerically) and its report key."""
    table = _lookup(report, "attack.tpr_at_fpr")
    label = fpr_label(fpr)
    if not isinstance(table, Mapping):
        raise ReportError(f"report {report_name} has no attack.tpr_at_fpr; {_ATTACK_HINT}, {_drop(_TPR_KEY)}")
    for key, value in table.items():
        try:
            if not math.isclose(float(key), fpr, rel_tol=1e-9, abs_tol=0.0):
                continue
        except (TypeError, ValueError):
            continue
        metric = f'attack.tpr_at_fpr["{key}"]'
        if value is None:
            count = _lookup(report, "data.nonmembers.count")
            has = f" and this report has {count}" if isinstance(count, int) else ""
            raise ReportError(
                f"report {report_name} has {metric} = null: a TPR at {_pct(fpr)} FPR needs >= {math.ceil(1 / fpr - 1e-9)} non-members{has}; "
                f"attack with more non-members, or gate on a higher FPR ({_TPR_KEY})"
            )
        return metric, _number(value, metric, report_name)
    has_keys = ", ".join(str(k) for k in table) or "none"
    raise ReportError(f"report {report_name} has no attack.tpr_at_fpr[\"{label}\"] (it has FPRs {has_keys}); gate on one of those FPRs ({_TPR_KEY})")


def evaluate_gate(report: Mapping[str, Any], policy: GatePolicy, *, report_name: str = "(in memory)", as_measured: bool = False) -> GateVerdict:
    """Apply every threshold of ``policy`` to ``report`` → GateVerdict (one check per threshold).

    Pure: reads nothing, writes nothing. ``report_name`` only appears in error messages.
    Raises InputError for an empty policy and ReportError for a metric the report lacks (or holds
    as null) or a report whose numbers cannot be trusted (``privaudit.report.validate_report``), so
    that the gate never passes on metrics it could not check.

    An attacker can negate a score that ranks members below non-members, so every attack check
    (AUC, its interval, TPR at FPR, advantage) judges the stronger of the two directions: the AUC as
    max(AUC, 1 − AUC), its interval's upper end as max(hi, 1 − lo), the TPR and advantage from
    ``attack.flipped_score`` (or the stored ROC, or a bound from the AUC). A check that used the
    flipped direction says so in its ``note``. ``as_measured=True`` judges the measured direction only.
    """
    if policy.empty:
        raise InputError("no thresholds given; pass --max-auc ... or --policy FILE")
    validate_report(report, report_name)
    checks: list[GateCheck] = []
    for spec in _SPECS:
        if spec.key == "max_advantage":  # attack metrics together: AUC, its CI, TPRs, advantage
            checks += _tpr_checks(report, policy, report_name, as_measured)
        limit = getattr(policy, spec.key)
        if limit is None:
            continue
        value = _spec_value(report, spec, report_name)
        metric = spec.metric + ("[1]" if spec.key == "max_auc_ci_upper" else "")
        flipped: tuple[float, str, str] | None = None
        if not as_measured and spec.key == "max_auc":
            flipped = (1.0 - value, "1 − attack.auc", f"{_FLIP} AUC {format_number(1.0 - value)}")
        elif not as_measured and spec.key == "max_auc_ci_upper":
            lo = _number(_lookup(report, "attack.auc_ci95")[0], "attack.auc_ci95[0]", report_name)
            flipped = (1.0 - lo, "1 − attack.auc_ci95[0]",
                       f"{_FLIP} an AUC whose 95% interval is [1 − hi, 1 − lo] = [{format_number(1.0 - value)}, {format_number(1.0 - lo)}]")
        elif not as_measured and spec.key == "max_advantage":
            flipped = _flipped_value(report, "advantage")
        checks.append(_judge(spec.label, (value, metric), flipped, limit))
    return GateVerdict(tuple(checks))


def _tpr_checks(report: Mapping[str, Any], policy: GatePolicy, report_name: str, as_measured: bool = False) -> list[GateCheck]:
    """One check per TPR limit, ordered by FPR."""
    limits: list[tuple[float, float]] = []
    for key, limit in policy.max_tpr_at_fpr.items():
        try:
            limits.append((parse_fpr(key), float(limit)))
        except (TypeError, ValueError):
            raise InputError(f"{_TPR_KEY}: FPR {key!r} is not a number in (0, 1)") from None
    checks = []
    for fpr, limit in sorted(limits):
        metric, value = _tpr_value(report, fpr, report_name)
        flipped = None if as_measured else _flipped_value(report, "tpr", fpr)
        checks.append(_judge(f"TPR @ {_pct(fpr)} FPR", (value, metric), flipped, limit))
    return checks


# ---------------------------------------------------------------------------------------------
# Rendering for CI


def format_number(x: float) -> str:
    """A value or limit as shown in tables: up to 6 significant digits, ``inf`` as is."""
    return format(x, ".6g")


def to_junit_xml(verdict: GateVerdict, report_path: str | Path) -> str:
    """JUnit XML: one ``<testsuite name="privaudit.gate">`` with one ``<testcase>`` per check;
    a failed check holds a ``<failure message=...>``."""
    failures = len(verdict.failed)
    suites = ET.Element("testsuites", name="privaudit", tests=str(len(verdict.checks)), failures=str(failures), errors="0")
    suite = ET.SubElement(suites, "testsuite", name="privaudit.gate", tests=str(len(verdict.checks)), failures=str(failures), errors="0", skipped="0", time="0")
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="report", value=str(report_path))
    for c in verdict.checks:
        case = ET.SubElement(suite, "testcase", classname="privaudit.gate", name=c.name, time="0")
        detail = f"{c.metric or c.name} = {format_number(c.value)}, limit {format_number(c.limit)} (report {report_path})"
        if c.note:
            detail += f"; {c.note}"
        if c.passed:
            ET.SubElement(case, "system-out").text = detail
        else:
            flip = " (score flipped)" if c.note.startswith("score flipped") else " (a bound for the flipped score)" if c.note.startswith("flipped score") else ""
            fail = ET.SubElement(case, "failure", message=f"{c.name}{flip} {format_number(c.value)} exceeds the limit {format_number(c.limit)}", type="threshold")
            fail.text = detail
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(verdict: GateVerdict, report_path: str | Path, *, policy_source: str | None = None) -> str:
    """A short Markdown summary (heading with PASS/FAIL, one table row per check), fit for
    appending to ``$GITHUB_STEP_SUMMARY``. Ends with a newline."""
    status = "PASS ✅" if verdict.passed else f"FAIL ❌ ({len(verdict.failed)} of {len(verdict.checks)} checks over the limit)"
    lines = [f"### privaudit gate: {status}", "", f"Report: `{_md_cell(str(report_path))}`" + (f" · policy: {_md_cell(policy_source)}" if policy_source else ""), ""]
    lines += ["| check | value | limit | result |", "|---|---:|---:|:---:|"]
    notes = list(dict.fromkeys(c.note for c in verdict.checks if c.note))
    for c in verdict.checks:
        mark = f" [{notes.index(c.note) + 1}]" if c.note and c.note in notes else ""
        lines.append(f"| {_md_cell(c.name)}{mark} | {format_number(c.value)} | {format_number(c.limit)} | {'PASS' if c.passed else '**FAIL**'} |")
    if notes:
        lines += [""] + [f"- [{i}] {_md_cell(n)}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"


__all__ = [
    "REPORT_SCHEMA", "VALID_KEYS", "GatePolicy", "GateCheck", "GateVerdict", "parse_fpr", "fpr_label", "parse_tpr_flag",
    "make_policy", "merge_policies", "load_policy", "discover_policy", "load_report", "evaluate_gate", "format_number",
    "to_junit_xml", "to_markdown",
]
