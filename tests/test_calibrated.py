"""Reference-calibrated scores (calibrated, LiRA) and the empirical ε lower bound, against values
worked out by hand and against scipy's own binomial intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from sklearn.metrics import roc_auc_score

from privaudit.attacks.calibrated import calibrated, lira_offline, lira_online, reference_only
from privaudit.attacks.epsilon import (
    clopper_pearson_lower,
    clopper_pearson_upper,
    epsilon_from_rates,
    epsilon_lower_bound,
)


def _auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    return float(roc_auc_score(np.r_[np.ones(len(members)), np.zeros(len(nonmembers))], np.r_[members, nonmembers]))


# ------------------------------------------------------------------------------- Clopper–Pearson


@pytest.mark.parametrize("k,n", [(0, 106), (1, 106), (37, 106), (105, 106), (106, 106), (0, 1), (1, 1), (200, 400)])
@pytest.mark.parametrize("alpha", [0.05, 0.025, 1e-4])
def test_one_sided_limits_equal_scipys_exact_interval(k, n, alpha):
    lo, hi = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
    assert clopper_pearson_lower(k, n, alpha) == pytest.approx(lo, abs=1e-12)
    assert clopper_pearson_upper(k, n, alpha) == pytest.approx(hi, abs=1e-12)


def test_limits_at_the_edges_by_hand():
    # no false positive among 106: the upper limit solves (1 - p)^106 = alpha
    assert clopper_pearson_upper(0, 106, 0.05) == pytest.approx(1 - 0.05 ** (1 / 106), rel=1e-12)
    # every member caught among 400: the lower limit solves p^400 = alpha
    assert clopper_pearson_lower(400, 400, 0.05) == pytest.approx(0.05 ** (1 / 400), rel=1e-12)


# ------------------------------------------------------------------------------- ε lower bound


def test_epsilon_from_one_point_by_hand():
    assert epsilon_from_rates(0.5, 0.05, 0.0) == pytest.approx(math.log(10))
    assert epsilon_from_rates(0.99, 0.5, 0.0) == pytest.approx(math.log(0.5 / 0.01))  # the second inequality
    assert epsilon_from_rates(0.5, 0.05, 1e-5) == pytest.approx(math.log((0.5 - 1e-5) / 0.05))
    assert epsilon_from_rates(0.3, 0.3, 0.0) == 0.0  # chance shows nothing
    assert epsilon_from_rates(0.5, 0.0, 0.0) == math.inf


def test_perfect_separation_reaches_the_bound_worked_out_by_hand():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.uniform(1, 2, 400), rng.uniform(-2, -1, 106)
    b = epsilon_lower_bound(members, nonmembers, delta=0.0, confidence=0.95)
    alpha = 0.05 / (2 * 506)  # Bonferroni over 506 distinct thresholds and the two limits
    lo, hi = alpha ** (1 / 400), 1 - alpha ** (1 / 106)
    expected = max(math.log(lo / hi), math.log((1 - hi) / (1 - lo)))
    assert b.epsilon_lb == pytest.approx(expected, rel=1e-9)
    assert (b.tpr, b.fpr, b.thresholds_scanned) == (1.0, 0.0, 506)


def test_the_bound_is_sound_on_attacks_that_know_nothing():
    # Members and non-members from one distribution: any ε > 0 claimed here is a false alarm.
    # At 95% confidence at most about 5% of runs may claim one; the correction makes it rarer.
    false_alarms = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        b = epsilon_lower_bound(rng.normal(size=300), rng.normal(size=300), confidence=0.95)
        false_alarms += b.epsilon_lb > 0
    assert false_alarms <= 2


def test_a_stronger_attack_gets_a_larger_bound():
    rng = np.random.default_rng(1)
    weak = epsilon_lower_bound(rng.normal(0.5, 1, 500), rng.normal(0, 1, 500))
    strong = epsilon_lower_bound(rng.normal(3.0, 1, 500), rng.normal(0, 1, 500))
    assert 0 < weak.epsilon_lb < strong.epsilon_lb


# ------------------------------------------------------------------------------- calibrated scores


def test_calibrated_and_offline_lira_by_hand():
    refs = np.exp(np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]))
    target = np.exp(np.array([0.5, 1.0]))
    np.testing.assert_allclose(calibrated(target, refs), refs.mean(axis=1) - target)
    # log-space OUT means 1 and 1; pooled variance (2 + 0) / (6 - 2) = 0.5 (three references < 8)
    z = np.array([(0.5 - 1.0) / math.sqrt(0.5), 0.0])
    np.testing.assert_allclose(lira_offline(target, refs), -norm.logcdf(z), rtol=1e-12)
    np.testing.assert_allclose(lira_offline(target, refs), [1.4281, math.log(2)], atol=1e-4)


def test_online_lira_by_hand():
    logs = np.array([[0.0, 0.2, 1.0, 1.2]])
    inside = np.array([[True, True, False, False]])
    t = np.exp(np.array([0.1]))
    # IN mean 0.1, OUT mean 1.1; pooled variance (0.02 + 0.02) / (4 - 2) = 0.02 for both
    sd = math.sqrt(0.02)
    expected = norm.logpdf(0.1, 0.1, sd) - norm.logpdf(0.1, 1.1, sd)
    np.testing.assert_allclose(lira_online(t, np.exp(logs), inside), [expected], rtol=1e-12)


def test_online_attacks_ignore_the_in_references_when_calibrating():
    refs = np.array([[0.1, 5.0]])
    inside = np.array([[True, False]])
    assert calibrated(np.array([1.0]), refs, inside)[0] == pytest.approx(4.0)  # only the OUT reference


def test_reference_only_scores_easy_samples_as_members():
    refs = np.array([[0.1, 0.1], [0.9, 0.9]])
    s = reference_only(refs)
    assert s[0] > s[1]


def test_calibration_recovers_membership_hidden_by_difficulty():
    """Each sample has its own difficulty (log-loss level, spread far wider than the membership
    effect). Members' losses are IN draws, non-members' OUT draws: the plain loss attack is near
    chance, while per-sample calibration approaches the optimal test, whose AUC is known:
    Φ(Δ / (σ√2)) for a shift Δ between two Gaussians of std σ."""
    rng = np.random.default_rng(0)
    n, k, shift, sd = 600, 16, 0.2, 0.1
    difficulty = rng.normal(0.0, 1.0, n)
    member = np.arange(n) < n // 2
    inside = rng.random((n, k)) < 0.5
    inside[:, 0], inside[:, 1] = True, False  # at least one IN and one OUT per sample
    refs = np.exp(difficulty[:, None] + rng.normal(0, sd, (n, k)) - shift * inside)
    target = np.exp(difficulty + rng.normal(0, sd, n) - shift * member)

    optimal = norm.cdf(shift / (sd * math.sqrt(2)))
    plain = _auc(-target[member], -target[~member])
    cal = calibrated(target, refs, inside)
    off = lira_offline(target, refs, inside)
    on = lira_online(target, refs, inside)
    assert plain < 0.6
    # the difference of raw losses is calibrated but not variance-stabilised (the effect here is
    # multiplicative): far above the plain attack, below the log-space tests
    assert _auc(cal[member], cal[~member]) > 0.8
    for scores in (off, on):
        assert _auc(scores[member], scores[~member]) > optimal - 0.06
    assert _auc(on[member], on[~member]) == pytest.approx(optimal, abs=0.04)
    ref_only = reference_only(refs, inside)
    assert abs(_auc(ref_only[member], ref_only[~member]) - 0.5) < 0.08  # same distribution: no signal


def test_shapes_are_checked():
    with pytest.raises(ValueError):
        calibrated(np.zeros(3), np.zeros((2, 4)))
    with pytest.raises(ValueError):
        lira_online(np.ones(2), np.ones((2, 2)), np.array([[True, True], [False, True]]))  # sample 0 has no OUT
