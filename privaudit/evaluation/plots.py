"""Plots (matplotlib, Agg backend): ROC on linear and log-log axes, loss histograms, trade-off."""

from __future__ import annotations

from typing import Sequence

import numpy as np



def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def plot_roc(curves: Sequence[tuple[str, np.ndarray, np.ndarray, float]]) -> bytes:
    """ROC curves (label, fpr, tpr, auc) side by side on linear and log-log axes, as PNG bytes."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, log in zip(axes, (False, True)):
        for label, fpr, tpr, auc in curves:
            if log:
                keep = (fpr > 0) & (tpr > 0)
                ax.loglog(fpr[keep], tpr[keep], label=f"{label} (AUC {auc:.3f})")
            else:
                ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
        lo = 1e-3 if log else 0.0
        ax.plot([max(lo, 1e-4), 1], [max(lo, 1e-4), 1], "k--", lw=0.8, label="chance")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title("ROC (log-log)" if log else "ROC")
        if log:
            ax.set_xlim(1e-3, 1)
            ax.set_ylim(1e-3, 1)
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
    return figure_png(fig)


def plot_loss_histogram(member_losses: np.ndarray, nonmember_losses: np.ndarray, *, title: str = "") -> bytes:
    """Member versus non-member reconstruction loss (the AKD paper's Fig. 7), as PNG bytes."""
    plt = _plt()
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
    return figure_png(fig)
