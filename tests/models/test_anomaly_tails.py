"""The per-feature tail scorer and the likelihood's spread floor: what they change, and that the
combined score stays causal and keeps ranking."""

from __future__ import annotations

import numpy as np
import pytest

from fleetml.models.anomaly import IsolationForestDetector, ScoreCalibrator
from fleetml.models.anomaly_ensemble import DeviationScorer, FeatureTailScorer


def _bimodal_training(n: int = 3000, seed: int = 0) -> np.ndarray:
    """Feature 0 jumps between two states (its robust z of ordinary rows reaches ~20);
    feature 1 is quiet noise (|z| rarely above 4)."""
    rng = np.random.default_rng(seed)
    state = (np.arange(n) // 100) % 3 == 0  # a third of the rows in the high state
    level = np.where(state, 20.0, 0.0) + rng.normal(0, 1, n)
    quiet = rng.normal(0, 1, n)
    return np.column_stack([level, quiet])


def test_tail_scorer_ranks_a_feature_by_its_own_tail():
    Z = _bimodal_training()
    tails = FeatureTailScorer().fit(Z)
    ordinary_high_state = np.array([[21.0, 0.0]])
    quiet_feature_out = np.array([[0.0, 15.0]])
    # raw |z| ranks the ordinary high state above a quiet feature far outside its range ...
    dev = DeviationScorer()
    assert dev.score(ordinary_high_state)[0] > dev.score(quiet_feature_out)[0]
    # ... the per-feature tails rank them the other way round
    assert tails.score(quiet_feature_out)[0] > tails.score(ordinary_high_state)[0] + 1.5


def test_tail_scorer_keeps_order_far_out_and_floors_the_tail_scale():
    rng = np.random.default_rng(1)
    Z = np.column_stack([rng.normal(0, 1, 2000), np.zeros(2000)])  # feature 1 never moved
    tails = FeatureTailScorer().fit(Z)
    far = tails.score(np.array([[10.0, 0.0], [20.0, 0.0], [40.0, 0.0]]))
    assert np.all(np.diff(far) > 0)
    # a feature constant in training: a tiny move is its top 1 %, not infinitely surprising
    # (the tail scale is floored), and a larger move ranks higher
    small, larger = tails.score(np.array([[0.0, 0.01], [0.0, 5.0]]))
    assert small < 2.5
    assert small < larger < 6.0


def _daily(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    base = 10 * np.sin(2 * np.pi * t / 288)
    return np.column_stack([base + rng.normal(0, 1, n), rng.normal(0, 1, n), base])


@pytest.fixture(scope="module")
def tails_detector():
    X = _daily(3000, 0)
    det = IsolationForestDetector(
        n_estimators=30,
        scorers=("forest", "tails"),
        short_window=5,
        likelihood_min_std=0.3,
        random_state=0,
    )
    return det.fit(X, groups=["a"] * len(X))


def test_scores_with_tails_are_causal(tails_detector):
    X = _daily(400, 5)
    g = ["a"] * len(X)
    before = tails_detector.anomaly_score(X, groups=g)
    changed = X.copy()
    changed[250:] += 40.0  # a large change in the future of row 249
    after = tails_detector.anomaly_score(changed, groups=g)
    np.testing.assert_array_equal(before[:250], after[:250])
    assert after[250:260].max() > before[250:260].max()


def test_combined_score_with_tails_ranks_without_saturating(tails_detector):
    rng = np.random.default_rng(3)
    rows, sizes = [_daily(100, 7)], [4.0, 8.0, 16.0, 32.0]
    for size in sizes:
        rows.append(np.tile([size, size, 0.0], (12, 1)))
        rows.append(_daily(40, int(size)))
    X = np.vstack(rows)
    scores = tails_detector.anomaly_score(X, groups=["a"] * len(X))
    peaks = [scores[100 + 52 * i : 112 + 52 * i].max() for i in range(len(sizes))]
    assert np.all(np.diff(peaks) > 0), peaks
    assert max(peaks) < 1.0
    assert scores[:100].max() < min(peaks)
    del rng


def test_likelihood_spread_floor_quiets_moderate_lasting_rises():
    rng = np.random.default_rng(4)
    raw = rng.normal(0.0, 1.0, 5000)
    quiet = np.full(2000, np.median(raw)) + rng.normal(0, 1e-4, 2000)  # a very regular account

    def fitted(floor):
        cal = ScoreCalibrator(short_window=5, likelihood_min_std=floor).fit_cdf(raw)
        cal.fit_likelihood([(0, quiet)], n_groups=1)
        return cal

    low, high = fitted(1e-3), fitted(0.3)
    assert high.std_[0] >= 0.3 > low.std_[0]
    codes, new = np.zeros(20, dtype=np.intp), np.r_[True, np.zeros(19, dtype=bool)]
    moderate = np.full(20, np.quantile(raw, 0.8))  # a lasting, moderate rise
    huge = np.full(20, raw.max() + 5.0)
    L_low, L_high = low.log10_tail(moderate, codes, new), high.log10_tail(moderate, codes, new)
    assert L_high[10:].max() < 5.0 < L_low[10:].max()  # below 0.5 with the floor, not without
    assert high.log10_tail(huge, codes, new)[10:].min() > 5.0  # a real outage still pages


def test_unknown_scorer_is_refused():
    with pytest.raises(ValueError, match="scorers"):
        IsolationForestDetector(scorers=("forest", "spectral")).fit(np.zeros((50, 2)))


def test_small_and_large_batches_give_the_per_feature_probit_exactly():
    rng = np.random.default_rng(6)
    n = 4000
    Z = np.column_stack(
        [
            rng.standard_t(3, n),
            np.zeros(n),  # constant in training
            np.where(rng.random(n) < 0.995, 0.0, rng.exponential(3.0, n)),  # zero-inflated
            np.round(rng.normal(0, 2, n)),  # ties
        ]
    )
    tails = FeatureTailScorer().fit(Z)
    rows = np.vstack([np.round(rng.standard_t(3, (600, 4)) * 3, 1), np.zeros((3, 4))])
    expected = np.max([c.probit(np.abs(rows[:, j])) for j, c in enumerate(tails.calibrators_)], 0)
    # the same bits, large batches and small: the calibration downstream has steps at tied grid
    # points, so an ulp of difference can move a row's calibrated score
    np.testing.assert_array_equal(tails.score(rows), expected)
    for i in range(0, 600, 5):  # the all-features-at-once path of small batches
        np.testing.assert_array_equal(tails.score(rows[i : i + 5]), expected[i : i + 5])
    grid_points = tails.calibrators_[3].scores_[None, :].repeat(4, 0).T  # exactly on the ties
    np.testing.assert_array_equal(
        tails.score(grid_points[:8]),
        np.max([c.probit(grid_points[:8, j]) for j, c in enumerate(tails.calibrators_)], 0),
    )
