"""An empirical lower bound on ε from a membership inference attack (Jagielski et al., 2020).

A mechanism that is (ε, δ)-DP bounds every membership test: TPR ≤ e^ε·FPR + δ and
1 − FPR ≤ e^ε·(1 − TPR) + δ. An attack that reaches (TPR, FPR) therefore shows

    ε ≥ max( log((TPR − δ) / FPR), log((1 − δ − FPR) / (1 − TPR)) ).

TPR and FPR are measured on finitely many members and non-members, so the bound uses their
one-sided Clopper–Pearson limits (TPR's lower, FPR's upper): the figure is a lower bound that holds
with the stated confidence. The threshold is chosen as the one giving the largest bound; choosing
it on the same scores costs a multiple-comparison correction, applied here (Bonferroni over the
distinct thresholds scanned), so the maximum still holds at the stated confidence.

Inputs are plain counts or score arrays; numpy and scipy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import beta

DEFAULT_CONFIDENCE = 0.95


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided lower limit of a binomial proportion k/n at level 1 − alpha (0 when k = 0)."""
    _check_counts(k, n)
    return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided upper limit of a binomial proportion k/n at level 1 − alpha (1 when k = n)."""
    _check_counts(k, n)
    return 1.0 if k == n else float(beta.ppf(1.0 - alpha, k + 1, n - k))


def _check_counts(k: int, n: int) -> None:
    if not (0 <= k <= n and n >= 1):
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")


def epsilon_from_rates(tpr: float, fpr: float, delta: float) -> float:
    """The (ε, δ)-DP lower bound implied by one (TPR, FPR) point; 0 when it implies nothing,
    ``inf`` when it is impossible under any finite ε (e.g. TPR > δ at FPR 0)."""
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    bounds = [0.0]
    for num, den in ((tpr - delta, fpr), (1.0 - delta - fpr, 1.0 - tpr)):
        if num <= 0:
            continue
        bounds.append(math.inf if den <= 0 else math.log(num / den))
    return max(bounds)


@dataclass(frozen=True)
class EpsilonBound:
    """The bound and where it was reached; ``epsilon_lb`` is 0 when the attack shows nothing."""

    epsilon_lb: float
    delta: float
    confidence: float
    tpr: float
    fpr: float
    tpr_lower: float
    fpr_upper: float
    threshold: float | None
    thresholds_scanned: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "epsilon_lb": self.epsilon_lb,
            "delta": self.delta,
            "confidence": self.confidence,
            "at": {"tpr": self.tpr, "fpr": self.fpr, "tpr_lower": self.tpr_lower, "fpr_upper": self.fpr_upper, "threshold": self.threshold},
            "method": "Clopper-Pearson one-sided limits, threshold chosen over the scores with a Bonferroni correction",
            "thresholds_scanned": self.thresholds_scanned,
        }


def epsilon_lower_bound(
    scores_members: np.ndarray,
    scores_nonmembers: np.ndarray,
    *,
    delta: float = 0.0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> EpsilonBound:
    """The largest ε lower bound over thresholds of "member if score ≥ t" (higher score = member).

    Every distinct score is a candidate threshold; the Clopper–Pearson limits are taken at level
    ``1 − (1 − confidence) / (2 T)`` for T candidates (Bonferroni over thresholds and the two
    limits), so the reported maximum holds with probability ``confidence``.
    """
    sm = np.asarray(scores_members, dtype=np.float64)
    sn = np.asarray(scores_nonmembers, dtype=np.float64)
    if sm.size == 0 or sn.size == 0:
        raise ValueError("the ε bound needs at least one member and one non-member score")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    thresholds = np.unique(np.concatenate([sm, sn]))
    m, n = sm.size, sn.size
    # counts with score >= t, for every candidate t (both directions of the bound use them)
    tp = m - np.searchsorted(np.sort(sm), thresholds, side="left")
    fp = n - np.searchsorted(np.sort(sn), thresholds, side="left")
    alpha = (1.0 - confidence) / (2 * len(thresholds))
    tp_lo = np.where(tp == 0, 0.0, beta.ppf(alpha, np.maximum(tp, 1), m - tp + 1))
    fp_hi = np.where(fp == n, 1.0, beta.ppf(1.0 - alpha, fp + 1, np.maximum(n - fp, 1)))
    eps = np.array([epsilon_from_rates(float(lo), float(hi), delta) for lo, hi in zip(tp_lo, fp_hi)])
    j = int(np.argmax(eps))
    if not eps[j] > 0:
        return EpsilonBound(0.0, delta, confidence, 0.0, 0.0, 0.0, 1.0, None, len(thresholds))
    return EpsilonBound(float(eps[j]), delta, confidence, int(tp[j]) / m, int(fp[j]) / n, float(tp_lo[j]), float(fp_hi[j]), float(thresholds[j]), len(thresholds))
