"""Plots (matplotlib, Agg backend): the ROC on linear and log-log axes, the utility-privacy
trade-off, the member/non-member loss histogram. Each returns a figure; ``figure_png`` turns it
into PNG bytes. matplotlib (and numpy with it) is imported only when a figure is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from privaudit.report.schema import usable_roc
from privaudit.report.tables import Row

# One ROC curve: (label, fpr, tpr, AUC), rates as any sequence of floats (lists or numpy arrays).
Curve = tuple[str, Sequence[float], Sequence[float], float]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig, *, dpi: int = 120) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def save_figure(fig, path: str | Path) -> None:
    """Write a figure as PNG atomically (and close it)."""
    from privaudit.io import atomic_write_bytes

    atomic_write_bytes(Path(path), figure_png(fig))


def report_curves(reports: Sequence[tuple[str, dict[str, Any]]]) -> list[Curve]:
    """The ROC curves stored in (name, report) pairs; a report without a usable ``attack.roc`` is left out."""
    curves = []
    for name, r in reports:
        roc = usable_roc(r["attack"])
        if roc is not None:
            curves.append((name, roc[0], roc[1], r["attack"]["auc"]))
    return curves


def roc_figure(curves: Sequence[Curve]):
    """ROC curves side by side on linear and log-log axes (chance is the diagonal); a curve below
    chance says that its score is flipped (an attacker negates it)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, log in zip(axes, (False, True)):
        for name, fpr, tpr, auc in curves:
            label = f"{name} (AUC {auc:.3f}" + (", below chance: score flipped)" if auc < 0.5 else ")")
            if log:
                pts = [(f, t) for f, t in zip(fpr, tpr) if f > 0 and t > 0]
                ax.loglog([p[0] for p in pts], [p[1] for p in pts], label=label)
            else:
                ax.plot(fpr, tpr, label=label)
        ax.plot([1e-3, 1], [1e-3, 1], "k--", lw=0.8, label="chance")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title("ROC (log-log)" if log else "ROC")
        if log:
            ax.set_xlim(1e-3, 1)
            ax.set_ylim(1e-3, 1)
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
    return fig


def loss_histogram(member_losses: Sequence[float], nonmember_losses: Sequence[float], *, title: str = ""):
    """Member versus non-member reconstruction loss (the AKD paper's Fig. 7)."""
    import numpy as np

    plt = _plt()
    member_losses, nonmember_losses = np.asarray(member_losses), np.asarray(nonmember_losses)
    fig, ax = plt.subplots(figsize=(6, 4))
    lo = float(min(member_losses.min(), nonmember_losses.min()))
    hi = float(max(member_losses.max(), nonmember_losses.max()))
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 40)
    ax.hist(member_losses, bins=bins, alpha=0.6, density=True, label=f"members (n={len(member_losses)})")
    ax.hist(nonmember_losses, bins=bins, alpha=0.6, density=True, label=f"non-members (n={len(nonmember_losses)})")
    ax.set_xlabel("reconstruction loss")
    ax.set_ylabel("density")
    ax.set_title(title or "reconstruction loss")
    ax.legend()
    return fig


def tradeoff_figure(rows: list[Row]):
    """AUC against NKID (or test L1 when fewer reports hold NKID than L1); the ideal is (0, 50%).

    A report without the x metric is left out, never drawn at 0, and the title names it
    ("not plotted: teacher (no NKID)"). The AUC is the stronger direction (max(AUC, 1 − AUC)).
    """
    plt = _plt()
    rows = [r for r in rows if r.primary]
    n_nkid, n_l1 = sum(r.nkid is not None for r in rows), sum(r.l1 is not None for r in rows)
    n_miou = sum(r.miou is not None for r in rows)
    if n_miou > max(n_nkid, n_l1):
        return _miou_tradeoff(plt, rows)
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


def _miou_tradeoff(plt, rows: list[Row]):
    """Segmentation reports: AUC against the test mean IoU; the ideal is (100%, 50%)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    markers = "osD^vP<>Xh"
    left_out = []
    for i, r in enumerate(rows):
        if r.miou is None:
            left_out.append(r.name)
            continue
        label = (r.name if r.name == r.method else f"{r.name} ({r.method})") + (", score flipped" if r.flipped else "")
        ax.scatter([100 * r.miou], [100 * r.auc], s=55, marker=markers[i % len(markers)], label=label, zorder=4)
    ax.scatter([100], [50], marker="*", s=160, color="gold", edgecolor="k", zorder=5, label="ideal (100%, 50%)")
    ax.axhline(50, color="grey", lw=0.6, ls="--")
    ax.set_xlabel("test mean IoU % (higher is better)")
    ax.set_ylabel("attack AUC % (lower is more private)")
    title = "utility-privacy trade-off"
    if left_out:
        title += f"\nnot plotted: {', '.join(left_out)} (no mean IoU)"
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    ax.grid(alpha=0.3)
    return fig
