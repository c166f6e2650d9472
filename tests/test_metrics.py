"""ROC metrics of the attack on hand-made scores, with values worked out by hand and checked
against scikit-learn. Members are labelled 1; a higher score means "member"."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from privaudit.attacks.metrics import attack_metrics, bootstrap_auc_ci, tpr_at_fpr
from privaudit.gate import parse_tpr_flag
from privaudit.report.schema import fpr_key, parse_fpr

MEMBERS = [0.9, 0.8, 0.4]
NONMEMBERS = [0.7, 0.3, 0.2, 0.1]


def _sk_auc(sm, sn) -> float:
    y = np.r_[np.ones(len(sm)), np.zeros(len(sn))]
    return float(roc_auc_score(y, np.r_[sm, sn]))


def test_auc_by_counting_pairs():
    # 12 (member, non-member) pairs: 0.9 and 0.8 beat all four non-members (8 pairs), 0.4 beats
    # 0.3, 0.2, 0.1 but not 0.7 (3 pairs) -> AUC = 11/12.
    m = attack_metrics(MEMBERS, NONMEMBERS, n_bootstrap=0)
    assert m.auc == pytest.approx(11 / 12)
    assert m.auc == pytest.approx(_sk_auc(MEMBERS, NONMEMBERS))


def test_advantage_threshold_balanced_accuracy_by_hand():
    # Thresholds (member if score >= t): t=0.9 -> TPR 1/3, FPR 0; t=0.8 -> 2/3, 0; t=0.7 -> 2/3, 1/4;
    # t=0.4 -> 1, 1/4 (TPR-FPR = 3/4, the maximum); t=0.3 -> 1, 1/2 ...
    m = attack_metrics(MEMBERS, NONMEMBERS, n_bootstrap=0)
    assert m.advantage == pytest.approx(0.75)
    assert m.threshold == pytest.approx(0.4)
    assert m.balanced_accuracy == pytest.approx(0.5 * (1 + 0.75))
    # The threshold really reaches the advantage: predict member iff score >= threshold.
    tpr = np.mean(np.asarray(MEMBERS) >= m.threshold)
    fpr = np.mean(np.asarray(NONMEMBERS) >= m.threshold)
    assert tpr - fpr == pytest.approx(m.advantage)


def test_tpr_at_fpr_is_none_below_one_over_n_nonmembers():
    # 4 non-members: the smallest measurable non-zero FPR is 1/4, so 0.1%, 1% and 10% are all null.
    m = attack_metrics(MEMBERS, NONMEMBERS, n_bootstrap=0)
    assert m.tpr_at_fpr == {"0.001": None, "0.01": None, "0.1": None}
    # At FPR 0.25 (one non-member above threshold) every member is caught (threshold 0.4).
    m2 = attack_metrics(MEMBERS, NONMEMBERS, n_bootstrap=0, fprs=(0.25, 0.5))
    assert m2.tpr_at_fpr == {"0.25": 1.0, "0.5": 1.0}


def test_tpr_at_fpr_with_enough_nonmembers():
    # 10 non-members 0.0..0.9, members 0.95, 0.85, 0.55, 0.05.
    # FPR <= 0.1 allows one non-member above threshold: threshold 0.9 -> TPR 1/4 (only 0.95)...
    # at threshold 0.85, FPR is 1/10 (0.9) and TPR 2/4.
    sn = np.arange(10) / 10.0
    sm = np.array([0.95, 0.85, 0.55, 0.05])
    m = attack_metrics(sm, sn, n_bootstrap=0)
    assert m.tpr_at_fpr["0.001"] is None and m.tpr_at_fpr["0.01"] is None
    assert m.tpr_at_fpr["0.1"] == pytest.approx(0.5)


def test_tpr_at_fpr_matches_sklearn_roc_curve():
    rng = np.random.default_rng(3)
    sm, sn = rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, 1000)
    m = attack_metrics(sm, sn, n_bootstrap=0)
    fpr, tpr, _ = roc_curve(np.r_[np.ones(300), np.zeros(1000)], np.r_[sm, sn])
    for target in (0.001, 0.01, 0.1):
        expected = tpr[fpr <= target].max()
        assert m.tpr_at_fpr[fpr_key(target)] == pytest.approx(expected)
    assert m.auc == pytest.approx(_sk_auc(sm, sn))
    assert m.advantage == pytest.approx(np.max(tpr - fpr))


def test_tpr_at_fpr_boundary():
    fpr = np.array([0.0, 0.01, 0.02, 1.0])
    tpr = np.array([0.2, 0.5, 0.6, 1.0])
    assert tpr_at_fpr(fpr, tpr, 0.001, n_negatives=100) is None  # 0.001 < 1/100
    assert tpr_at_fpr(fpr, tpr, 0.01, n_negatives=100) == pytest.approx(0.5)  # exactly 1/100 is measurable
    assert tpr_at_fpr(fpr, tpr, 0.01, n_negatives=99) is None
    assert tpr_at_fpr(fpr, tpr, 0.1, n_negatives=0) is None


def test_fpr_keys():
    assert [fpr_key(f) for f in (0.001, 0.01, 0.1)] == ["0.001", "0.01", "0.1"]
    assert [fpr_key(f) for f in (1e-05, 2.5e-06)] == ["1e-05", "2.5e-06"]
    # the one spelling is also lossless: a key reads back as the very FPR it was written for
    assert fpr_key(0.0123456789) == "0.0123456789" and fpr_key(1.23456789e-5) == "1.23456789e-05"
    for f in (0.001, 0.01, 0.1, 1e-05, 0.0123456789, 1 / 3):
        assert parse_fpr(fpr_key(f)) == f


def test_report_and_gate_spell_fpr_keys_alike():
    m = attack_metrics(np.arange(20.0), np.arange(20.0) - 5, fprs=(0.05, 0.1, 1 / 3), n_bootstrap=0)
    assert list(m.tpr_at_fpr) == [fpr_key(0.05), fpr_key(0.1), fpr_key(1 / 3)] == ["0.05", "0.1", "0.3333333333333333"]
    assert list(parse_tpr_flag(["5e-2=0.1", "0.10=0.2", f"{1 / 3!r}=0.3"])) == list(m.tpr_at_fpr)


def test_auc_with_ties_counts_one_half():
    # members 0.5, 0.5, 0.9; non-members 0.5, 0.1: each 0.5 member ties 0.5 (1/2) and beats 0.1 (1),
    # 0.9 beats both (2) -> (1.5 + 1.5 + 2) / 6 = 5/6.
    m = attack_metrics([0.5, 0.5, 0.9], [0.5, 0.1], n_bootstrap=0)
    assert m.auc == pytest.approx(5 / 6)


def test_perfect_and_inverted_attacks():
    perfect = attack_metrics([3.0, 2.0], [1.0, 0.0], n_bootstrap=200)
    assert perfect.auc == 1.0 and perfect.advantage == 1.0 and perfect.balanced_accuracy == 1.0
    assert perfect.auc_ci95 == (1.0, 1.0)
    inverted = attack_metrics([0.0, 1.0], [2.0, 3.0], n_bootstrap=0)
    assert inverted.auc == 0.0
    assert inverted.advantage == pytest.approx(0.0)
    assert inverted.balanced_accuracy == pytest.approx(0.5)


def test_empty_sets_are_rejected():
    with pytest.raises(ValueError):
        attack_metrics([], [0.1])
    with pytest.raises(ValueError):
        attack_metrics([0.1], [])


def test_to_dict_is_json_ready():
    import json

    d = attack_metrics(MEMBERS, NONMEMBERS, n_bootstrap=50).to_dict()
    assert set(d) == {"auc", "auc_ci95", "tpr_at_fpr", "advantage", "balanced_accuracy", "flipped", "auc_effective", "flipped_score"}
    assert set(d["flipped_score"]) == {"auc", "auc_ci95", "tpr_at_fpr", "advantage", "balanced_accuracy"}
    json.dumps(d, allow_nan=False)


# ------------------------------------------------------------------------------------------------
# bootstrap


@pytest.fixture
def noisy_scores():
    rng = np.random.default_rng(0)
    return rng.normal(0.5, 1.0, 40), rng.normal(0.0, 1.0, 50)


def test_bootstrap_ci_is_seeded(noisy_scores):
    sm, sn = noisy_scores
    a = bootstrap_auc_ci(sm, sn, n_bootstrap=500, seed=7)
    b = bootstrap_auc_ci(sm, sn, n_bootstrap=500, seed=7)
    c = bootstrap_auc_ci(sm, sn, n_bootstrap=500, seed=8)
    assert a == b
    assert a != c


def test_bootstrap_ci_brackets_the_auc(noisy_scores):
    sm, sn = noisy_scores
    m = attack_metrics(sm, sn, n_bootstrap=1000, seed=0)
    lo, hi = m.auc_ci95
    assert 0.0 <= lo < m.auc < hi <= 1.0
    # A 95% interval from 40 + 50 samples is neither degenerate nor the whole range.
    assert 0.05 < hi - lo < 0.5
    assert m.auc_ci95 == attack_metrics(sm, sn, n_bootstrap=1000, seed=0).auc_ci95


def test_bootstrap_zero_resamples_gives_point_interval(noisy_scores):
    sm, sn = noisy_scores
    lo, hi = bootstrap_auc_ci(sm, sn, n_bootstrap=0)
    assert lo == hi == pytest.approx(_sk_auc(sm, sn))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_vectorised_bootstrap_replicate_equals_sklearn(seed, ties):
    """One replicate (n_bootstrap=1, so the interval is that replicate's AUC) drawn with the same
    generator calls as the implementation: its Mann-Whitney AUC equals roc_auc_score's, ties
    included (integer scores, and resampling with replacement, make many)."""
    rng = np.random.default_rng(100 + seed)
    if ties:
        sm = rng.integers(0, 4, 9).astype(float)
        sn = rng.integers(0, 3, 11).astype(float)
    else:
        sm, sn = rng.normal(0.3, 1, 9), rng.normal(0, 1, 11)
    lo, hi = bootstrap_auc_ci(sm, sn, n_bootstrap=1, seed=seed)
    draw = np.random.default_rng(seed)
    im = draw.integers(0, len(sm), (1, len(sm)))[0]
    in_ = draw.integers(0, len(sn), (1, len(sn)))[0]
    expected = _sk_auc(sm[im], sn[in_])
    assert lo == pytest.approx(expected, abs=1e-12)
    assert hi == pytest.approx(expected, abs=1e-12)


def test_bootstrap_many_replicates_in_blocks_match_sklearn():
    """More replicates than one block (256): the CI equals the percentiles of sklearn AUCs
    computed replicate by replicate with the same draws."""
    rng = np.random.default_rng(5)
    sm = rng.integers(0, 5, 7).astype(float)
    sn = rng.integers(0, 5, 6).astype(float)
    n_boot = 300
    lo, hi = bootstrap_auc_ci(sm, sn, n_bootstrap=n_boot, seed=11)
    draw = np.random.default_rng(11)
    aucs = []
    for start in range(0, n_boot, 256):
        b = min(256, n_boot - start)
        im = draw.integers(0, len(sm), (b, len(sm)))
        in_ = draw.integers(0, len(sn), (b, len(sn)))
        for r in range(b):
            a, c = sm[im[r]], sn[in_[r]]
            # sklearn refuses a replicate with a single class only if a set is empty; both are not.
            aucs.append(_sk_auc(a, c))
    exp_lo, exp_hi = np.quantile(aucs, [0.025, 0.975])
    assert lo == pytest.approx(exp_lo, abs=1e-12)
    assert hi == pytest.approx(exp_hi, abs=1e-12)
