"""Forecast accuracy metrics against values worked out by hand, and the walk-forward's causality."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fleetml.evaluation import forecast as fm
from fleetml.models.forecast import LoadForecaster


def test_smape_hand_computed():
    # terms: 200*1/(3+2)=40, 200*0/(4+4)=0, 0/0 counts 0
    assert fm.smape([3, 4, 0], [2, 4, 0]) == pytest.approx(40 / 3)


def test_mase_uses_seasonal_in_sample_differences():
    history = [1, 2, 3, 2, 4, 5]  # lag-2 diffs: 2, 0, 1, 3 -> scale 1.5
    assert fm.mase_scale(history, 2) == pytest.approx(1.5)
    assert fm.mase([6, 7], [5, 5], history, 2) == pytest.approx(1.5 / 1.5)


def test_coverage_winkler_and_msis():
    actual = [1.0, 5.0, 10.0]
    lower, upper = [0.0, 0.0, 0.0], [2.0, 4.0, 12.0]
    assert fm.coverage(actual, lower, upper) == pytest.approx(2 / 3)
    # a = 0.2: widths 2, 4, 12; the middle point is 1 above -> penalty 2/0.2*1 = 10
    assert fm.winkler(actual, lower, upper, 80) == pytest.approx((2 + 14 + 12) / 3)
    assert fm.msis(actual, lower, upper, [0, 2, 4], 1, 80) == pytest.approx(28 / 3 / 2)


def test_owa_of_naive2_itself_is_one():
    assert fm.owa(10.0, 2.0, 10.0, 2.0) == pytest.approx(1.0)
    assert fm.owa(5.0, 2.0, 10.0, 2.0) == pytest.approx(0.75)


def test_naive2_reseasonalises_a_seasonal_series():
    rng = np.random.default_rng(0)
    season = np.tile([1.0, 2.0, 3.0, 2.0], 20)
    history = 100 * season * (1 + 0.01 * rng.standard_normal(season.size))
    assert fm.seasonality_test(history, 4)
    forecast = fm.naive2(history, 8, 4)
    np.testing.assert_allclose(forecast / forecast[0], np.tile([1.0, 2.0, 3.0, 2.0], 2), rtol=0.05)


def test_naive2_is_plain_naive_without_seasonality():
    history = np.random.default_rng(1).standard_normal(100).cumsum() + 50
    assert not fm.seasonality_test(history, 12)
    np.testing.assert_array_equal(fm.naive2(history, 5, 12), np.full(5, history[-1]))


def _hourly(n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 50 + 10 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 1, n)
    index = pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC")
    return pd.Series(values, index=index)


def test_walk_forward_is_causal():
    """Changing data after an origin never changes that origin's forecast."""
    series = _hourly(24 * 6)
    origins = fm.backtest_origins(len(series), 12, n_origins=3, min_train=48)
    assert origins == [len(series) - 36, len(series) - 24, len(series) - 12]

    def run(s):
        return fm.walk_forward(
            s, horizon=12, origins=origins, make_forecaster=lambda: LoadForecaster("ets"), period=24
        )

    base = run(series)
    tampered = series.copy()
    tampered.iloc[origins[0] :] += 1000.0  # everything after the first origin
    changed = run(tampered)
    first = base["origin"] == base["origin"].iloc[0]
    cols = ["yhat", "yhat_lower_95", "yhat_upper_95"]
    pd.testing.assert_frame_equal(base.loc[first, cols], changed.loc[first, cols])
    assert not np.allclose(base.loc[~first, "yhat"], changed.loc[~first, "yhat"])
    summary = fm.summarize_backtest(base)
    assert summary["n_forecasts"] == 3
    assert summary["coverage_95"] > 0.7
    assert math.isfinite(summary["mase"])


def test_empty_input_measures_nothing_and_the_forecaster_uses_the_same_metrics():
    import math

    from fleetml.evaluation import forecast as fm
    from fleetml.models.forecasting import selection

    assert math.isnan(fm.smape([], [])) and math.isnan(fm.mase([], [], [1.0, 2.0, 3.0], 1))
    assert math.isnan(fm.mase([2.0], [1.0], [5.0, 5.0, 5.0], 1))  # flat history, wrong forecast
    assert fm.mase([5.0], [5.0], [5.0, 5.0, 5.0], 1) == 0.0
    # one implementation: the method choice scores candidates with these very functions
    assert selection.smape is fm.smape and selection.mase is fm.mase
