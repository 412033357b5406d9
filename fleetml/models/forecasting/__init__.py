"""Load forecasting, in the order data flows through it.

- :mod:`~fleetml.models.forecasting.series`: stored metric -> regular series (rates, step,
  periods, horizon in steps);
- :mod:`~fleetml.models.forecasting.methods`: the statsmodels-backed methods and their
  combination;
- :mod:`~fleetml.models.forecasting.intervals`: conformal interval calibration;
- :mod:`~fleetml.models.forecasting.selection`: :class:`LoadForecaster`, which chooses, weights
  and calibrates methods on rolling validation origins;
- :mod:`~fleetml.models.forecasting.global_gbm`: one gradient-boosting model across a run's
  series, a member of each series' combination;
- :mod:`~fleetml.models.forecasting.fleet`: many series (jobs, the forecast step, the long table);
- :mod:`~fleetml.models.forecasting.bundle`: :class:`ForecastBundle`, what MLflow registers.
"""

from fleetml.models.forecasting.bundle import ForecastBundle
from fleetml.models.forecasting.fleet import (
    SeriesJob,
    StepChoice,
    account_series,
    add_global_member,
    fleet_step,
    forecast_job,
    forecast_step,
    group_series,
    long_forecast_frame,
    recent,
    validation_horizon,
)
from fleetml.models.forecasting.intervals import (
    MAX_INTERVAL_SCALE,
    MIN_INTERVAL_SCALE,
    conformal_factor,
    conformal_scales,
    nonconformity,
)
from fleetml.models.forecasting.methods import CANDIDATES, DEFAULT_LEVELS, METHODS
from fleetml.models.forecasting.selection import (
    DEFAULT_LOG_METHODS,
    LoadForecaster,
    find_peaks,
)
from fleetml.models.forecasting.series import (
    DAY,
    DEFAULT_MAX_POINTS,
    MINUTE,
    STEP_LADDER,
    WEEK,
    choose_forecast_step,
    counter_to_rate,
    infer_step,
    parse_horizon,
    seasonal_periods_for,
    to_regular_series,
)

__all__ = [
    "CANDIDATES",
    "DAY",
    "DEFAULT_LEVELS",
    "DEFAULT_LOG_METHODS",
    "DEFAULT_MAX_POINTS",
    "MAX_INTERVAL_SCALE",
    "METHODS",
    "MINUTE",
    "MIN_INTERVAL_SCALE",
    "STEP_LADDER",
    "WEEK",
    "ForecastBundle",
    "LoadForecaster",
    "SeriesJob",
    "StepChoice",
    "account_series",
    "add_global_member",
    "choose_forecast_step",
    "conformal_factor",
    "conformal_scales",
    "counter_to_rate",
    "find_peaks",
    "fleet_step",
    "forecast_job",
    "forecast_step",
    "group_series",
    "infer_step",
    "long_forecast_frame",
    "nonconformity",
    "parse_horizon",
    "recent",
    "seasonal_periods_for",
    "to_regular_series",
    "validation_horizon",
]
