"""What MLflow registers for ``fleetml-forecast``: :class:`ForecastBundle`.

Bundles are pickled; older ones name ``fleetml.models.forecast.ForecastBundle``, which
:mod:`fleetml.models.forecast` still re-exports, so they load unchanged.
"""

from __future__ import annotations

import pandas as pd

from fleetml.models.forecasting.fleet import (
    SeriesJob,
    account_series,
    fleet_step,
    forecast_job,
    long_forecast_frame,
    recent,
)
from fleetml.models.forecasting.methods import DEFAULT_LEVELS
from fleetml.models.forecasting.series import DEFAULT_MAX_POINTS, parse_horizon


class ForecastBundle:
    """What ``fleetml-forecast`` registers: the method chosen per series, and how to prepare data.

    ``choices`` maps ``"account:<id>:<metric>"`` / ``"group:<name>:<metric>"`` to a choice
    ``{"method", "weights", "interval_scales"}`` (see :meth:`LoadForecaster.summary`);
    ``metric_kinds`` says which metrics are counters. :meth:`predict` forecasts a wide metrics
    frame with those choices (``auto`` for series it has not seen), one row per (ts, level), at
    the frame's own sampling step; each series keeps its newest ``max_points`` points (bundles
    registered before issue 11 hold 400 there, which then also cuts rather than aggregates).
    ``interval_scales`` hold one factor per level; older bundles' single factors still apply.
    """

    def __init__(
        self,
        choices: dict[str, dict],
        *,
        metric_kinds: dict[str, str],
        horizon: str = "24h",
        max_points: int = DEFAULT_MAX_POINTS,
        levels: tuple[int, ...] = DEFAULT_LEVELS,
    ):
        self.choices = dict(choices)
        self.metric_kinds = dict(metric_kinds)
        self.horizon = horizon
        self.max_points = max_points
        self.levels = tuple(levels)

    @staticmethod
    def series_key(scope: str, key: str, metric: str) -> str:
        return f"{scope}:{key}:{metric}"

    def method_for(self, scope: str, key: str, metric: str) -> dict:
        """The stored choice for a series, or ``{"method": "auto"}`` for an unseen one."""
        return self.choices.get(self.series_key(scope, key, metric), {"method": "auto"})

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Forecast every metric of a wide frame per account (sequentially; see run_forecast)."""
        metrics = [c for c in frame.columns if c not in ("ts", "account_id")]
        step = fleet_step(frame)
        horizon = parse_horizon(self.horizon, step)
        results = []
        for metric in metrics:
            kind = self.metric_kinds.get(metric, "gauge")
            for key, series in account_series(frame, metric, kind=kind, step=step).items():
                choice = self.method_for("account", key, metric)
                series, cut = recent(series, self.max_points)
                job = SeriesJob.from_choice(key, metric, series, horizon, choice)
                job.history_cut = cut
                results.append(forecast_job(job))
        return long_forecast_frame(results)
