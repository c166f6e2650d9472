"""The gate's verdict: ``evaluate_gate(report, policy)`` applies every threshold of a policy to a
report → a GateVerdict, one GateCheck per threshold. A check passes when ``value <= limit``.

Pure: reads nothing, writes nothing. A metric the report lacks (or holds as null), a report whose
numbers cannot be trusted, or an empty policy raises a ReportError or InputError (exit code 2): a
gate never passes silently because it had nothing to check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from privaudit.errors import InputError, ReportError
from dataclasses import replace

from privaudit.gate.policy import ATTACK_HINT, GATE_ATTACKS, MIN_SPECS, SPECS, TPR_KEY, GatePolicy, Spec
from privaudit.report.schema import ROC_POINTS_LIMIT, find_fpr, fpr_key, parse_fpr, usable_roc, validate_report


@dataclass(frozen=True)
class GateCheck:
    """One threshold applied to one metric: passed is ``value <= limit`` (``value >= limit`` for a
    lower limit, ``op`` ">="); ``metric`` says where the value came from (``1 − attack.auc`` when the
    flipped score is the stronger direction)."""

    name: str
    value: float
    limit: float
    passed: bool
    metric: str = ""
    note: str = ""  # e.g. that the value is the flipped score's, or an upper bound
    op: str = "<="  # "<=": an upper limit (passed is value <= limit); ">=": a lower limit (utility floors, e.g. mean IoU)


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
# The attack with its score flipped (predict "member" for HIGH loss)
#
# Negating the score mirrors the ROC: the points of the flipped score are (1 − fpr, 1 − tpr) of the
# measured ones, in reverse order. So its AUC is 1 − AUC, its 95% interval [1 − hi, 1 − lo], its
# advantage max(FPR − TPR) over the measured curve. An attacker can flip a score whose AUC is below
# 0.5, so a gate judges the stronger of the two directions.


def flipped_roc(fpr: Sequence[float], tpr: Sequence[float]) -> tuple[list[float], list[float]]:
    """The ROC of the negated score: (1 − fpr, 1 − tpr), reversed so that it runs from (0, 0)."""
    return [1.0 - f for f in reversed(fpr)], [1.0 - t for t in reversed(tpr)]


def roc_tpr_at(fpr: Sequence[float], tpr: Sequence[float], target: float, *, exact: bool) -> float:
    """TPR at FPR ``target`` read from ROC points (non-decreasing, from (0, 0) to (1, 1)).

    ``exact``: the points are the whole curve, and the value is the highest TPR whose FPR does not
    exceed the target (as ``attacks.metrics.tpr_at_fpr``). Otherwise points may be missing between
    two stored ones, and the value is an upper bound: the TPR of the first point beyond the target.
    """
    best = 0.0
    for f, t in zip(fpr, tpr):
        if f <= target + 1e-12:
            best = max(best, t)
        elif not exact:
            return t
        else:
            break
    return best


def roc_advantage(fpr: Sequence[float], tpr: Sequence[float], *, exact: bool) -> float:
    """max(TPR − FPR) over ROC points; not ``exact``: an upper bound over the gaps between stored
    points (a missing point lies between its neighbours, so its TPR − FPR <= t[i+1] − f[i])."""
    if exact:
        return max(0.0, max(t - f for f, t in zip(fpr, tpr)))
    return max(0.0, max(t1 - f0 for f0, t1 in zip(fpr, tpr[1:])))


def flipped_bound_tpr(auc: float, fpr: float) -> float:
    """An upper bound on the flipped score's TPR at FPR ``fpr`` from the measured AUC alone.

    A flipped point (f, t) is the measured point (1 − f, 1 − t); a monotone curve through it has an
    area of at most (1 − f)(1 − t) + f, so t <= (1 − AUC) / (1 − f).
    """
    return min(1.0, (1.0 - auc) / (1.0 - fpr))


def flipped_bound_advantage(auc: float) -> float:
    """An upper bound on the flipped score's advantage max(FPR − TPR) from the measured AUC alone:
    a measured point (x, y) with x − y = d bounds the area by 1 − x(1 − y) <= 1 − d, so d <= 1 − AUC."""
    return max(0.0, 1.0 - auc)


# ---------------------------------------------------------------------------------------------
# The verdict


def _pct(fpr: float) -> str:
    return f"{format(100 * fpr, '.4g')}%"


def format_number(x: float) -> str:
    """A value or limit as shown in tables: up to 6 significant digits, ``inf`` as is."""
    return format(x, ".6g")


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


def _spec_value(report: Mapping[str, Any], spec: Spec, report_name: str) -> float:
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
        found = find_fpr(table, fpr) if what == "tpr" and isinstance(table, Mapping) else None
        if found is not None:
            key, value = found
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
    if not isinstance(table, Mapping):
        raise ReportError(f"report {report_name} has no attack.tpr_at_fpr; {ATTACK_HINT}, {_drop(TPR_KEY)}")
    found = find_fpr(table, fpr)
    if found is None:
        has_keys = ", ".join(str(k) for k in table) or "none"
        raise ReportError(f"report {report_name} has no attack.tpr_at_fpr[\"{fpr_key(fpr)}\"] (it has FPRs {has_keys}); gate on one of those FPRs ({TPR_KEY})")
    key, value = found
    metric = f'attack.tpr_at_fpr["{key}"]'
    if value is None:
        count = _lookup(report, "data.nonmembers.count")
        has = f" and this report has {count}" if isinstance(count, int) else ""
        raise ReportError(
            f"report {report_name} has {metric} = null: a TPR at {_pct(fpr)} FPR needs >= {math.ceil(1 / fpr - 1e-9)} non-members{has}; "
            f"attack with more non-members, or gate on a higher FPR ({TPR_KEY})"
        )
    return metric, _number(value, metric, report_name)


def evaluate_gate(report: Mapping[str, Any], policy: GatePolicy, *, report_name: str = "(in memory)", as_measured: bool = False) -> GateVerdict:
    """Apply every threshold of ``policy`` to ``report`` → GateVerdict (one check per threshold).

    Pure: reads nothing, writes nothing. ``report_name`` only appears in error messages.
    Raises InputError for an empty policy and ReportError for a metric the report lacks (or holds
    as null) or a report whose numbers cannot be trusted (``privaudit.report.schema.validate_report``), so
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
    report = pinned_attack(report, policy.attack, report_name)
    checks: list[GateCheck] = []
    for spec in SPECS:
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
    for spec in MIN_SPECS:
        limit = getattr(policy, spec.key)
        if limit is not None:
            value = _spec_value(report, spec, report_name)
            checks.append(GateCheck(spec.label, value, float(limit), value >= limit, spec.metric, op=">="))
    dp = dp_claim_check(report)
    if dp is not None:
        checks.append(dp)
    if policy.attack is not None:
        prefix = f"attacks.{policy.attack}." if isinstance(report.get("attacks"), Mapping) else "attack."
        checks = [replace(c, name=f"{c.name} [{policy.attack}]", metric=c.metric.replace("attack.", prefix, 1)) if c.metric.startswith(("attack.", "1 − attack."))
                  else c for c in checks]
    return GateVerdict(tuple(checks))


DP_WRONG = "the measured ε lower bound exceeds the claimed DP ε: the DP implementation or its privacy accounting is wrong"


def dp_claim_check(report: Mapping[str, Any]) -> GateCheck | None:
    """For a model that claims (ε, δ)-DP and a report with an ε lower bound of its attack: the check
    ``epsilon_lb <= claimed ε``, made whatever the policy (a bound above the claim means the DP
    implementation or its accounting is wrong). None when the report has no claim or no bound."""
    claim = _lookup(report, "model.defense.epsilon")
    lb = _lookup(report, "attack.epsilon_lb")
    if not isinstance(claim, (int, float)) or isinstance(claim, bool) or not isinstance(lb, (int, float)) or isinstance(lb, bool):
        return None
    passed = lb <= claim
    return GateCheck("DP claim (ε lower bound ≤ claimed ε)", float(lb), float(claim), passed, "attack.epsilon_lb ≤ model.defense.epsilon",
                     "" if passed else DP_WRONG)


def pinned_attack(report: Mapping[str, Any], name: str | None, report_name: str = "(in memory)") -> Mapping[str, Any]:
    """``report`` with ``attack`` replaced by ``attacks[name]`` (``--attack NAME``); the report itself
    for ``name`` None, or for ``loss`` on a report/1 (its attack is the plain loss attack).
    ReportError (exit 2) when the report does not hold that attack."""
    if name is None:
        return report
    attacks = report.get("attacks")
    if isinstance(attacks, Mapping) and isinstance(attacks.get(name), Mapping):
        return {**report, "attack": attacks[name]}
    if name == "loss" and not isinstance(attacks, Mapping) and isinstance(report.get("attack"), Mapping):
        return report
    has = ", ".join(str(k) for k in attacks) if isinstance(attacks, Mapping) else "loss only (a privaudit.report/1)"
    need = ("build references with privaudit references MODEL --online --count 4 (or more) and attack with --references"
            if name == "lira-online" else "build references with privaudit references and attack with --references")
    raise ReportError(f"report {report_name} has no attack {name!r} (it has {has}); {need}, or pin another --attack (one of {', '.join(GATE_ATTACKS)})")


def _tpr_checks(report: Mapping[str, Any], policy: GatePolicy, report_name: str, as_measured: bool = False) -> list[GateCheck]:
    """One check per TPR limit, ordered by FPR."""
    limits: list[tuple[float, float]] = []
    for key, limit in policy.max_tpr_at_fpr.items():
        try:
            limits.append((parse_fpr(key), float(limit)))
        except (TypeError, ValueError):
            raise InputError(f"{TPR_KEY}: FPR {key!r} is not a number in (0, 1)") from None
    checks = []
    for fpr, limit in sorted(limits):
        metric, value = _tpr_value(report, fpr, report_name)
        flipped = None if as_measured else _flipped_value(report, "tpr", fpr)
        checks.append(_judge(f"TPR @ {_pct(fpr)} FPR", (value, metric), flipped, limit))
    return checks
