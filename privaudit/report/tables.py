"""Comparing reports, as data: one Row per report and its cells as shown (a missing value is "–",
never 0). ``privaudit report`` draws them (``privaudit.cli.render``), ``markdown`` and ``html``
write them. Torch-free and numpy-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from privaudit.errors import ReportError

SHIFT_NOTE = ("† the reference models alone separate this report's members from its non-members: the sets differ in distribution, "
              "so the plain loss attack measures that difference rather than membership; its verdict rests on the calibrated attacks")
FLIPPED_NOTE = ("* score flipped: the measured AUC is below 50%, so an attacker who predicts 'member' for HIGH loss does "
                "better; the row shows that attacker (AUC = 1 − measured AUC)")


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    auc: float  # the stronger direction: max(AUC, 1 − AUC) (see ``flipped``)
    auc_ci95: tuple[float, float] | None
    tpr_1: float | None
    tpr_10: float | None
    nkid: float | None
    gap: float | None
    l1: float | None
    ssim: float | None
    epsilon: float | None
    auc_std: float | None = None
    nkid_std: float | None = None
    flipped: bool = False  # the measured AUC is below 0.5: AUC, its interval and the TPRs are the flipped score's
    auc_measured: float | None = None  # attack.auc as the report holds it (averages over seeds use this one)
    epsilon_lb: float | None = None  # the attack's empirical ε lower bound (95%)
    attack: str | None = None  # which attack the row shows (report/2); None: the plain attack of a report/1
    primary: bool = True  # False for the extra attack rows of a report/2 (left out of the trade-off plot)
    shift: bool = False  # the report's data.distribution_shift.detected (SHIFT_NOTE)
    task: str = "translation"  # "segmentation": the utility columns are mean IoU, pixel accuracy and the mIoU gap
    miou: float | None = None
    pixel_accuracy: float | None = None
    miou_gap: float | None = None
    sharpness: float | None = None  # utility.sharpness (test outputs' Laplacian variance over the photos')
    teacher_l1: float | None = None  # utility.fidelity_to_teacher.nonmembers_l1 (a distilled student against its teacher)


def row(name: str, r: dict[str, Any]) -> Row:
    """One table row from a report; ReportError when a field has the wrong type or is not finite."""
    try:
        out = _row(name, r)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        raise ReportError(f"report {name} has a malformed field ({type(exc).__name__}: {str(exc)[:80]}); write it again with privaudit attack/evaluate --json") from None
    numbers = [out.auc, *(out.auc_ci95 or ())] + [v for v in (out.tpr_1, out.tpr_10, out.nkid, out.gap, out.l1, out.ssim, out.miou, out.pixel_accuracy,
                                                              out.miou_gap, out.sharpness, out.teacher_l1) if v is not None]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers):
        raise ReportError(f"report {name} holds a metric that is not a finite number; write it again with privaudit attack/evaluate --json")
    return out


def _row(name: str, r: dict[str, Any]) -> Row:
    a, u, g = r["attack"], r.get("utility") or {}, r.get("generalization_gap") or {}
    d = (r.get("model") or {}).get("defense") or {}
    rep = r.get("repeats") or {}
    auc = float(a["auc"])
    ci = a.get("auc_ci95")
    ci = (float(ci[0]), float(ci[1])) if ci is not None else None
    tpr = a.get("tpr_at_fpr") or {}
    flipped = auc < 0.5
    if flipped:  # show what an attacker gets: the negated score (its TPRs only when the report holds them)
        auc, ci = 1.0 - auc, (None if ci is None else (1.0 - ci[1], 1.0 - ci[0]))
        tpr = (a.get("flipped_score") or {}).get("tpr_at_fpr") or {}
    method = d.get("method", "none")
    if method == "gauss" and r.get("task") == "segmentation":
        method = f"gauss σ={d.get('sigma')} (posteriors)"
    elif method == "gauss":
        method = f"gauss σ={d.get('sigma')}"
    elif method == "dpsgd" and d.get("noise_multiplier") is not None:
        method = f"dpsgd σ={d.get('noise_multiplier'):.3g}"
    method = method if method != "none" else "regular"
    if method in ("akd", "dmp"):
        method += distillation_options(d)
    training = (r.get("model") or {}).get("training")
    if isinstance(training, dict) and training.get("complete") is False:
        method += f" (unfinished: epoch {training.get('epochs_done')}/{training.get('epochs_total')})"
    return Row(
        name=name,
        method=method,
        auc=auc,
        auc_ci95=ci,
        tpr_1=tpr.get("0.01"),
        tpr_10=tpr.get("0.1"),
        nkid=u.get("nkid"),
        gap=g.get("gap"),
        l1=u.get("l1"),
        ssim=u.get("ssim"),
        epsilon=d.get("epsilon"),
        auc_std=(rep.get("auc") or {}).get("std") if rep else None,
        nkid_std=(rep.get("nkid") or {}).get("std") if rep else None,
        flipped=flipped,
        auc_measured=float(a["auc"]),
        epsilon_lb=a.get("epsilon_lb"),
        attack=a.get("name") if r.get("attacks") else None,
        shift=(((r.get("data") or {}).get("distribution_shift") or {}).get("detected") is True),
        task="segmentation" if r.get("task") == "segmentation" else "translation",
        miou=u.get("miou"),
        pixel_accuracy=u.get("pixel_accuracy"),
        miou_gap=g.get("miou_gap"),
        sharpness=u.get("sharpness"),
        teacher_l1=(u.get("fidelity_to_teacher") or {}).get("nonmembers_l1"),
    )


def distillation_options(defense: dict[str, Any]) -> str:
    """A distilled student's options beyond the paper's, as the defense column shows them
    (e.g. " (+4 aug, +2 cutpaste, FM 10, 2 D, EMA 0.999)"); "" for the paper's recipe."""
    dd, obj = defense.get("distill_data") or {}, defense.get("objective") or {}
    parts = []
    if dd.get("augment_copies"):
        parts.append(f"+{dd['augment_copies']} aug")
    if dd.get("recombine") not in (None, "none"):
        parts.append(f"+{dd.get('recombine_copies', 1)} {dd['recombine']}")
    if obj.get("feature_matching"):
        parts.append(f"FM {obj['feature_matching']:g}")
    if obj.get("num_D") not in (None, 1):
        parts.append(f"{obj['num_D']} D")
    if obj.get("ema") is not None:
        parts.append(f"EMA {obj['ema']:g}")
    return f" ({', '.join(parts)})" if parts else ""


def rows_of(name: str, r: dict[str, Any]) -> list[Row]:
    """The rows of one report: its attack (the strongest, for a report/2), then, for a report/2,
    every other membership attack side by side (named ``name · attack``; utility shown once)."""
    main = row(name, r)
    attacks = r.get("attacks") or {}
    if not attacks:
        return [main]
    main = row(f"{name} · {main.attack}", r)
    out = [main]
    for key, entry in attacks.items():
        if key == main.attack or key == "reference-only" or not isinstance(entry, dict):
            continue
        extra = row(f"{name} · {key}", {**r, "attack": entry, "utility": None, "generalization_gap": None, "repeats": None})  # utility shown once
        out.append(replace(extra, primary=False))
    return out


def _f(x: float | None, pct: bool = False, digits: int = 3) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.{max(digits - 2, 1)}f}%" if pct else f"{x:.{digits}f}"


HEADERS = ["model", "defense", "AUC", "AUC 95% CI", "TPR@1%FPR", "TPR@10%FPR", "NKID", "gap (NKID)", "L1", "SSIM", "ε", "ε lb"]


# Segmentation reports: mean IoU, pixel accuracy and the mIoU gap in place of NKID, its gap, L1 and SSIM.
SEG_UTILITY = ["mIoU", "pixel acc.", "gap (mIoU)"]
TRANSLATION_UTILITY = ["NKID", "gap (NKID)", "L1", "SSIM"]


# Shown after SSIM only when a report holds them (reports of older versions do not).
EXTRA_UTILITY = ["sharpness", "L1 to teacher"]


def headers(rows: list[Row]) -> list[str]:
    """The comparison's columns: ``HEADERS`` for generator reports, with sharpness and the L1 to the
    teacher after SSIM when some report holds them; with segmentation reports their utility columns
    in place of (all segmentation) or beside (a mix) the generators'."""
    tasks = {r.task for r in rows}
    extra = [h for h, has in zip(EXTRA_UTILITY, (any(r.sharpness is not None for r in rows), any(r.teacher_l1 is not None for r in rows))) if has]
    translation = TRANSLATION_UTILITY + extra
    if "segmentation" not in tasks:
        return HEADERS[:6] + translation + HEADERS[-2:]
    utility = (translation if "translation" in tasks else []) + SEG_UTILITY
    return HEADERS[:6] + utility + HEADERS[-2:]


def row_cells(r: Row, columns: list[str]) -> list[str]:
    """The row's cells for ``columns`` (``headers``): ``cells`` with the segmentation columns."""
    base = dict(zip(HEADERS, cells(r)))
    base.update({"mIoU": _f(r.miou, pct=True, digits=4), "pixel acc.": _f(r.pixel_accuracy, pct=True, digits=4), "gap (mIoU)": _f(r.miou_gap, pct=True, digits=4),
                 "sharpness": _f(r.sharpness, digits=3), "L1 to teacher": _f(r.teacher_l1, digits=4)})
    if r.task == "segmentation":  # no KID or L1: never show the gap's value under the NKID header
        base["gap (NKID)"] = "–"
    return [base[h] for h in columns]


def cells(r: Row) -> list[str]:
    """The row's cells as shown (a missing value is "–", never 0); a flipped AUC is marked "*" (FLIPPED_NOTE)."""
    auc = _f(r.auc, pct=True, digits=4) + ("*" if r.flipped else "") + (f" ± {100 * r.auc_std:.2f}" if r.auc_std is not None else "")
    nkid = _f(r.nkid, pct=True, digits=4) + (f" ± {100 * r.nkid_std:.2f}" if r.nkid_std is not None else "")
    ci = "–" if r.auc_ci95 is None else f"[{100 * r.auc_ci95[0]:.1f}, {100 * r.auc_ci95[1]:.1f}]"
    return [r.name + (" †" if r.shift and r.primary else ""), r.method, auc, ci, _f(r.tpr_1, pct=True), _f(r.tpr_10, pct=True),
            nkid if r.nkid is not None else "–", _f(r.gap, digits=4), _f(r.l1, digits=4), _f(r.ssim, digits=3), _f(r.epsilon, digits=3),
            _f(r.epsilon_lb, digits=3) + (" > ε!" if r.epsilon_lb is not None and r.epsilon is not None and r.epsilon_lb > r.epsilon else "")]
