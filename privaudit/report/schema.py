"""The report format (``privaudit.report/1``; ``/2`` when reference models were used: ``attacks``
by name, ``attack`` the strongest, ``data.distribution_shift``, ``most_exposed``): its schema names, the spelling of its FPR keys,
reading a report back and checking that its numbers can be trusted. Torch-free and numpy-free
(standard library only), so a CI gate step that only reads reports stays light.

``load_report`` is the one place where a report's values are validated (``validate_report``):
every consumer (``privaudit gate``, ``privaudit report``, the demo) reads reports through it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from privaudit.errors import ReportError

REPORT_SCHEMA = "privaudit.report/1"
# Written when reference models were used: several attacks (``attacks``), the strongest in ``attack``.
REPORT_SCHEMA_2 = "privaudit.report/2"
REPORT_SCHEMAS = (REPORT_SCHEMA, REPORT_SCHEMA_2)

# privaudit writes at most this many ROC points (``attack.roc``): a curve this long may be thinned,
# so values read from it are bounds rather than exact.
ROC_POINTS_LIMIT = 256

_RECREATE = "re-create it with privaudit attack/evaluate --json"


def load_report(path: str | Path, *, require_attack: bool = False) -> dict[str, Any]:
    """Read a ``privaudit.report/1`` or ``/2`` JSON file → dict; ReportError (one line) when it cannot be used:
    unreadable, another schema, or a metric that is not a number in its range (see ``validate_report``).
    ``require_attack``: also refuse a report without attack results (``attack.auc``)."""
    p = Path(path)
    if not p.exists():
        raise ReportError(f"report {p} does not exist; check the path")
    if p.is_dir():
        raise ReportError(f"report {p} is a folder; give the JSON file written by privaudit attack/evaluate --json")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"report {p} is not readable JSON ({str(exc)[:100]}); write it with privaudit attack/evaluate --json") from None
    if not isinstance(data, dict) or data.get("schema") not in REPORT_SCHEMAS:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ReportError(f"report {p} has schema {found!r}, not {REPORT_SCHEMA!r} or {REPORT_SCHEMA_2!r}; write it with privaudit attack/evaluate --json")
    validate_report(data, str(p))
    if require_attack and (not isinstance(data.get("attack"), dict) or "auc" not in data["attack"]):
        raise ReportError(f"report {path} has no attack results; write it with privaudit attack or evaluate")
    return data


# ---------------------------------------------------------------------------------------------
# FPR keys: the report writes ``tpr_at_fpr`` keyed by FPR; the gate's policies name FPRs too


def fpr_key(fpr: float) -> str:
    """0.01 → ``"0.01"``, 1e-05 → ``"1e-05"``: the canonical spelling of an FPR, as the report writes
    its keys (the shortest ``g`` form, or the full ``repr`` when that would round the value)."""
    text = format(fpr, "g")
    return text if float(text) == fpr else repr(float(fpr))


def parse_fpr(key: str | float) -> float:
    """``"0.01"``, ``"1e-2"``, ``"0.010"`` or ``0.01`` → 0.01; ValueError unless a number in (0, 1)."""
    if isinstance(key, bool):
        raise ValueError(f"{key!r} is not an FPR")
    f = float(key)
    if not (math.isfinite(f) and 0.0 < f < 1.0):
        raise ValueError(f"FPR {key!r} is not in (0, 1)")
    return f


def find_fpr(table: Mapping[str, Any], fpr: float) -> tuple[str, Any] | None:
    """The entry of a ``tpr_at_fpr`` table whose key is the FPR ``fpr`` (keys are compared as numbers,
    so ``"1e-2"`` matches 0.01): (key as written, value), or None when the table has no such FPR."""
    for key, value in table.items():
        try:
            if math.isclose(float(key), fpr, rel_tol=1e-9, abs_tol=0.0):
                return key, value
        except (TypeError, ValueError):
            continue
    return None


# ---------------------------------------------------------------------------------------------
# Validation: every rate in [0, 1], no NaN or infinity among the metrics, intervals with lo <= hi


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(name: str, key: str, value: Any, problem: str) -> ReportError:
    return ReportError(f"report {name} is malformed: {key} = {_short(value)}, {problem}; {_RECREATE}")


def _rate(name: str, key: str, value: Any, *, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not _is_number(value) or math.isnan(value):
        raise _bad(name, key, value, "not a number")
    if not 0.0 <= value <= 1.0:
        raise _bad(name, key, value, "outside [0, 1] (rates are fractions)")


def _finite(name: str, key: str, value: Any, *, lo: float | None = None, hi: float | None = None, nullable: bool = True) -> None:
    if value is None and nullable:
        return
    if not _is_number(value) or not math.isfinite(value):
        raise _bad(name, key, value, "not a finite number")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        where = f"[{lo:g}, {hi:g}]" if lo is not None and hi is not None else (f">= {lo:g}" if lo is not None else f"<= {hi:g}")
        raise _bad(name, key, value, f"outside {where}")


def _interval(name: str, key: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _bad(name, key, value, "not [lo, hi]")
    _rate(name, f"{key}[0]", value[0])
    _rate(name, f"{key}[1]", value[1])
    if value[0] > value[1]:
        raise _bad(name, key, value, "lo > hi")


def _tpr_table(name: str, key: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise _bad(name, key, value, "not a table of FPR: TPR")
    for fpr, tpr in value.items():
        _rate(name, f'{key}["{fpr}"]', tpr, nullable=True)


def _attack_metrics(name: str, prefix: str, a: Mapping[str, Any]) -> None:
    """The ROC metrics an attack section (or its flipped_score, or proxy_leakage) may hold."""
    for k in ("auc", "auc_effective", "advantage", "balanced_accuracy"):
        if k in a:
            _rate(name, f"{prefix}.{k}", a[k])
    _interval(name, f"{prefix}.auc_ci95", a.get("auc_ci95"))
    _tpr_table(name, f"{prefix}.tpr_at_fpr", a.get("tpr_at_fpr"))
    ci = a.get("tpr_at_fpr_ci95")
    if ci is not None:
        if not isinstance(ci, Mapping):
            raise _bad(name, f"{prefix}.tpr_at_fpr_ci95", ci, "not a table of FPR: [lo, hi]")
        for fpr, interval in ci.items():
            _interval(name, f'{prefix}.tpr_at_fpr_ci95["{fpr}"]', interval)
    if "epsilon_lb" in a:
        _finite(name, f"{prefix}.epsilon_lb", a["epsilon_lb"], lo=0.0, nullable=False)
    if "delta" in a:
        _finite(name, f"{prefix}.delta", a["delta"], lo=0.0, hi=1.0, nullable=False)


def _attack_section(name: str, prefix: str, a: Any) -> None:
    """An attack section (``attack`` or one entry of ``attacks``): its metrics and its flipped score."""
    if not isinstance(a, Mapping):
        raise _bad(name, prefix, a, "not a table")
    _attack_metrics(name, prefix, a)
    if "flipped" in a and not isinstance(a["flipped"], bool):
        raise _bad(name, f"{prefix}.flipped", a["flipped"], "not true or false")
    fs = a.get("flipped_score")
    if fs is not None:
        if not isinstance(fs, Mapping):
            raise _bad(name, f"{prefix}.flipped_score", fs, "not a table")
        _attack_metrics(name, f"{prefix}.flipped_score", fs)
        auc = a.get("auc")
        if _is_number(fs.get("auc")) and _is_number(auc) and not math.isclose(fs["auc"], 1.0 - auc, abs_tol=1e-9):
            raise _bad(name, f"{prefix}.flipped_score.auc", fs["auc"], f"not 1 − {prefix}.auc = {1.0 - auc:.6g}")


def _non_finite(node: Any, key: str) -> tuple[str, Any] | None:
    """The first NaN or infinite number below ``node`` (depth first) and its dotted key, or None."""
    if isinstance(node, float) and not math.isfinite(node):
        return key, node
    if isinstance(node, Mapping):
        for k, v in node.items():
            found = _non_finite(v, f"{key}.{k}")
            if found:
                return found
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found = _non_finite(v, f"{key}[{i}]")
            if found:
                return found
    return None


_METRIC_SECTIONS = ("attack", "attacks", "most_exposed", "dp_audit", "utility", "generalization_gap", "proxy_leakage", "repeats")


def validate_report(report: Mapping[str, Any], name: str = "(in memory)") -> None:
    """Raise ReportError (one line naming the key and its value) unless the report's metrics can be
    trusted: no NaN or infinity anywhere in the metric sections; AUCs, their 95% intervals (lo <= hi),
    TPRs, advantage and balanced accuracy in [0, 1]; L1 >= 0 and SSIM in [-1, 1]; mean IoU, pixel
    accuracy and each class's IoU (segmentation) in [0, 1]; a DP-SGD ε >= 0
    (infinite allowed: no guarantee). Keys that are absent are not checked here: whoever needs them
    says so. ``attack.flipped_score``, when present, must be the measured attack with its score negated.
    """
    for section in _METRIC_SECTIONS:
        found = _non_finite(report.get(section), section)
        if found:
            raise _bad(name, found[0], found[1], "not a finite number")
    a = report.get("attack")
    if a is not None:
        _attack_section(name, "attack", a)
    attacks = report.get("attacks")
    if attacks is not None:
        if not isinstance(attacks, Mapping) or not attacks:
            raise _bad(name, "attacks", attacks, "not a table of attacks by name")
        for key, entry in attacks.items():
            _attack_section(name, f"attacks.{key}", entry)
    elif report.get("schema") == REPORT_SCHEMA_2 and a is not None:
        raise _bad(name, "attacks", None, f"missing (a {REPORT_SCHEMA_2} report lists every attack)")
    shift = (report.get("data") or {}).get("distribution_shift") if isinstance(report.get("data"), Mapping) else None
    if shift is not None:
        if not isinstance(shift, Mapping):
            raise _bad(name, "data.distribution_shift", shift, "not a table")
        if shift.get("detected") not in (True, False, None):
            raise _bad(name, "data.distribution_shift.detected", shift.get("detected"), "not true, false or null")
        if "auc" in shift:
            _rate(name, "data.distribution_shift.auc", shift["auc"])
        _interval(name, "data.distribution_shift.auc_ci95", shift.get("auc_ci95"))
    exposed = report.get("most_exposed")
    if exposed is not None:
        if not isinstance(exposed, list):
            raise _bad(name, "most_exposed", exposed, "not a list of {name, score}")
        for i, e in enumerate(exposed):
            if not isinstance(e, Mapping) or not isinstance(e.get("name"), str) or not _is_number(e.get("score")):
                raise _bad(name, f"most_exposed[{i}]", e, "not {name, score}")
    p = report.get("proxy_leakage")
    if isinstance(p, Mapping):
        _attack_metrics(name, "proxy_leakage", p)
    u = report.get("utility")
    if isinstance(u, Mapping):
        # KID is an unbiased estimate and may dip below 0 for a very good model, so NKID has no lower bound.
        for k in ("kid", "kid_std", "kid_black", "nkid", "psnr", "sharpness"):
            _finite(name, f"utility.{k}", u.get(k))
        _finite(name, "utility.l1", u.get("l1"), lo=0.0)
        _finite(name, "utility.ssim", u.get("ssim"), lo=-1.0, hi=1.0)
        fid = u.get("fidelity_to_teacher")
        if isinstance(fid, Mapping):
            for k in ("nonmembers_l1", "proxy_l1"):
                _finite(name, f"utility.fidelity_to_teacher.{k}", fid.get(k), lo=0.0)
        for k in ("miou", "pixel_accuracy", "mean_class_accuracy"):  # segmentation
            _rate(name, f"utility.{k}", u.get(k), nullable=True)
        per_class = u.get("iou_per_class")
        if per_class is not None:
            if not isinstance(per_class, Mapping):
                raise _bad(name, "utility.iou_per_class", per_class, "not a table of class: IoU")
            for cls, v in per_class.items():
                _rate(name, f'utility.iou_per_class["{cls}"]', v, nullable=True)
    g = report.get("generalization_gap")
    if isinstance(g, Mapping):
        for k in ("nkid_train", "nkid_test", "gap", "l1_gap"):
            _finite(name, f"generalization_gap.{k}", g.get(k))
        for k in ("l1_train", "l1_test"):
            _finite(name, f"generalization_gap.{k}", g.get(k), lo=0.0)
        for k in ("miou_train", "miou_test", "pixel_accuracy_train", "pixel_accuracy_test"):  # segmentation
            _rate(name, f"generalization_gap.{k}", g.get(k), nullable=True)
        _finite(name, "generalization_gap.miou_gap", g.get("miou_gap"), lo=-1.0, hi=1.0)
    d = (report.get("model") or {}).get("defense") if isinstance(report.get("model"), Mapping) else None
    if isinstance(d, Mapping) and d.get("epsilon") is not None:
        eps = d["epsilon"]
        if not _is_number(eps) or math.isnan(eps) or eps < 0:
            raise _bad(name, "model.defense.epsilon", eps, "not a number >= 0")


# ---------------------------------------------------------------------------------------------
# The stored ROC curve


def usable_roc(attack: Mapping[str, Any]) -> tuple[list[float], list[float]] | None:
    """``attack.roc`` as (fpr, tpr) when it is a well-formed curve (equal-length lists of rates, both
    non-decreasing, from (0, 0) to (1, 1)); None otherwise (consumers then leave it out)."""
    roc = attack.get("roc") if isinstance(attack, Mapping) else None
    if not isinstance(roc, Mapping):
        return None
    fpr, tpr = roc.get("fpr"), roc.get("tpr")
    if not isinstance(fpr, list) or not isinstance(tpr, list) or len(fpr) != len(tpr) or len(fpr) < 2:
        return None
    if not all(_is_number(v) and 0.0 <= v <= 1.0 for v in fpr + tpr):
        return None
    if any(b < a for a, b in zip(fpr, fpr[1:])) or any(b < a for a, b in zip(tpr, tpr[1:])):
        return None
    if fpr[0] != 0 or tpr[0] != 0 or fpr[-1] != 1 or tpr[-1] != 1:
        return None
    return [float(v) for v in fpr], [float(v) for v in tpr]
