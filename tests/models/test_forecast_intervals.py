"""Rolling-origin validation and split-conformal intervals of LoadForecaster."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fleetml.models.forecast import (
    MAX_INTERVAL_SCALE,
    LoadForecaster,
    conformal_factor,
    nonconformity,
)


def _series(n: int, seed: int = 0) -> pd.Series:
    rng = np.random.default_rng(seed)
    values = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / 24) + rng.normal(0, 1, n)
    return pd.Series(values, index=pd.date_range("2026-01-05", periods=n, freq="h", tz="UTC"))


def test_conformal_factor_is_the_finite_sample_quantile():
    scores = np.arange(1, 20) / 10  # 0.1 .. 1.9, n = 19
    # ceil((19 + 1) * 0.8) = 16th smallest
    assert conformal_factor(scores, 80) == pytest.approx(1.6)
    assert conformal_factor([], 95) == 1.0
    assert conformal_factor([np.inf], 95) == MAX_INTERVAL_SCALE


def test_nonconformity_measures_errors_in_units_of_the_half_width_on_their_side():
    forecast = {
        "yhat": np.array([10.0, 10.0, 10.0]),
        "yhat_lower_80": np.array([8.0, 8.0, 8.0]),
        "yhat_upper_80": np.array([14.0, 14.0, 14.0]),
    }
    scores = nonconformity([9.0, 12.0, 10.0], forecast, 80)
    np.testing.assert_allclose(scores, [0.5, 0.5, 0.0])


def test_auto_scores_candidates_on_several_origins_and_calibrates_each_level():
    y = _series(24 * 10)
    model = LoadForecaster(validation_horizon=24, n_origins=3).fit(y)
    assert model.validation_origins_ == 3
    scored = [v for v in model.validation_scores_.values() if "error" not in v]
    assert scored and all(v["origins"] == 3 for v in scored)
    scale = model.interval_scales_[model.method_]
    assert set(scale) == {80, 95} and all(0 < f <= MAX_INTERVAL_SCALE for f in scale.values())
    # one origin when the history has room for only one window after two daily cycles
    short = LoadForecaster(validation_horizon=24, n_origins=3).fit(_series(24 * 3 + 2))
    assert short.validation_origins_ == 1


def test_validation_never_reads_past_the_history_it_was_given():
    y = _series(24 * 10, seed=3)
    a = LoadForecaster(validation_horizon=24).fit(y.iloc[:-24])
    changed = y.copy()
    changed.iloc[-24:] += 1000.0  # what comes after the fitted history cannot matter
    b = LoadForecaster(validation_horizon=24).fit(changed.iloc[:-24])
    assert a.summary()["validation"] == b.summary()["validation"]


def test_stored_per_level_scales_replay_through_json_and_old_float_scales_still_work():
    y = _series(24 * 10, seed=1)
    model = LoadForecaster(validation_horizon=24).fit(y)
    summary = json.loads(json.dumps(model.summary()))  # what MLflow stores (string keys)
    method = summary["method"]
    replay = LoadForecaster(
        "combo" if method == "combo" else method,
        combo_weights=summary["weights"] if method == "combo" else None,
        interval_scales=summary["interval_scales"],
        member_params=summary["member_params"],
    ).fit(y)
    np.testing.assert_allclose(
        replay.predict(12).to_numpy(), model.predict(12).to_numpy(), rtol=1e-4
    )
    # (rtol: the summary rounds weights to 4 decimals; re-estimated ETS parameters were 0.3 % off)
    # a bundle written before per-level scales held one factor per method
    old = LoadForecaster("snaive", interval_scales={"snaive": 2.0}, log_transform=False)
    old = old.fit(y).predict(6)
    base = LoadForecaster("snaive", log_transform=False).fit(y).predict(6)
    np.testing.assert_allclose(
        old["yhat_upper_95"] - old["yhat"], 2.0 * (base["yhat_upper_95"] - base["yhat"])
    )


def test_a_bundle_pickled_under_the_old_module_path_still_loads(tmp_path):
    import io

    import joblib

    from fleetml.models.forecast import ForecastBundle

    bundle = ForecastBundle(
        {"account:m1:load": {"method": "ets", "weights": {"ets": 1.0}, "interval_scales": {}}},
        metric_kinds={"load": "gauge"},
        max_points=400,
    )
    buf = io.BytesIO()
    joblib.dump(bundle, buf, protocol=2)
    old = buf.getvalue().replace(b"fleetml.models.forecasting.bundle", b"fleetml.models.forecast")
    assert old != buf.getvalue()  # the pickle now names the module path used before the split
    path = tmp_path / "bundle.joblib"
    path.write_bytes(old)
    loaded = joblib.load(path)
    assert type(loaded) is ForecastBundle
    assert loaded.method_for("account", "m1", "load")["method"] == "ets"
