"""ROC metrics of a membership inference attack (scikit-learn for the ROC itself).

Convention (ML Privacy Meter, LiRA): members are labelled 1, and a higher score means "more
likely a member". For the reconstruction-loss attack the score is ``-loss``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score, roc_curve

from privaudit.defaults import BOOTSTRAP, FPRS, SEED
from privaudit.errors import EnvironmentProblem
from privaudit.report.schema import fpr_key

# Scores per bootstrap block (rows x (members + non-members)); 256 rows up to 16,384 samples.
BOOTSTRAP_BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class AttackMetrics:
    auc: float
    auc_ci95: tuple[float, float]
    tpr_at_fpr: dict[str, float | None]
    advantage: float
    balanced_accuracy: float
    threshold: float
    fpr: np.ndarray
    tpr: np.ndarray
    # The same attack with its score negated (an attacker who predicts "member" for HIGH loss):
    # its AUC is 1 − auc; an attacker gets it whenever auc < 0.5, so gates judge both directions.
    flipped_tpr_at_fpr: dict[str, float | None] = field(default_factory=dict)
    flipped_advantage: float = 0.0

    @property
    def flipped(self) -> bool:
        """True when the score ranks members BELOW non-members (AUC < 0.5): the attack works flipped."""
        return self.auc < 0.5

    @property
    def auc_effective(self) -> float:
        """What an attacker gets by choosing the better direction: max(AUC, 1 − AUC)."""
        return max(self.auc, 1.0 - self.auc)

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.auc_ci95
        return {
            "auc": self.auc,
            "auc_ci95": list(self.auc_ci95),
            "tpr_at_fpr": self.tpr_at_fpr,
            "advantage": self.advantage,
            "balanced_accuracy": self.balanced_accuracy,
            "flipped": self.flipped,
            "auc_effective": self.auc_effective,
            "flipped_score": {
                "auc": 1.0 - self.auc,
                "auc_ci95": [1.0 - hi, 1.0 - lo],
                "tpr_at_fpr": self.flipped_tpr_at_fpr,
                "advantage": self.flipped_advantage,
                "balanced_accuracy": 0.5 * (1.0 + self.flipped_advantage),
            },
        }


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float, n_negatives: int) -> float | None:
    """Highest TPR whose FPR does not exceed ``target`` (no interpolation, so never optimistic).

    ``None`` when ``target < 1 / n_negatives``: with that few non-members the only measurable FPR
    below the target is 0, and a TPR "at 0.1% FPR" from 106 non-members would be a guess.
    """
    if n_negatives <= 0 or target < 1.0 / n_negatives:
        return None
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def bootstrap_auc_ci(
    scores_members: np.ndarray,
    scores_nonmembers: np.ndarray,
    *,
    n_bootstrap: int = BOOTSTRAP,
    seed: int = SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of the AUC over a stratified bootstrap (members and non-members
    resampled separately, so each replicate keeps both classes). Seeded: same seed, same interval.
    """
    if n_bootstrap <= 0:
        auc = _auc(scores_members, scores_nonmembers)
        return (auc, auc)
    rng = np.random.default_rng(seed)
    m, n = len(scores_members), len(scores_nonmembers)
    # Replicates in blocks, each AUC from the Mann-Whitney U statistic (ties count one half),
    # which is exactly the ROC AUC; a loop over roc_auc_score would dominate the attack's time.
    # A block holds (block, m + n) scores: 256 rows, fewer for very large sets, so the memory
    # stays bounded and a large --bootstrap costs time, not memory.
    block = max(1, min(256, BOOTSTRAP_BLOCK_ELEMENTS // (m + n)))
    try:
        aucs = np.empty(n_bootstrap)
        for start in range(0, n_bootstrap, block):
            b = min(block, n_bootstrap - start)
            sm = scores_members[rng.integers(0, m, (b, m))]
            sn = scores_nonmembers[rng.integers(0, n, (b, n))]
            ranks = rankdata(np.concatenate([sm, sn], axis=1), axis=1)
            u = ranks[:, :m].sum(axis=1) - m * (m + 1) / 2.0
            aucs[start : start + b] = u / (m * n)
    except MemoryError:
        raise EnvironmentProblem(
            f"out of memory while bootstrapping the AUC interval ({n_bootstrap} resamples of {m} members and {n} non-members); "
            "pass a smaller --bootstrap (0 skips the interval) or free memory"
        ) from None
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(aucs, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def bootstrap_tpr_ci(
    scores_members: np.ndarray,
    scores_nonmembers: np.ndarray,
    *,
    fprs: tuple[float, ...] = FPRS,
    n_bootstrap: int = BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, list[float] | None]:
    """Percentile interval of the TPR at each FPR over the same stratified bootstrap as the AUC's
    (members and non-members resampled separately; seeded). ``None`` for an FPR the non-member
    count does not resolve (as ``tpr_at_fpr``); a point interval when ``n_bootstrap`` is 0.

    The TPR at FPR f is that of ``tpr_at_fpr``: with k = floor(f·n) false positives allowed, the
    fraction of members scoring strictly above the (k+1)-th highest non-member score.
    """
    sm = np.asarray(scores_members, dtype=np.float64)
    sn = np.asarray(scores_nonmembers, dtype=np.float64)
    m, n = len(sm), len(sn)
    resolved = [f for f in fprs if n > 0 and f >= 1.0 / n]
    out: dict[str, list[float] | None] = {fpr_key(f): None for f in fprs}
    if not resolved:
        return out
    ks = [int(np.floor(f * n + 1e-9)) for f in resolved]

    def tprs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(rows, len(resolved)) TPRs of member rows ``a`` against non-member rows ``b``."""
        desc = -np.sort(-b, axis=1)
        cols = []
        for k in ks:
            if k >= n:
                cols.append(np.ones(a.shape[0]))
            else:
                cols.append((a > desc[:, k : k + 1]).mean(axis=1))
        return np.stack(cols, axis=1)

    if n_bootstrap <= 0:
        point = tprs(sm[None, :], sn[None, :])[0]
        out.update({fpr_key(f): [float(v), float(v)] for f, v in zip(resolved, point)})
        return out
    rng = np.random.default_rng(seed)
    block = max(1, min(256, BOOTSTRAP_BLOCK_ELEMENTS // (m + n)))
    reps = np.empty((n_bootstrap, len(resolved)))
    try:
        for start in range(0, n_bootstrap, block):
            b = min(block, n_bootstrap - start)
            reps[start : start + b] = tprs(sm[rng.integers(0, m, (b, m))], sn[rng.integers(0, n, (b, n))])
    except MemoryError:
        raise EnvironmentProblem(f"out of memory while bootstrapping the TPR intervals ({n_bootstrap} resamples); pass a smaller --bootstrap") from None
    alpha = (1.0 - level) / 2.0
    for j, f in enumerate(resolved):
        lo, hi = np.quantile(reps[:, j], [alpha, 1.0 - alpha])
        out[fpr_key(f)] = [float(lo), float(hi)]
    return out


def _auc(scores_members: np.ndarray, scores_nonmembers: np.ndarray) -> float:
    y = np.concatenate([np.ones(len(scores_members)), np.zeros(len(scores_nonmembers))])
    return float(roc_auc_score(y, np.concatenate([scores_members, scores_nonmembers])))


def attack_metrics(
    scores_members: np.ndarray,
    scores_nonmembers: np.ndarray,
    *,
    fprs: tuple[float, ...] = FPRS,
    n_bootstrap: int = BOOTSTRAP,
    seed: int = SEED,
) -> AttackMetrics:
    """AUC with a bootstrap 95% interval, TPR at fixed FPRs, advantage max(TPR − FPR), balanced
    accuracy and the score threshold at which the advantage is reached (predict member if
    ``score >= threshold``).
    """
    sm = np.asarray(scores_members, dtype=np.float64)
    sn = np.asarray(scores_nonmembers, dtype=np.float64)
    if len(sm) == 0 or len(sn) == 0:
        raise ValueError("an attack needs at least one member and one non-member")
    y = np.concatenate([np.ones(len(sm)), np.zeros(len(sn))])
    s = np.concatenate([sm, sn])
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    auc = float(roc_auc_score(y, s))
    j = int(np.argmax(tpr - fpr))
    advantage = float(tpr[j] - fpr[j])
    # roc_curve's first threshold is +inf (nobody predicted member); it never maximises tpr - fpr
    # unless the attack is useless, in which case the highest score is as good a threshold as any.
    threshold = float(thresholds[j]) if np.isfinite(thresholds[j]) else float(s.max())
    # The negated score (an attacker who predicts "member" for HIGH loss). Its ROC is the mirror image
    # (1 − fpr, 1 − tpr) of this one; computed afresh so its rates are the exact fractions.
    ffpr, ftpr, _ = roc_curve(y, -s, drop_intermediate=False)
    return AttackMetrics(
        auc=auc,
        auc_ci95=bootstrap_auc_ci(sm, sn, n_bootstrap=n_bootstrap, seed=seed),
        tpr_at_fpr={fpr_key(f): tpr_at_fpr(fpr, tpr, f, len(sn)) for f in fprs},
        advantage=advantage,
        balanced_accuracy=0.5 * (1.0 + advantage),
        threshold=threshold,
        fpr=fpr,
        tpr=tpr,
        flipped_tpr_at_fpr={fpr_key(f): tpr_at_fpr(ffpr, ftpr, f, len(sn)) for f in fprs},
        flipped_advantage=float(np.max(fpr - tpr)),
    )
