"""The anomaly score ranks across its range, alerts page once per episode, everything is causal,
and bundles pickled before the detector/calibrator/rule split still load."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from fleetml.evaluation.pointwise import precision_recall_f1
from fleetml.models.anomaly import (
    AlertRule,
    AnomalyModel,
    IsolationForestDetector,
    ScoreCalibrator,
    score_of_log10_tail,
)


def _series(n: int = 1600, seed: int = 0) -> pd.DataFrame:
    """One account, 5-minute steps, a daily cycle with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    value = 50 + 10 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 1.0, n)
    ts = pd.date_range("2026-01-01", periods=n, freq="5min", tz="UTC")
    return pd.DataFrame({"ts": ts, "account_id": "acc", "value": value})


@pytest.fixture(scope="module")
def detector():
    rng = np.random.default_rng(1)
    X = rng.normal(0.0, 1.0, size=(3000, 4))
    return IsolationForestDetector(n_estimators=40, random_state=0).fit(X, groups=["a"] * 3000)


def test_score_ranks_anomalies_of_growing_size_without_saturating(detector):
    rng = np.random.default_rng(2)
    normal = rng.normal(0.0, 1.0, size=(100, 4))
    rows, sizes = [normal], [4.0, 8.0, 16.0, 32.0, 64.0]
    for size in sizes:  # separated by normal stretches so each short average sees one episode
        rows.append(np.tile([size, -size, size, 0.0], (12, 1)))
        rows.append(rng.normal(0.0, 1.0, size=(40, 4)))
    scores = detector.anomaly_score(np.vstack(rows), groups=["a"] * sum(len(r) for r in rows))
    peaks, pos = [], 100
    for _ in sizes:
        peaks.append(scores[pos : pos + 12].max())
        pos += 52
    # every bigger anomaly scores strictly higher, all below 1: a threshold sweep can separate
    # them (the old log(Q)/log(1e-10) score was 1.0 for all of these)
    assert np.all(np.diff(peaks) > 0), peaks
    assert max(peaks) < 1.0
    assert scores[:100].max() < min(peaks)


def test_tail_score_is_monotone_and_never_reaches_one():
    L = np.array([0.0, 5.0, 10.0, 100.0, 1e4, 1e8])
    s = score_of_log10_tail(L)
    assert s[0] == 0.0 and s[1] == pytest.approx(0.5)
    assert np.all(np.diff(s) > 0) and s[-1] < 1.0


def test_extreme_tail_keeps_its_order(detector):
    cal = detector.calibrator_
    raw = cal.tail_start_ + cal.tail_scale_ * np.array([10.0, 100.0, 1000.0])
    probit = cal.probit(raw)
    assert np.all(np.diff(probit) > 0)  # the old 1 - 1e-6 clip made these equal


def test_alert_rule_pages_once_per_episode():
    # one long episode with short dips below the threshold, then a second episode much later
    scores = np.zeros(200)
    scores[20:60] = 0.9
    scores[[30, 41, 52]] = 0.1  # dips inside the episode
    scores[150:160] = 0.9
    rule = AlertRule(threshold=0.8, min_duration=1, suppression=12)
    flags, onsets = rule.apply(scores, return_onsets=True)
    assert np.flatnonzero(onsets).tolist() == [20, 150]  # first row of each episode: early
    assert flags[20] and flags[150]


def test_model_scores_are_causal_when_future_rows_are_appended():
    from fleetml.training.anomaly import AnomalyTrainConfig, fit_model

    frame = _series()
    from fleetml.features import build_features, feature_columns

    feats = build_features(frame)
    columns = feature_columns(feats)
    config = AnomalyTrainConfig(n_estimators=20, random_state=0)
    model = fit_model(feats.iloc[:1000], columns, config)
    head = frame.iloc[:1300].copy()
    longer = frame.copy()
    longer.loc[1300:, "value"] += 500.0  # a dramatic future
    a = model.predict(head)
    b = model.predict(longer).iloc[:1300]
    np.testing.assert_array_equal(a["anomaly_score"].to_numpy(), b["anomaly_score"].to_numpy())
    np.testing.assert_array_equal(a["is_anomaly"].to_numpy(), b["is_anomaly"].to_numpy())
    assert b["anomaly_score"].iloc[-1] < model.predict(longer)["anomaly_score"].iloc[1310]


def test_bundle_pickled_before_the_split_loads_and_scores(detector):
    # Rebuild the pre-split layout: calibrator state on the detector, no ``calibrator_``.
    old = IsolationForestDetector(n_estimators=20, scorers=("forest",), random_state=0)
    X = np.random.default_rng(4).normal(size=(500, 3))
    old.fit(X, groups=["a"] * 500)
    cal = old.calibrator_
    state = dict(old.__dict__)
    del state["calibrator_"], state["scorers"]
    state.update(
        calibration_probs_=cal.probs_,
        calibration_scores_=cal.scores_,
        tail_start_=cal.tail_start_,
        tail_scale_=cal.tail_scale_,
        likelihood_mean_=cal.mean_,
        likelihood_std_=cal.std_,
        likelihood_row_std_=cal.row_std_,
        range_low_=cal.range_low_,
        range_high_=cal.range_high_,
    )
    legacy = IsolationForestDetector.__new__(IsolationForestDetector)
    legacy.__dict__.update(state)
    bundle = AnomalyModel(detector=legacy, rule=AlertRule(0.5, 2, 12), feature_columns=["x"])
    loaded = pickle.loads(pickle.dumps(bundle))
    assert isinstance(loaded.detector.calibrator_, ScoreCalibrator)
    np.testing.assert_allclose(
        loaded.detector.anomaly_score(X[:50], groups=["a"] * 50),
        old.anomaly_score(X[:50], groups=["a"] * 50),
    )


def test_one_precision_recall_f1_for_empty_and_normal_input():
    assert precision_recall_f1(3, 4, 3, 6) == pytest.approx((0.75, 0.5, 0.6))
    p, r, f1 = precision_recall_f1(0, 0, 0, 5)  # no alerts, windows to find
    assert np.isnan(p) and r == 0.0 and f1 == 0.0
    p, r, f1 = precision_recall_f1(0, 0, 0, 0)  # nothing at all: undefined
    assert np.isnan(p) and np.isnan(r) and np.isnan(f1)
