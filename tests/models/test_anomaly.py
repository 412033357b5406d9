"""The anomaly detector: scikit-learn contract, calibration range, fast scoring, alert rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.utils.estimator_checks import parametrize_with_checks

from fleetml.models.anomaly import (
    AlertRule,
    IsolationForestDetector,
    PackedForest,
    RobustZBaseline,
    rolling_mean_by_group,
)


@parametrize_with_checks([IsolationForestDetector(n_estimators=10, random_state=0)])
def test_sklearn_estimator_contract(estimator, check):
    check(estimator)


@pytest.fixture
def two_accounts():
    """Two accounts with very different levels; account b is 50x larger than a."""
    rng = np.random.default_rng(1)
    a = rng.normal(10.0, 1.0, size=(600, 3))
    b = rng.normal(500.0, 50.0, size=(600, 3))
    X = np.vstack([a, b])
    groups = np.repeat(["a", "b"], 600)
    return X, groups


def test_packed_forest_matches_sklearn_scores():
    X = np.random.default_rng(0).normal(size=(2000, 5))
    forest = IsolationForest(n_estimators=30, random_state=0).fit(X)
    np.testing.assert_allclose(PackedForest(forest).score(X), -forest.score_samples(X), rtol=1e-9)


def test_calibrated_score_stays_in_unit_interval_even_for_extremes(two_accounts):
    X, groups = two_accounts
    det = IsolationForestDetector(calibration="cdf", random_state=0).fit(X, groups=groups)
    probe = np.vstack([X[:50], np.full((3, 3), 1e9), np.full((3, 3), -1e9), np.zeros((3, 3))])
    scores = det.anomaly_score(probe, groups=["a"] * len(probe))
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    # the extremes rank above every ordinary point
    assert scores[50:56].min() > scores[:50].max()
    # about 1 % of training points exceed the 0.99 calibrated level, as calibration promises
    assert 0.002 < np.mean(det.anomaly_score(X, groups=groups) > 0.99) < 0.03


def test_per_account_normalisation_makes_levels_comparable(two_accounts):
    X, groups = two_accounts
    det = IsolationForestDetector(calibration="cdf", random_state=0).fit(X, groups=groups)
    normal_b = det.anomaly_score([[500.0, 500.0, 500.0]], groups=["b"])[0]
    same_point_as_a = det.anomaly_score([[500.0, 500.0, 500.0]], groups=["a"])[0]
    assert normal_b < 0.9
    assert same_point_as_a > 0.99


def test_rolling_mean_restarts_per_series():
    values = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0])
    new_series = np.array([True, False, False, False, True, False, False])
    got = rolling_mean_by_group(values, new_series, 2)
    np.testing.assert_allclose(got, [1.0, 1.5, 2.5, 3.5, 10.0, 15.0, 25.0])


def test_likelihood_is_quiet_on_normal_rows_and_high_on_a_sustained_change(two_accounts):
    X, groups = two_accounts
    det = IsolationForestDetector(random_state=0).fit(X, groups=groups)
    rng = np.random.default_rng(7)
    normal = rng.normal(10.0, 1.0, size=(200, 3))
    shifted = normal[:40] + np.array([4.0, -4.0, 0.0])  # 4 sigma off in two metrics
    scores = det.anomaly_score(np.vstack([normal, shifted]), groups=["a"] * 240)
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    # a regular account stays quiet: far fewer rows above 0.5 than the CDF's top 1 %
    assert np.mean(scores[:200] >= 0.5) < 0.01
    # a change that lasts is very surprising once the short average has seen it
    assert np.median(scores[210:]) > 0.9


def test_likelihood_of_single_rows_is_not_inflated(two_accounts):
    X, groups = two_accounts
    det = IsolationForestDetector(random_state=0).fit(X, groups=groups)
    rows = np.random.default_rng(3).normal(10.0, 1.0, size=(300, 3))
    # on-demand scoring, one row a call: no short average, yet no more alarms than in a batch
    one_by_one = np.array([det.anomaly_score(r[None, :], groups=["a"])[0] for r in rows])
    assert np.mean(one_by_one >= 0.5) < 0.02
    # a lone 20-sigma row still outranks every ordinary row (one row is weaker evidence than a
    # lasting change; the range check is what pages on a single never-seen level)
    assert det.anomaly_score([[30.0, 30.0, 30.0]], groups=["a"])[0] > one_by_one.max()


def test_likelihood_of_a_row_depends_only_on_earlier_rows(two_accounts):
    X, groups = two_accounts
    det = IsolationForestDetector(short_window=5, random_state=0).fit(X, groups=groups)
    rows = X[:60].copy()
    before = det.anomaly_score(rows, groups=["a"] * 60)
    rows[40:] = 1e6
    after = det.anomaly_score(rows, groups=["a"] * 60)
    np.testing.assert_array_equal(before[:40], after[:40])
    # once the short average is full of the extreme rows, they are far in the tail (Q < 1e-20)
    assert after[44:].min() > 0.8 > before[40:].max()


def test_range_check_scores_a_never_seen_level_high_and_higher_further_out(two_accounts):
    X, groups = two_accounts
    names = ["cpu__value", "cpu__mean_1h", "latency_ms__value"]
    frame = pd.DataFrame(X, columns=names)
    checked = IsolationForestDetector(range_columns=["cpu__value"], random_state=0)
    checked.fit(frame, groups=groups)
    probe = pd.DataFrame(
        [[10.0, 10.0, 10.0], [30.0, 10.0, 10.0], [-900.0, 10.0, 10.0]], columns=names
    )
    scores = checked.anomaly_score(probe, groups=["a", "b", "b"])
    # 10 is typical for account a; 30 lies below everything account b has shown (~300..700):
    # at least as surprising as a tail probability of 1e-10 (score 2/3), and -900 more so
    assert scores[0] < 0.5 and 2 / 3 <= scores[1] < scores[2] < 1.0
    with pytest.raises(ValueError, match="not a feature"):
        IsolationForestDetector(range_columns=["nope"]).fit(frame, groups=groups)


def test_same_seed_same_scores_and_top_metrics_named_after_metrics(two_accounts):
    X, groups = two_accounts
    names = ["cpu__value", "cpu__mean_1h", "latency_ms__value"]
    frame = pd.DataFrame(X, columns=names)
    one = IsolationForestDetector(random_state=3).fit(frame, groups=groups)
    two = IsolationForestDetector(random_state=3).fit(frame, groups=groups)
    np.testing.assert_array_equal(
        one.score_samples(frame, groups), two.score_samples(frame, groups)
    )
    probe = pd.DataFrame([[10.0, 10.0, 40.0]], columns=names)
    assert one.top_features(probe, groups=["a"], k=1) == [["latency_ms"]]


def test_alert_rule_minimum_duration_and_suppression():
    scores = np.array([0.0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1])
    rule = AlertRule(threshold=0.9, min_duration=2, suppression=5)
    flags, onsets = rule.apply(scores, return_onsets=True)
    # episodes reach 2 rows at 2, 6, 9 and 17; those at 6 and 9 follow a short dip, so they
    # continue the incident paged at 2; 17 follows 6 rows without an episode and pages again
    assert np.flatnonzero(onsets).tolist() == [2, 17]
    assert flags[[2, 3, 17]].all() and not flags[[1, 5, 6, 9, 10, 16]].any()
    # re-armed after exactly ``suppression`` rows without an episode (11..16), not one row earlier
    assert AlertRule(0.9, 2, 7).apply(scores, return_onsets=True)[1].sum() == 1


def test_alert_rule_restarts_per_account_and_ignores_nan():
    scores = np.array([np.nan, 1.0, 1.0, 1.0, 1.0])
    accounts = np.array(["a", "a", "a", "b", "b"])
    flags = AlertRule(threshold=0.5, min_duration=3).apply(scores, accounts)
    assert flags.tolist() == [False, False, False, False, False]
    flags = AlertRule(threshold=0.5, min_duration=2).apply(scores, accounts)
    assert flags.tolist() == [False, False, True, False, True]


def test_alert_rule_is_causal():
    rng = np.random.default_rng(0)
    scores = rng.random(300)
    rule = AlertRule(threshold=0.8, min_duration=2, suppression=7)
    base = rule.apply(scores)
    changed = scores.copy()
    changed[200:] = rng.random(100)
    np.testing.assert_array_equal(rule.apply(changed)[:200], base[:200])


def test_baseline_flags_a_level_jump():
    rng = np.random.default_rng(2)
    X = rng.normal(0, 1, size=(500, 2))
    base = RobustZBaseline().fit(X)
    scores = base.anomaly_score([[0.0, 0.0], [0.0, 12.0]])
    assert scores[0] < 0.9 < 0.99 < scores[1] <= 1.0


def test_scoring_an_unfitted_detector_says_so():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        IsolationForestDetector().anomaly_score([[1.0]])


def test_top_features_array_equals_the_validated_path():
    """The serving hot path names the same metrics as the validated method."""
    import numpy as np
    import pandas as pd

    from fleetml.models.anomaly import IsolationForestDetector

    rng = np.random.default_rng(3)
    cols = ["cpu__value", "cpu__mean_1h", "mem__value", "lat__value", "lat__std_1h"]
    X = pd.DataFrame(rng.normal(size=(400, len(cols))), columns=cols)
    groups = np.array(["a", "b"] * 200, dtype=object)
    det = IsolationForestDetector(n_estimators=20, random_state=0).fit(X, groups=groups)
    probe = X.iloc[:7].copy()
    probe.iloc[:, 2] += 9.0  # mem far from normal
    want = det.top_features(probe, groups=groups[:7], k=2)
    got = det.top_features_array(probe.to_numpy(), groups=groups[:7], k=2)
    assert got == want
    assert all(row[0] == "mem" for row in got)
