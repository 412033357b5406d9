"""Risk classifier (scikit-learn contract), calibrator, bundle and the risk metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from fleetml.evaluation.risk import (
    expected_calibration_error,
    horizon_metrics,
    lead_times,
    pr_auc,
    recall_at_precision,
    reliability_table,
    threshold_for_precision,
)
from fleetml.models.risk import HorizonModel, ProbabilityCalibrator, RiskClassifier, RiskModel


@pytest.mark.slow
@parametrize_with_checks(
    [RiskClassifier(max_iter=10)],
)
def test_sklearn_contract(estimator, check):
    check(estimator)


def _separable(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    logit = 3 * X[:, 0] - 2 * X[:, 1] - 3
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    X[rng.random(X.shape) < 0.05] = np.nan  # missing values are allowed
    return X, y


def test_classifier_ranks_risk_and_accepts_missing_values():
    X, y = _separable()
    X[:, 3] = np.nan  # a metric never seen: ignored, not an error
    clf = RiskClassifier(max_iter=50).fit(X[:1500], y[:1500])
    risk = clf.risk(X[1500:])
    assert risk.shape == (500,) and ((risk >= 0) & (risk <= 1)).all()
    assert pr_auc(y[1500:], risk) > 2 * y[1500:].mean()


def test_calibrator_makes_inflated_probabilities_honest():
    rng = np.random.default_rng(1)
    true_p = rng.uniform(0, 0.3, 20000)
    y = (rng.random(20000) < true_p).astype(int)
    inflated = np.sqrt(true_p)  # ranks right, probabilities too high
    assert expected_calibration_error(y, inflated) > 0.1
    for method in ("isotonic", "sigmoid"):
        cal = ProbabilityCalibrator(method=method).fit(inflated[:10000], y[:10000])
        fixed = cal.predict(inflated[10000:])
        assert expected_calibration_error(y[10000:], fixed) < 0.03
    const = ProbabilityCalibrator().fit(np.zeros(5), np.zeros(5))
    assert (const.predict([0.9]) == 0).all()
    with pytest.raises(ValueError, match="calibration method"):
        ProbabilityCalibrator(method="magic").fit([0.1, 0.2], [0, 1])


def test_isotonic_calibration_keeps_the_raw_order_inside_its_plateaus():
    # Raw scores that barely rank on the calibration rows: isotonic regression merges most of
    # them into a few plateaus. The calibrated risk must still order rows as the raw score does
    # (ties would throw that order away and lower PR-AUC) while staying a probability.
    rng = np.random.default_rng(2)
    raw = rng.uniform(0, 1, 5000)
    y = (rng.random(5000) < 0.2 + 0.05 * (raw > 0.5)).astype(int)
    cal = ProbabilityCalibrator(method="isotonic").fit(raw, y)
    assert len(np.unique(cal.model_.predict(raw))) < 50  # the step function has plateaus
    new = np.sort(rng.uniform(0, 1, 1000))
    risk = cal.predict(new)
    assert (np.diff(risk) > 0).all()
    assert ((risk >= 0) & (risk <= 1)).all()
    assert np.abs(risk - np.clip(cal.model_.predict(new), 0, 1)).max() < 1e-5


def test_threshold_for_target_precision_and_fallback():
    y = np.array([0, 0, 0, 0, 1, 0, 1, 1, 1, 1])
    p = np.linspace(0.05, 0.95, 10)
    thr, why = threshold_for_precision(y, p, 0.8)
    assert thr == pytest.approx(p[4]) and "target" in why  # 5 of 6 above -> 0.83
    assert recall_at_precision(y, p, 0.8) == 1.0
    thr, why = threshold_for_precision(np.array([1, 0, 1, 0]), np.array([0.1, 0.9, 0.2, 0.8]), 0.8)
    assert "unreachable" in why
    assert threshold_for_precision(np.zeros(4), np.ones(4), 0.8)[0] == 1.0


def test_unreachable_precision_falls_back_to_a_conservative_threshold():
    # A flat plateau (risk 0.06) holds most faults but also half the fleet; F1 would flag it all.
    p = np.r_[np.full(2, 0.9), np.full(100, 0.06), np.full(100, 0.01)]
    y = np.r_[[1, 0], np.r_[np.ones(10), np.zeros(90)], np.zeros(100)]
    thr, why = threshold_for_precision(y, p, 0.8)
    assert thr == pytest.approx(0.9)
    assert "most precise" in why
    assert (p >= thr).sum() == 2


def test_metrics_reliability_and_lead_times():
    y = np.array([0, 1, 0, 1, np.nan])
    p = np.array([0.1, 0.9, 0.2, 0.7, 0.5])
    m = horizon_metrics(y, p, threshold=0.5, target_precision=0.8)
    assert m["rows"] == 4 and m["positives"] == 2 and m["pr_auc"] == 1.0 and m["f1"] == 1.0
    assert m["brier"] == pytest.approx(np.mean([0.01, 0.01, 0.04, 0.09]))
    table = reliability_table([0, 1, 1, 0], [0.05, 0.95, 0.91, 0.15], bins=10)
    assert table["count"].sum() == 4 and table.loc[9, "observed_rate"] == 1.0

    ts = pd.to_datetime(["2026-01-01 10:00", "2026-01-01 10:30", "2026-01-01 11:00"], utc=True)
    alerts = pd.DataFrame({"ts": ts, "account_id": ["a", "a", "b"]})
    faults = pd.DataFrame(
        {
            "ts": pd.to_datetime(
                ["2026-01-01 11:00", "2026-01-01 11:00", "2026-01-01 20:00"], utc=True
            ),
            "account_id": ["a", "b", "a"],
        }
    )
    leads = lead_times(alerts, faults, "6h")
    # a's fault: earliest alert 10:00 -> 1 h; b's alert is at the fault time, not before it;
    # a's second fault at 20:00 sees the 10:00 alert only with a 6 h horizon if within 6 h: no.
    assert leads["lead_time_s"].iloc[0] == 3600 and not leads["caught"].iloc[1]
    assert not leads["caught"].iloc[2]


def test_bundle_predicts_long_format_with_stored_thresholds():
    from fleetml.features import FeatureConfig, build_features, feature_columns

    ts = pd.date_range("2026-01-01", periods=48, freq="1h", tz="UTC").as_unit("ms")
    frame = pd.DataFrame(
        {
            "ts": np.tile(ts, 2),
            "account_id": np.repeat(["a", "b"], 48),
            "cpu_pct": np.r_[np.linspace(10, 90, 48), np.full(48, 20.0)],
        }
    )
    cfg = FeatureConfig(seasonal=False)
    feats = build_features(frame, config=cfg)
    cols = feature_columns(feats)
    X = feats[cols].to_numpy()
    y = (frame["cpu_pct"] > 60).astype(int).to_numpy()
    clf = RiskClassifier(max_iter=20, min_samples_leaf=2).fit(X, y)
    cal = ProbabilityCalibrator(method="sigmoid").fit(clf.risk(X), y)
    model = RiskModel(
        horizons={"6h": HorizonModel("6h", clf, cal, 0.5)}, feature_columns=cols, feature_config=cfg
    )
    out = model.predict(frame)
    assert list(out.columns) == ["ts", "account_id", "horizon", "risk", "at_risk"]
    assert len(out) == len(frame) and set(out["horizon"]) == {"6h"}
    assert (out["at_risk"] == (out["risk"] >= 0.5)).all()
    assert (
        out.loc[out["account_id"] == "a", "risk"].iloc[-1]
        > out.loc[out["account_id"] == "b", "risk"].iloc[-1]
    )
    latest = model.predict_latest(frame)
    assert len(latest) == 2
    np.testing.assert_allclose(
        latest["risk"].to_numpy(), out.groupby("account_id")["risk"].last().to_numpy()
    )
    # A metric missing at scoring time becomes NaN features, not an error.
    assert len(model.predict(frame.drop(columns="cpu_pct"))) == len(frame)


def test_pr_curve_is_thinned_and_matches_flagging_at_each_threshold():
    import numpy as np

    from fleetml.evaluation.risk import pr_curve

    rng = np.random.default_rng(3)
    y = rng.random(5000) < 0.1
    p = np.clip(0.3 * y + rng.random(5000) * 0.7, 0, 1)
    curve = pr_curve(y, p, max_points=50)
    assert 2 <= len(curve["thresholds"]) <= 50
    assert len(curve["precision"]) == len(curve["recall"]) == len(curve["thresholds"])
    points = zip(curve["thresholds"], curve["precision"], curve["recall"], strict=True)
    for t, prec, rec in list(points)[::10]:
        flagged = p >= t
        assert prec == pytest.approx(y[flagged].mean(), abs=1e-4)
        assert rec == pytest.approx(flagged[y].mean(), abs=1e-4)
    assert pr_curve(np.zeros(10, bool), np.linspace(0, 1, 10)) == {
        "precision": [],
        "recall": [],
        "thresholds": [],
    }
