"""Forecast accuracy: sMAPE, MASE, OWA against Naive2 (M4 rules), interval coverage, Winkler, MSIS.

Point metrics take the actual values and the forecast of one series (1-D arrays of the same length)
and, for scaled metrics, the in-sample history. Formulas are written out in ``docs/forecasting.md``.
This is the one implementation of sMAPE and MASE: the forecaster's method choice
(:mod:`fleetml.models.forecasting.selection`), backtests, the accuracy of served forecasts and the
M4 benchmark all call it. Empty input gives NaN (nothing was measured), never 0.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def _as_array(x) -> np.ndarray:
    return np.asarray(x, dtype="float64").ravel()


def smape(actual, forecast) -> float:
    """Symmetric MAPE in percent: mean of ``200 |y - f| / (|y| + |f|)`` (a 0/0 term counts 0).

    NaN for empty input.
    """
    y, f = _as_array(actual), _as_array(forecast)
    if y.size == 0:
        return math.nan
    denom = np.abs(y) + np.abs(f)
    terms = np.divide(200 * np.abs(y - f), denom, out=np.zeros_like(denom), where=denom > 0)
    return float(terms.mean())


def mase_scale(history, period: int) -> float:
    """In-sample mean absolute seasonal difference ``mean |x_t - x_(t-m)|`` (m=1 if too short)."""
    x = _as_array(history)
    m = int(period) if len(x) > int(period) >= 1 else 1
    diffs = np.abs(x[m:] - x[:-m])
    return float(diffs.mean()) if diffs.size else math.nan


def mase(actual, forecast, history, period: int) -> float:
    """Mean absolute scaled error: mean ``|y - f|`` over :func:`mase_scale` of the history.

    NaN for empty input; with a flat history (scale 0) NaN unless the forecast is exact.
    """
    y = _as_array(actual)
    if y.size == 0:
        return math.nan
    err = float(np.mean(np.abs(y - _as_array(forecast))))
    return scaled_error(err, mase_scale(history, period))


def scaled_error(mean_abs_error: float, scale: float) -> float:
    """A mean absolute error over a MASE scale (NaN for a zero scale unless the error is 0)."""
    if not scale > 0:
        return math.nan if mean_abs_error > 0 else 0.0
    return float(mean_abs_error) / float(scale)


def coverage(actual, lower, upper) -> float:
    """Share of actual values inside ``[lower, upper]`` (0..1)."""
    y = _as_array(actual)
    return float(np.mean((y >= _as_array(lower)) & (y <= _as_array(upper))))


def winkler(actual, lower, upper, level: float) -> float:
    """Mean Winkler (interval) score of a central ``level`` % interval; lower is better.

    Each point scores the width ``U - L`` plus ``(2/a)(L - y)`` below or ``(2/a)(y - U)`` above the
    interval, with ``a = 1 - level/100``.
    """
    y, lo, hi = _as_array(actual), _as_array(lower), _as_array(upper)
    a = 1 - float(level) / 100
    penalty = (2 / a) * (np.maximum(lo - y, 0) + np.maximum(y - hi, 0))
    return float(np.mean(hi - lo + penalty))


def msis(actual, lower, upper, history, period: int, level: float = 95) -> float:
    """Mean scaled interval score (M4): the Winkler score over :func:`mase_scale`."""
    scale = mase_scale(history, period)
    score = winkler(actual, lower, upper, level)
    return score / scale if scale > 0 else math.nan


# --- Naive2 and OWA (M4 rules) ------------------------------------------------------------


def _acf(x: np.ndarray, nlags: int) -> np.ndarray:
    x = x - x.mean()
    denom = float(np.dot(x, x))
    if denom == 0:
        return np.zeros(nlags + 1)
    return np.array([1.0] + [float(np.dot(x[k:], x[:-k])) / denom for k in range(1, nlags + 1)])


def seasonality_test(history, period: int) -> bool:
    """The M4 90 % autocorrelation test for seasonality at lag ``period``.

    Seasonal when ``|r_m| > 1.645 sqrt((1 + 2 sum_{k<m} r_k^2) / n)``; needs ``n >= 3m``.
    """
    x = _as_array(history)
    m = int(period)
    if m < 2 or len(x) < 3 * m:
        return False
    r = _acf(x, m)
    limit = 1.645 * math.sqrt((1 + 2 * float(np.sum(r[1:m] ** 2))) / len(x))
    return bool(abs(r[m]) > limit)


def seasonal_indices(history, period: int) -> np.ndarray:
    """Classical multiplicative decomposition indices (one per position in the cycle, mean 1).

    The trend is the centred moving average of length ``period`` (2x``period`` for even periods);
    the index of a position is the mean of ``x / trend`` there, normalised to average one. The
    returned array is aligned so that element ``i`` belongs to history position ``i mod period``.
    """
    x = _as_array(history)
    m = int(period)
    n = len(x)
    if m % 2 == 0:
        weights = np.r_[0.5, np.ones(m - 1), 0.5] / m
    else:
        weights = np.ones(m) / m
    trend = np.full(n, np.nan)
    half = len(weights) // 2
    trend[half : n - half] = np.convolve(x, weights, mode="valid")
    ratio = x / trend
    positions = np.arange(n) % m
    idx = np.array([np.nanmean(ratio[positions == k]) for k in range(m)])
    return idx / idx.mean()


def naive2(history, horizon: int, period: int) -> np.ndarray:
    """The M4 Naive2 forecast: naive on the seasonally adjusted series, then reseasonalised.

    Adjustment uses :func:`seasonal_indices` when :func:`seasonality_test` finds seasonality;
    otherwise Naive2 is the plain naive forecast.
    """
    x = _as_array(history)
    n = len(x)
    if not seasonality_test(x, period):
        return np.full(horizon, x[-1])
    idx = seasonal_indices(x, period)
    last_adjusted = x[-1] / idx[(n - 1) % period]
    future_pos = (n + np.arange(horizon)) % period
    return last_adjusted * idx[future_pos]


def owa(smape_value: float, mase_value: float, smape_naive2: float, mase_naive2: float) -> float:
    """Overall weighted average: ``0.5 (sMAPE / sMAPE_Naive2 + MASE / MASE_Naive2)``.

    Computed, as in M4, on the means over all series of each metric.
    """
    return 0.5 * (smape_value / smape_naive2 + mase_value / mase_naive2)


def score_forecast(
    actual,
    forecast: pd.DataFrame,
    history,
    period: int,
    *,
    levels=(80, 95),
) -> dict[str, float]:
    """All metrics for one series' forecast frame (``yhat`` and ``yhat_lower_<L>``/``upper``)."""
    y = _as_array(actual)
    out = {
        "smape": smape(y, forecast["yhat"]),
        "mase": mase(y, forecast["yhat"], history, period),
    }
    for level in levels:
        lo, hi = forecast[f"yhat_lower_{level}"], forecast[f"yhat_upper_{level}"]
        if lo is None or hi is None:
            continue
        out[f"coverage_{level}"] = coverage(y, lo, hi)
        out[f"winkler_{level}"] = winkler(y, lo, hi, level)
        out[f"msis_{level}"] = msis(y, lo, hi, history, period, level)
    return out


# --- walk-forward backtest ----------------------------------------------------------------


def backtest_origins(n_obs: int, horizon: int, *, n_origins: int, min_train: int) -> list[int]:
    """Forecast origins (history lengths) for a walk-forward backtest, oldest first.

    The last origin leaves exactly ``horizon`` points to score; earlier ones step back by
    ``horizon``; origins with fewer than ``min_train`` points of history are dropped.
    """
    last = n_obs - horizon
    origins = [last - k * horizon for k in range(n_origins)]
    return sorted(o for o in origins if o >= max(min_train, 2))


def walk_forward(
    series: pd.Series,
    *,
    horizon: int,
    origins: list[int],
    make_forecaster,
    period: int,
) -> pd.DataFrame:
    """Strictly causal walk-forward forecasts of one series.

    For each origin ``o`` a fresh forecaster from ``make_forecaster()`` is fitted on
    ``series.iloc[:o]`` only, and forecasts the next ``horizon`` steps; nothing after the origin
    is read until scoring. Returns one row per (origin, step) with ``origin`` (last time seen),
    ``ts``, ``step``, ``actual``, the forecast columns, ``method`` and ``scale`` (the in-sample
    MASE scale at that origin).
    """
    parts = []
    for origin in origins:
        history = series.iloc[:origin]
        model = make_forecaster().fit(history)
        fc = model.predict(horizon)
        future = series.iloc[origin : origin + horizon]
        n = min(len(future), horizon)
        part = fc.iloc[:n].reset_index(drop=True)
        part.insert(0, "actual", future.to_numpy()[:n])
        part.insert(0, "step", np.arange(1, n + 1))
        part.insert(
            0,
            "ts",
            future.index[:n]
            if isinstance(series.index, pd.DatetimeIndex)
            else np.arange(origin, origin + n),
        )
        part.insert(0, "origin", history.index[-1])
        part["method"] = model.method_
        part["scale"] = mase_scale(history.to_numpy(), period)
        parts.append(part)
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts, ignore_index=True)


def summarize_backtest(frame: pd.DataFrame, *, by=("origin",), levels=(80, 95)) -> dict:
    """Mean sMAPE and MASE over forecasts (one forecast per ``by`` group), and interval coverage.

    ``frame`` is (a concatenation of) :func:`walk_forward` output; add the series key to ``by``
    when it holds several series.
    """
    if frame.empty:
        return {"n_forecasts": 0}
    groups = frame.groupby(list(by), sort=False)
    smapes, mases = [], []
    for _, g in groups:
        smapes.append(smape(g["actual"], g["yhat"]))
        err = float(np.mean(np.abs(g["actual"] - g["yhat"])))
        mases.append(scaled_error(err, float(g["scale"].iloc[0])))
    out = {
        "n_forecasts": len(smapes),
        "smape": float(np.mean(smapes)),
        "mase": float(np.nanmean(mases)) if np.isfinite(mases).any() else math.nan,
    }
    for level in levels:
        lo, hi = f"yhat_lower_{level}", f"yhat_upper_{level}"
        if lo in frame and hi in frame:
            out[f"coverage_{level}"] = coverage(frame["actual"], frame[lo], frame[hi])
            out[f"winkler_{level}"] = winkler(frame["actual"], frame[lo], frame[hi], level)
    return out


def backtest_job(item) -> pd.DataFrame:
    """Walk-forward backtest of one ``(SeriesJob, n_origins)`` pair (picklable, for run_parallel).

    Rows gain the series ``key`` and ``metric``; a series too short for any origin gives an
    empty frame.
    """
    from fleetml.models.forecast import LoadForecaster, infer_step, seasonal_periods_for

    job, n_origins = item
    series = job.series
    periods = seasonal_periods_for(infer_step(series.index), 10**12) if len(series) > 2 else ()
    period = periods[0] if periods else 1
    origins = backtest_origins(
        len(series),
        job.horizon,
        n_origins=n_origins,
        min_train=max(2 * period, 10),
    )
    frame = walk_forward(
        series,
        horizon=job.horizon,
        origins=origins,
        make_forecaster=lambda: LoadForecaster(
            job.method,
            levels=job.levels,
            combo_weights=job.weights,
            interval_scales=job.interval_scales,
        ),
        period=period,
    )
    if not frame.empty:
        frame.insert(0, "metric", job.metric)
        frame.insert(0, "key", job.key)
    return frame


def holdout_job(job) -> dict:
    """Score one series the way training does: fit on all but the last ``job.horizon`` points,
    forecast them and return sMAPE, MASE and interval coverage (``None`` if too short)."""
    from fleetml.models.forecast import LoadForecaster

    series = job.series
    if len(series) < job.horizon + 4:
        return {"key": job.key, "metric": job.metric, "scores": None}
    history, actual = series.iloc[: -job.horizon], series.iloc[-job.horizon :]
    model = LoadForecaster(job.method, levels=job.levels).fit(history)
    fc = model.predict(job.horizon)
    scores = score_forecast(
        actual.to_numpy(), fc, history.to_numpy(), model.period_, levels=job.levels
    )
    scores["method"] = model.method_
    return {"key": job.key, "metric": job.metric, "scores": scores}
