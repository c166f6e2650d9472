"""Comparing audit reports: rows for a table, Markdown, the utility-privacy plot, ROC overlays, HTML."""

from __future__ import annotations

import base64
import math
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privaudit.errors import ReportError
from privaudit.report import load_report as _load
from privaudit.report import usable_roc

FLIPPED_NOTE = ("* score flipped: the measured AUC is below 50%, so an attacker who predicts 'member' for HIGH loss does "
                "better; the row shows that attacker (AUC = 1 − measured AUC)")


def load_report(path: str | Path) -> dict[str, Any]:
    """A report that holds attack results (``privaudit.report.load_report`` plus that check)."""
    data = _load(path)
    if not isinstance(data.get("attack"), dict) or "auc" not in data["attack"]:
        raise ReportError(f"report {path} has no attack results; write it with privaudit attack or evaluate")
    return data


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


def row(name: str, r: dict[str, Any]) -> Row:
    """One table row from a report; ReportError when a field has the wrong type or is not finite."""
    try:
        out = _row(name, r)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        raise ReportError(f"report {name} has a malformed field ({type(exc).__name__}: {str(exc)[:80]}); write it again with privaudit attack/evaluate --json") from None
    numbers = [out.auc, *(out.auc_ci95 or ())] + [v for v in (out.tpr_1, out.tpr_10, out.nkid, out.gap, out.l1, out.ssim) if v is not None]
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
    if method == "gauss":
        method = f"gauss σ={d.get('sigma')}"
    elif method == "dpsgd" and d.get("noise_multiplier") is not None:
        method = f"dpsgd σ={d.get('noise_multiplier'):.3g}"
    method = method if method != "none" else "regular"
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
    )


def _f(x: float | None, pct: bool = False, digits: int = 3) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.{max(digits - 2, 1)}f}%" if pct else f"{x:.{digits}f}"


HEADERS = ["model", "defense", "AUC", "AUC 95% CI", "TPR@1%FPR", "TPR@10%FPR", "NKID", "gap (NKID)", "L1", "SSIM", "ε"]


def cells(r: Row) -> list[str]:
    """The row's cells as shown (a missing value is "–", never 0); a flipped AUC is marked "*" (FLIPPED_NOTE)."""
    auc = _f(r.auc, pct=True, digits=4) + ("*" if r.flipped else "") + (f" ± {100 * r.auc_std:.2f}" if r.auc_std is not None else "")
    nkid = _f(r.nkid, pct=True, digits=4) + (f" ± {100 * r.nkid_std:.2f}" if r.nkid_std is not None else "")
    ci = "–" if r.auc_ci95 is None else f"[{100 * r.auc_ci95[0]:.1f}, {100 * r.auc_ci95[1]:.1f}]"
    return [r.name, r.method, auc, ci, _f(r.tpr_1, pct=True), _f(r.tpr_10, pct=True),
            nkid if r.nkid is not None else "–", _f(r.gap, digits=4), _f(r.l1, digits=4), _f(r.ssim, digits=3), _f(r.epsilon, digits=3)]


def to_markdown(rows: list[Row], *, title: str = "privaudit: utility-privacy comparison") -> str:
    lines = [f"### {title}", "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |" for r in rows]
    lines += ["", "AUC: attack AUC (50% = chance, lower is more private). NKID = KID / KID(all-black) on the test set (lower is better). "
              "gap = NKID(test) − NKID(train), positive = better on training data. L1 on [-1, 1] images, test set. "
              "– = not in the report.", ""]
    if any(r.flipped for r in rows):
        lines += [FLIPPED_NOTE.replace("*", "\\*", 1), ""]
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def tradeoff_figure(rows: list[Row]):
    """AUC against NKID (or test L1 when fewer reports hold NKID than L1); the ideal is (0, 50%).

    A report without the x metric is left out, never drawn at 0, and the title names it
    ("not plotted: teacher (no NKID)"). The AUC is the stronger direction (max(AUC, 1 − AUC)).
    """
    plt = _plt()
    n_nkid, n_l1 = sum(r.nkid is not None for r in rows), sum(r.l1 is not None for r in rows)
    use_nkid = n_nkid >= n_l1 and n_nkid > 0
    metric = "NKID" if use_nkid else "L1"
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    markers = "osD^vP<>Xh"
    left_out = []
    for i, r in enumerate(rows):
        x = r.nkid if use_nkid else r.l1
        if x is None:
            left_out.append(r.name)
            continue
        label = (r.name if r.name == r.method else f"{r.name} ({r.method})") + (", score flipped" if r.flipped else "")
        ax.scatter([100 * x if use_nkid else x], [100 * r.auc], s=55, marker=markers[i % len(markers)], label=label, zorder=4)
    ax.scatter([0], [50], marker="*", s=160, color="gold", edgecolor="k", zorder=5, label="ideal (0, 50%)")
    ax.axhline(50, color="grey", lw=0.6, ls="--")
    ax.set_xlabel("NKID % (lower is better)" if use_nkid else "test L1 (lower is better)" + ("; NKID not in every report" if n_nkid else ""))
    ax.set_ylabel("attack AUC % (lower is more private)")
    title = "utility-privacy trade-off"
    if left_out:
        title += f"\nnot plotted: {', '.join(left_out)} (no {metric})"
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def roc_figure(reports: list[tuple[str, dict[str, Any]]]):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, log in zip(axes, (False, True)):
        for name, r in reports:
            roc = usable_roc(r["attack"])
            if roc is None:
                continue  # an attack report without a usable curve is left out of the overlay
            fpr, tpr = roc
            auc = r["attack"]["auc"]
            label = f"{name} ({auc:.3f}" + (", below chance: score flipped)" if auc < 0.5 else ")")
            if log:
                pts = [(a, b) for a, b in zip(fpr, tpr) if a > 0 and b > 0]
                ax.loglog([p[0] for p in pts], [p[1] for p in pts], label=label)
            else:
                ax.plot(fpr, tpr, label=label)
        ax.plot([1e-3, 1], [1e-3, 1], "k--", lw=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title("ROC (log-log)" if log else "ROC")
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    return fig


def save_figure(fig, path: Path) -> None:
    from privaudit.evaluation.plots import figure_png
    from privaudit.io import atomic_write_bytes

    atomic_write_bytes(path, figure_png(fig))


def to_html(rows: list[Row], reports: list[tuple[str, dict[str, Any]]]) -> str:
    """A self-contained page: the table and both figures inlined as PNG data (no images of the data)."""
    plt = _plt()

    def inline(fig) -> str:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(r)) + "</tr>" for r in rows)
    note = f"<p>{html.escape(FLIPPED_NOTE)}</p>" if any(r.flipped for r in rows) else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>privaudit report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,td:nth-child(2){text-align:left}</style></head><body>"
        f"<h1>privaudit: utility-privacy comparison</h1><table><tr>{head}</tr>{body}</table>{note}"
        f"<h2>Trade-off</h2><img src='{inline(tradeoff_figure(rows))}'>"
        f"<h2>ROC</h2><img src='{inline(roc_figure(reports))}'></body></html>\n"
    )
