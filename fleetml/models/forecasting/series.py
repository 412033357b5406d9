"""Turning a stored metric into a regular series fit for forecasting.

Counters become rates (:func:`counter_to_rate`), irregular samples a regular grid
(:func:`to_regular_series`) at the data's own step (:func:`infer_step`) or at a coarser step the
user asked for (:func:`choose_forecast_step` picks one for a point budget, for callers that want
that); :func:`seasonal_periods_for` and :func:`parse_horizon` turn durations into steps.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: Points of history a series keeps by default (the newest; older ones are dropped, never
#: aggregated): a week of 5-minute samples, 84 days of hourly ones.
DEFAULT_MAX_POINTS = 2016
#: Forecast steps tried, finest first, by :func:`choose_forecast_step`.
STEP_LADDER: tuple[pd.Timedelta, ...] = tuple(
    pd.Timedelta(s) for s in ("1min", "5min", "15min", "30min", "1h", "2h", "6h", "1D")
)
DAY = pd.Timedelta("1D")
WEEK = pd.Timedelta("7D")
MINUTE = pd.Timedelta("1min")


def infer_step(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The sampling step of a time index: the median gap between consecutive samples."""
    if len(index) < 2:
        raise ValueError("need at least two timestamps to infer a sampling step")
    gaps = np.diff(index.asi8)
    gaps = gaps[gaps > 0]
    if gaps.size == 0:
        raise ValueError("all timestamps are equal; cannot infer a sampling step")
    unit = np.datetime_data(index.dtype.base if hasattr(index.dtype, "base") else index.dtype)[0]
    return pd.Timedelta(int(np.median(gaps)), unit=unit)


#: Regular sampling steps a measured step snaps to (runtimes push every 10 s, 1 min, 5 min, ...).
_ROUND_STEPS: tuple[pd.Timedelta, ...] = tuple(
    sorted(
        {pd.Timedelta(seconds=n) for n in (1, 2, 5, 10, 15, 20, 30)}
        | {pd.Timedelta(minutes=n) for n in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)}
        | {pd.Timedelta(hours=n) for n in (1, 2, 3, 4, 6, 8, 12)}
        | {pd.Timedelta(days=n) for n in (1, 7)}
    )
)


def regular_step(measured: pd.Timedelta, *, tolerance: float = 0.05) -> pd.Timedelta:
    """A measured sampling step as the regular step it stands for.

    Pushed timestamps jitter (a sample every "minute" arrives 60.004 s apart on average), and a
    step of 60.004 s would put the forecast on a grid that drifts away from the clock and from
    the actuals. The step snaps to the nearest round step within ``tolerance`` (relative), and
    otherwise to whole seconds (at least one).
    """
    measured = pd.Timedelta(measured)
    if measured <= pd.Timedelta(0):
        raise ValueError(f"sampling step {measured} is not positive")
    best = min(_ROUND_STEPS, key=lambda s: abs(s - measured))
    if abs(best - measured) <= tolerance * measured:
        return best
    return max(pd.Timedelta(seconds=round(measured.total_seconds())), pd.Timedelta(seconds=1))


def choose_forecast_step(
    sampling_step: pd.Timedelta, span: pd.Timedelta, *, max_points: int = 400
) -> pd.Timedelta:
    """The finest step, not finer than the sampling step, that keeps the history to ``max_points``.

    Forecasting does not call this by default (it forecasts at the data's own step and cuts old
    history instead); it is for callers that want a point budget met by aggregation. With 400
    points, fourteen days of 1-minute samples (20,160 points) become hourly
    buckets (337 points), a week 30-minute buckets, two days 15-minute buckets; hourly data
    stays hourly.
    """
    sampling_step = pd.Timedelta(sampling_step)
    candidates = [s for s in STEP_LADDER if s >= sampling_step]
    if not candidates or candidates[0] != sampling_step:
        candidates.insert(0, sampling_step)
    for step in candidates:
        if span / step + 1 <= max_points:
            return step
    return candidates[-1]


def counter_to_rate(values: pd.Series, *, per: pd.Timedelta = MINUTE) -> pd.Series:
    """Turn a cumulative counter (indexed by time) into a rate per ``per``, handling resets.

    A drop in the counter is a restart: the increase over that interval is the new value itself
    (the counter restarted from zero). The first sample has no rate and is dropped.
    """
    values = values.dropna().sort_index()
    if len(values) < 2:
        return values.iloc[0:0].astype("float64")
    from fleetml.features.counters import counter_increase

    delta = counter_increase(values.to_numpy(dtype="float64"))
    seconds = np.diff(values.index.asi8) / _ticks_per_second(values.index)
    rate = delta / seconds * per.total_seconds()
    return pd.Series(rate, index=values.index[1:], name=values.name)


def _ticks_per_second(index: pd.DatetimeIndex) -> float:
    unit = np.datetime_data(index.dtype.base if hasattr(index.dtype, "base") else index.dtype)[0]
    return {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[unit]


def to_regular_series(
    values: pd.Series, step: pd.Timedelta, *, max_gap_steps: int | None = None
) -> pd.Series:
    """Average samples into buckets of ``step`` (labelled by their start) and fill short gaps.

    Gaps are filled by linear interpolation in time; the edges by the nearest value.
    """
    values = values.dropna().sort_index()
    regular = values.resample(step).mean()
    if regular.isna().any():
        regular = regular.interpolate(method="time", limit=max_gap_steps).ffill().bfill()
    return regular.astype("float64")


def seasonal_periods_for(step: pd.Timedelta, n_obs: int, *, min_cycles: int = 2) -> tuple[int, ...]:
    """Daily and weekly periods in steps, each kept only when ``min_cycles`` cycles fit in history.

    Hourly data with 14 days gives ``(24, 168)``; 5-minute data with 3 days gives ``(288,)``.
    """
    periods = []
    for season in (DAY, WEEK):
        ratio = season / pd.Timedelta(step)
        if ratio < 2 or abs(ratio - round(ratio)) > 1e-9:
            continue
        period = int(round(ratio))
        if n_obs >= min_cycles * period:
            periods.append(period)
    return tuple(periods)


def parse_horizon(horizon: str | int, step: pd.Timedelta) -> int:
    """A horizon in steps (``48``) or a duration (``48h``, ``2D``, ``90min``), as a step count."""
    if isinstance(horizon, int | np.integer):
        steps = int(horizon)
    else:
        text = str(horizon).strip()
        if text.isdigit():
            steps = int(text)
        else:
            try:
                duration = pd.Timedelta(text)
            except ValueError as exc:
                raise ValueError(
                    f"horizon {horizon!r} is neither a number of steps nor a duration like 48h"
                ) from exc
            steps = math.ceil(duration / pd.Timedelta(step))
    if steps < 1:
        raise ValueError(f"horizon must be at least one step, got {horizon!r}")
    return steps


# --- the individual methods ---------------------------------------------------------------
