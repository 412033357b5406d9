"""The methods computed in numpy give the numbers statsmodels gives (Theta's forecast, ETS's
forecast mean and variance), and the refit options of the estimator."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from fleetml.models.forecast import LoadForecaster
from fleetml.models.forecasting.methods import _fit_ets, _fit_method


def daily(n: int, *, seed: int = 0, level: float = 50.0, trend: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    e = np.zeros(n)
    for i in range(1, n):
        e[i] = 0.6 * e[i - 1] + rng.normal(0, 1.5)
    return level + trend * t + 10 * np.sin(2 * np.pi * t / 24) + e


@pytest.mark.parametrize(
    ("values", "method"),
    [
        (daily(24 * 20), "multiplicative"),
        (daily(24 * 20, level=0.0, trend=0.05), "additive"),  # crosses zero
        (daily(24 * 20, level=80.0, trend=-0.1, seed=3), "multiplicative"),
    ],
)
def test_theta_forecast_is_statsmodels_theta(values, method):
    from statsmodels.tsa.forecasting.theta import ThetaModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ThetaModel(pd.Series(values), period=24, method=method).fit(use_mle=False)
        expected = np.asarray(expected.forecast(48))
    got = _fit_method("theta", values, period=24).point(48)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * np.abs(values).mean())


@pytest.mark.parametrize("seasonal_period", [24, None])
def test_ets_forecast_mean_and_variance_are_statsmodels_exact_ones(seasonal_period):
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    z = np.log(daily(24 * 14, trend=0.02))
    ours = _fit_ets(z, seasonal_period=seasonal_period)
    model = ETSModel(
        pd.Series(z),
        error="add",
        trend="add",
        damped_trend=True,
        seasonal="add" if seasonal_period else None,
        seasonal_periods=seasonal_period,
        initialization_method="heuristic",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = model.smooth(ours.params).get_prediction(start=len(z), end=len(z) + 47)
    mean, var = ours.forecast(48)
    np.testing.assert_allclose(mean, np.asarray(pred.predicted_mean), rtol=1e-10)
    np.testing.assert_allclose(var, np.asarray(pred.forecast_variance), rtol=1e-8)


def test_refit_filter_keeps_the_parameters_estimated_at_the_oldest_origin():
    y = pd.Series(
        daily(24 * 14, trend=0.02),
        index=pd.date_range("2026-01-05", periods=24 * 14, freq="h", tz="UTC"),
    )
    kwargs = dict(candidates=("snaive", "ets"), min_weight=0.0, validation_horizon=24)
    reestimated = LoadForecaster(refit="estimate", **kwargs).fit(y)
    filtered = LoadForecaster(refit="filter", **kwargs).fit(y)
    first_origin = _fit_ets(np.log(y.to_numpy()[: 24 * 14 - 72]), seasonal_period=24)
    np.testing.assert_allclose(filtered.results_["ets"].params, first_origin.params)
    assert not np.allclose(reestimated.results_["ets"].params, first_origin.params)
    assert len(filtered.predict(48)) == 48
    with pytest.raises(ValueError, match="refit"):
        LoadForecaster(refit="sometimes").fit(y)


def test_mstl_with_stl_jumps_forecasts_what_the_full_smoother_does(monkeypatch):
    """The trend and low-pass smoothers evaluated every few points (STL's jumps) leave a
    15-minute series' MSTL forecast where evaluating them at every point puts it."""
    from fleetml.models.forecasting import methods

    rng = np.random.default_rng(4)
    t = np.arange(96 * 14)
    values = (
        100 + 30 * np.sin(2 * np.pi * t / 96) + 10 * np.sin(2 * np.pi * t / 672)
        + rng.normal(0, 3, len(t))
    )  # fmt: skip
    assert methods._stl_jump((96, 672)) == 14
    fast = _fit_method("mstl_ets", values, period=96, periods=(96, 672), log=True).point(96)
    monkeypatch.setattr(methods, "_stl_jump", lambda periods: 1)
    full = _fit_method("mstl_ets", values, period=96, periods=(96, 672), log=True).point(96)
    np.testing.assert_allclose(fast, full, rtol=1e-3)
