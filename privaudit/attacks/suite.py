"""Every attack at once: the plain loss attack and, with reference models, the calibrated ones,
scored by the pure functions of ``calibrated``, measured by ``metrics`` (ROC, bootstrap intervals)
and ``epsilon`` (the empirical ε lower bound); the strongest chosen, the distribution check made.

numpy and scipy only: the losses come in as arrays (the target's (N,), the references' (N, K) and
the IN mask (N, K)), so everything here is testable on hand-made numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from privaudit.attacks import calibrated as cal
from privaudit.attacks.epsilon import EpsilonBound, epsilon_lower_bound
from privaudit.attacks.metrics import AttackMetrics, attack_metrics, bootstrap_tpr_ci
from privaudit.defaults import BOOTSTRAP, FPRS

# Every attack name, in the order reports and tables list them.
ATTACK_NAMES = ("loss", "calibrated", "lira-offline", "lira-online", "reference-only")
# Attacks whose score removes each sample's difficulty (and so a distribution shift between the sets).
CALIBRATED = ("calibrated", "lira-offline", "lira-online")
# Not a membership attack: the references alone, a measure of how different the two sets are.
DISTRIBUTION_CHECK = "reference-only"
MOST_EXPOSED = 10

SCORES = {
    "loss": "−target loss",
    "calibrated": "mean OUT reference loss − target loss",
    "lira-offline": "−log P[OUT log-loss ≤ target log-loss], Gaussian per sample",
    "lira-online": "log-likelihood ratio of the target log-loss under IN and OUT Gaussians",
    "reference-only": "−mean OUT reference loss (no target model): a distribution check",
    # segmentation (attacks.segmentation)
    "label-only": "per-image pixel accuracy (or IoU) of the released labels against the ground truth",
    "loss-map": "logit of a CNN trained on a shadow model's per-pixel loss maps (Segmentations-Leak)",
}
# A segmentation audit's attacks, in the order its reports list them.
SEG_ATTACK_NAMES = ("loss", "label-only", "loss-map", "calibrated", "lira-offline", "lira-online", "reference-only")


@dataclass
class Outcome:
    """One attack's scores and what they show."""

    name: str
    scores_members: np.ndarray
    scores_nonmembers: np.ndarray
    metrics: AttackMetrics
    tpr_ci95: dict[str, list[float] | None]
    bound: EpsilonBound
    n_bootstrap: int

    def to_dict(self) -> dict[str, Any]:
        """The attack's entry in the report's ``attacks`` table (``loss`` adds its loss statistics)."""
        m = self.metrics
        d = {"name": self.name, "score": SCORES[self.name], **m.to_dict(), "tpr_at_fpr_ci95": self.tpr_ci95,
             "epsilon_lb": self.bound.epsilon_lb, "delta": self.bound.delta, "epsilon_bound": _bound_detail(self.bound),
             "threshold_score": m.threshold, "n_bootstrap": self.n_bootstrap, "roc": roc_points(m.fpr, m.tpr)}
        return d


def _bound_detail(b: EpsilonBound) -> dict[str, Any]:
    d = b.to_dict()
    d.pop("epsilon_lb")
    d.pop("delta")
    return d


def roc_points(fpr: np.ndarray, tpr: np.ndarray, limit: int | None = None) -> dict[str, list[float]]:
    """The ROC curve thinned to at most ``limit`` points (default: the report's limit)."""
    from privaudit.report.schema import ROC_POINTS_LIMIT

    limit = limit or ROC_POINTS_LIMIT
    if len(fpr) > limit:
        idx = np.unique(np.linspace(0, len(fpr) - 1, limit).round().astype(int))
        fpr, tpr = fpr[idx], tpr[idx]
    return {"fpr": [round(float(v), 6) for v in fpr], "tpr": [round(float(v), 6) for v in tpr]}


def measure(name: str, sm: np.ndarray, sn: np.ndarray, *, fprs: tuple[float, ...] = FPRS, n_bootstrap: int = BOOTSTRAP, seed: int = 0,
            delta: float = 0.0) -> Outcome:
    """ROC metrics with bootstrap intervals (AUC and TPR at each FPR) and the ε lower bound of one score."""
    sm, sn = np.asarray(sm, dtype=np.float64), np.asarray(sn, dtype=np.float64)
    metrics = attack_metrics(sm, sn, fprs=fprs, n_bootstrap=n_bootstrap, seed=seed)
    tci = bootstrap_tpr_ci(sm, sn, fprs=fprs, n_bootstrap=n_bootstrap, seed=seed)
    return Outcome(name, sm, sn, metrics, tci, epsilon_lower_bound(sm, sn, delta=delta), n_bootstrap)


def scores(name: str, target: np.ndarray, refs: np.ndarray | None, inside: np.ndarray | None) -> np.ndarray:
    """The membership score of attack ``name`` for each sample (higher = more likely a member)."""
    if name == "loss":
        return -np.asarray(target, dtype=np.float64)
    if refs is None:
        raise ValueError(f"{name} needs reference models")
    if name == "calibrated":
        return cal.calibrated(target, refs, inside)
    if name == "lira-offline":
        return cal.lira_offline(target, refs, inside)
    if name == "lira-online":
        assert inside is not None
        return cal.lira_online(target, refs, inside)
    if name == "reference-only":
        return cal.reference_only(refs, inside)
    raise ValueError(f"unknown attack {name!r}")


def run_suite(
    names: Sequence[str],
    target_members: np.ndarray,
    target_nonmembers: np.ndarray,
    refs_members: np.ndarray | None = None,
    refs_nonmembers: np.ndarray | None = None,
    inside_members: np.ndarray | None = None,
    inside_nonmembers: np.ndarray | None = None,
    *,
    fprs: tuple[float, ...] = FPRS,
    n_bootstrap: int = BOOTSTRAP,
    seed: int = 0,
    delta: float = 0.0,
) -> dict[str, Outcome]:
    """Every attack of ``names`` on the losses given: {name: Outcome}, in ATTACK_NAMES order.

    Members and non-members are scored together (one (N_m + N_n, K) array), so per-sample statistics
    never depend on which set a sample is in.
    """
    nm = len(target_members)
    target = np.concatenate([np.asarray(target_members, dtype=np.float64), np.asarray(target_nonmembers, dtype=np.float64)])
    refs = inside = None
    if refs_members is not None and refs_nonmembers is not None:
        refs = np.concatenate([refs_members, refs_nonmembers], axis=0)
        if inside_members is not None and inside_nonmembers is not None:
            inside = np.concatenate([inside_members, inside_nonmembers], axis=0)
        else:
            inside = np.zeros(refs.shape, dtype=bool)
    out: dict[str, Outcome] = {}
    for name in ATTACK_NAMES:
        if name not in names:
            continue
        s = scores(name, target, refs, inside)
        out[name] = measure(name, s[:nm], s[nm:], fprs=fprs, n_bootstrap=n_bootstrap, seed=seed, delta=delta)
    return out


# ---------------------------------------------------------------------------------------------
# Which attack is the strongest; whether the sets differ in distribution


def resolved_fpr(fprs: Sequence[float], n_nonmembers: int) -> float | None:
    """The lowest FPR of ``fprs`` that ``n_nonmembers`` resolve (FPR >= 1/n), or None."""
    ok = sorted(f for f in fprs if n_nonmembers > 0 and f >= 1.0 / n_nonmembers)
    return ok[0] if ok else None


def strength(m: AttackMetrics, fpr: float | None) -> tuple[float, float]:
    """(TPR at ``fpr``, AUC), each in the direction an attacker would use (the score or its negation)."""
    from privaudit.report.schema import fpr_key

    tpr = 0.0
    if fpr is not None:
        key = fpr_key(fpr)
        values = [v for v in (m.tpr_at_fpr.get(key), m.flipped_tpr_at_fpr.get(key)) if v is not None]
        tpr = max(values, default=0.0)
    return tpr, m.auc_effective


def shift_detected(reference_only: AttackMetrics | None, n_bootstrap: int) -> bool | None:
    """True when the reference-only score separates the sets (its AUC interval excludes 0.5);
    None when it could not be judged (no reference-only attack, or no bootstrap interval)."""
    if reference_only is None or n_bootstrap <= 0:
        return None
    lo, hi = reference_only.auc_ci95
    return bool(lo > 0.5 or hi < 0.5)


def strongest(outcomes: Mapping[str, Outcome], fprs: Sequence[float], n_nonmembers: int, *, shift: bool | None,
              order: Sequence[str] = ATTACK_NAMES) -> tuple[str, str]:
    """(name, why) of the strongest attack: the highest TPR at the lowest FPR the non-member count
    resolves, ties broken by AUC (both in the attacker's better direction), then by ``order``; over
    shifted sets (``shift``) chosen among the calibrated attacks only. Never the reference-only check."""
    candidates = [n for n in order if n in outcomes and n != DISTRIBUTION_CHECK]
    if shift:
        calibrated_only = [n for n in candidates if n in CALIBRATED]
        candidates = calibrated_only or candidates
    if not candidates:
        raise ValueError("no membership attack to choose from")
    fpr = resolved_fpr(fprs, n_nonmembers)
    best = max(candidates, key=lambda n: (strength(outcomes[n].metrics, fpr), -candidates.index(n)))
    at = f"TPR at {100 * fpr:g}% FPR" if fpr is not None else "AUC (no FPR resolved)"
    why = f"highest {at}, ties by AUC" + (", among the calibrated attacks (the sets differ in distribution)" if shift else "")
    if fpr is not None and _flipped_wins(outcomes[best].metrics, fpr):
        why += "; that TPR is its flipped score's (members scored as the less likely members), which the gate checks too"
    return best, why


def _flipped_wins(m: AttackMetrics, fpr: float) -> bool:
    """Whether the flipped score, not the score, gives ``m``'s TPR at ``fpr``."""
    from privaudit.report.schema import fpr_key

    key = fpr_key(fpr)
    plain, flipped = m.tpr_at_fpr.get(key), m.flipped_tpr_at_fpr.get(key)
    return flipped is not None and (plain is None or flipped > plain)


def most_exposed(names: Sequence[str], member_scores: np.ndarray, k: int = MOST_EXPOSED) -> list[dict[str, Any]]:
    """The ``k`` members with the highest score: [{name, score}], highest first (ties by name)."""
    order = sorted(range(len(names)), key=lambda i: (-float(member_scores[i]), names[i]))[:k]
    return [{"name": names[i], "score": float(member_scores[i])} for i in order]


@dataclass
class SuiteReport:
    """What the report/2 sections are made of."""

    attacks: dict[str, dict[str, Any]]
    strongest: str
    why: str
    shift: dict[str, Any] | None
    exposed: list[dict[str, Any]] = field(default_factory=list)


def report_sections(outcomes: Mapping[str, Outcome], loss_section: dict[str, Any], *, fprs: Sequence[float], member_names: Sequence[str],
                    n_bootstrap: int, k: int = MOST_EXPOSED, order: Sequence[str] = ATTACK_NAMES) -> dict[str, Any]:
    """The sections report/2 adds: ``attacks`` (every attack by name; ``loss`` is ``loss_section``,
    the plain attack's full section), ``attack`` (a copy of the strongest, ``name`` saying which,
    ``selected_by`` why), ``distribution_shift`` (for ``data``) and ``most_exposed``."""
    n_nonmembers = len(next(iter(outcomes.values())).scores_nonmembers)
    ro = outcomes.get(DISTRIBUTION_CHECK)
    shift = shift_detected(ro.metrics if ro is not None else None, n_bootstrap)
    attacks: dict[str, dict[str, Any]] = {}
    for name, o in outcomes.items():
        attacks[name] = dict(loss_section) if name == "loss" else o.to_dict()
    best, why = strongest(outcomes, fprs, n_nonmembers, shift=shift, order=order)
    attack = dict(attacks[best])
    if best != "loss":  # what the table shows beside the metrics: how the target was queried
        for key in ("loss", "generator_mode", "samples", "member_loss", "nonmember_loss"):
            if key in loss_section:
                attack[key] = loss_section[key]
    attack["name"] = best
    attack["selected_by"] = why
    out: dict[str, Any] = {"attacks": attacks, "attack": attack, "most_exposed": most_exposed(member_names, outcomes[best].scores_members, k)}
    if ro is not None:
        lo, hi = ro.metrics.auc_ci95
        if shift is None:
            note = "not judged: the reference-only AUC needs a bootstrap interval (--bootstrap > 0)"
        elif shift:
            note = (f"members and non-members differ in distribution: the references alone separate them (reference-only AUC {ro.metrics.auc:.3f}, "
                    f"95% CI [{lo:.3f}, {hi:.3f}] excludes 0.5); the plain loss attack measures that difference, not membership, so the verdict "
                    "rests on the calibrated attacks")
        else:
            note = f"no distribution shift detected (reference-only AUC {ro.metrics.auc:.3f}, 95% CI [{lo:.3f}, {hi:.3f}] includes 0.5)"
        out["distribution_shift"] = {"detected": shift, "auc": ro.metrics.auc, "auc_ci95": [lo, hi], "attack": DISTRIBUTION_CHECK, "note": note}
    return out
