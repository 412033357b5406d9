"""Load forecasting: a scikit-learn-style estimator around statsmodels' forecasting models.

:class:`LoadForecaster` forecasts one regular series (one metric of one account, or a group's sum).
Its candidate methods are

``snaive``
    seasonal naive (the daily cycle repeated); also the fallback when history is short,
``ets``
    statsmodels ``ETSModel`` with additive error, damped additive trend and the daily season,
``mstl_ets``
    statsmodels ``MSTL`` (daily and, with two weeks of history, weekly seasons), the seasonally
    adjusted series forecast by a damped-trend ``ETSModel`` and the seasons repeated,
``theta``
    statsmodels ``ThetaModel`` (the M4 Theta method, deseasonalised when a test finds a season).

With ``method="auto"`` each candidate is scored on a validation window at the end of the
history; candidates are weighted by that score and the survivors refitted and combined
(``combo``), or used alone when one dominates. The fitted statsmodels results are kept in
``results_``. Prediction intervals come from the models' own error variance, rescaled by the
error ratio measured on the validation window (see ``docs/forecasting.md``).

The helpers at the top turn a stored metric into a series fit for forecasting: counters into
rates (:func:`counter_to_rate`), irregular high-frequency samples into a regular, coarser grid
(:func:`choose_forecast_step`, :func:`to_regular_series`); those at the bottom run many series
(:class:`SeriesJob`, :func:`forecast_job`) and hold what MLflow registers (:class:`ForecastBundle`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

METHODS: tuple[str, ...] = ("snaive", "ets", "mstl_ets", "theta", "combo")
#: Methods fitted and weighted by ``method="auto"``.
CANDIDATES: tuple[str, ...] = ("snaive", "ets", "mstl_ets", "theta")
DEFAULT_LEVELS: tuple[int, ...] = (80, 95)
#: Bounds of the validation-measured interval width correction.
MIN_INTERVAL_SCALE, MAX_INTERVAL_SCALE = 0.5, 5.0

#: History length (points) above which a series is aggregated to a coarser forecast step.
DEFAULT_MAX_POINTS = 400
#: Forecast steps tried, finest first, when a series is aggregated to fewer points.
STEP_LADDER: tuple[pd.Timedelta, ...] = tuple(
    pd.Timedelta(s) for s in ("1min", "5min", "15min", "30min", "1h", "2h", "6h", "1D")
)
DAY = pd.Timedelta("1D")
WEEK = pd.Timedelta("7D")


# --- series preparation -------------------------------------------------------------------


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


def choose_forecast_step(
    sampling_step: pd.Timedelta, span: pd.Timedelta, *, max_points: int = DEFAULT_MAX_POINTS
) -> pd.Timedelta:
    """The finest step, not finer than the sampling step, that keeps the history to ``max_points``.

    With the default 400 points, fourteen days of 1-minute samples (20,160 points) become hourly
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


MINUTE = pd.Timedelta("1min")


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


@dataclass
class _Fitted:
    """One fitted method. It models ``log(y)`` when ``log`` is set and reports on y's scale.

    ``scale`` widens the interval (the validation-measured error ratio, at least one).
    """

    name: str
    y: np.ndarray
    period: int
    periods: tuple[int, ...] = ()
    log: bool = False
    scale: float = 1.0
    results: object = None
    extra: dict = field(default_factory=dict)

    @property
    def z(self) -> np.ndarray:
        return np.log(self.y) if self.log else self.y

    def forecast_z(self, horizon: int) -> np.ndarray:
        raise NotImplementedError

    def std_z(self, horizon: int) -> np.ndarray:
        """Standard deviation of the 1..horizon step forecast errors (normal intervals)."""
        raise NotImplementedError

    def back(self, z: np.ndarray) -> np.ndarray:
        return np.exp(np.minimum(z, 700.0)) if self.log else np.asarray(z, dtype="float64")

    def point(self, horizon: int) -> np.ndarray:
        return self.back(self.forecast_z(horizon))

    def predict(self, horizon: int, levels) -> dict[str, np.ndarray]:
        mean = self.forecast_z(horizon)
        sd = self.std_z(horizon) * self.scale
        out = {"yhat": self.back(mean)}
        for level in levels:
            q = stats.norm.ppf(0.5 + level / 200)
            out[f"yhat_lower_{level}"] = self.back(mean - q * sd)
            out[f"yhat_upper_{level}"] = self.back(mean + q * sd)
        return out

    def error_ratio(self, actual: np.ndarray) -> float:
        """RMS of standardised errors on ``actual`` (the values right after the fitted history):
        one when the model's stated uncertainty matches its errors."""
        horizon = len(actual)
        with np.errstate(all="ignore"):
            actual_z = np.log(actual) if self.log else np.asarray(actual, dtype="float64")
            errors = actual_z - self.forecast_z(horizon)
            sd = self.std_z(horizon)
        ok = (sd > 0) & np.isfinite(errors)
        if not ok.any():
            return 1.0
        ratio = float(np.sqrt(np.mean((errors[ok] / sd[ok]) ** 2)))
        return ratio if math.isfinite(ratio) else 1.0


class _SeasonalNaive(_Fitted):
    def _fit(self):
        z = self.z
        m = self.period if self.period >= 1 and len(z) >= self.period else 1
        self.extra["m"] = m
        resid = z[m:] - z[:-m] if len(z) > m else np.zeros(1)
        self.extra["sigma"] = float(np.sqrt(np.mean(resid**2))) if resid.size else 0.0
        self.extra["last"] = z[-m:].copy()
        return self

    def forecast_z(self, horizon):
        return np.resize(self.extra["last"], horizon).astype("float64")

    def std_z(self, horizon):
        cycles = np.arange(horizon) // self.extra["m"] + 1
        return self.extra["sigma"] * np.sqrt(cycles)


def _fit_ets(z: np.ndarray, *, seasonal_period: int | None, trend: bool = True):
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    seasonal = "add" if seasonal_period and seasonal_period >= 2 else None
    series = pd.Series(z)  # statsmodels 0.15 get_prediction needs an index
    kwargs = dict(
        error="add",
        trend="add" if trend else None,
        damped_trend=trend,
        seasonal=seasonal,
        seasonal_periods=seasonal_period if seasonal else None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = ETSModel(series, initialization_method="heuristic", **kwargs)
        except ValueError:  # too short for the heuristic start
            model = ETSModel(series, initialization_method="estimated", **kwargs)
        return model.fit(disp=False, maxiter=200)


def _ets_prediction(fitted: _Fitted, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of an ETS forecast, computed once per horizon.

    Each statsmodels ETS forecast runs a simulation pass; the validation, the interval and the
    combination all ask for the same horizon, so the answer is cached on the fitted method.
    """
    cache = fitted.extra.setdefault("prediction", {})
    if horizon not in cache:
        n_obs = len(fitted.y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = fitted.results.get_prediction(start=n_obs, end=n_obs + horizon - 1)
            mean = np.asarray(pred.predicted_mean, dtype="float64")
            var = np.asarray(pred.forecast_variance, dtype="float64")
        cache[horizon] = (mean, np.sqrt(np.maximum(var, 0.0)))
    return cache[horizon]


class _ETS(_Fitted):
    def _fit(self):
        self.results = _fit_ets(self.z, seasonal_period=self.period)
        return self

    def forecast_z(self, horizon):
        return _ets_prediction(self, horizon)[0]

    def std_z(self, horizon):
        return _ets_prediction(self, horizon)[1]


class _MSTLETS(_Fitted):
    def _fit(self):
        from statsmodels.tsa.seasonal import MSTL

        z = self.z
        # MSTL silently drops a season with fewer than two cycles of data: drop it here too.
        periods = tuple(p for p in (self.periods or (self.period,)) if len(z) > 2 * p)
        periods = periods or (self.period,)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decomposition = MSTL(z, periods=periods if len(periods) > 1 else periods[0]).fit()
        seasonal = np.asarray(decomposition.seasonal, dtype="float64").reshape(len(z), -1)
        self.periods = periods
        self.extra["seasonal"] = seasonal
        self.extra["decomposition"] = decomposition
        self.results = _fit_ets(z - seasonal.sum(axis=1), seasonal_period=None)
        return self

    def forecast_z(self, horizon):
        seasonal = self.extra["seasonal"]
        future = np.zeros(horizon)
        for k, p in enumerate(self.periods):
            future += np.resize(seasonal[-p:, k], horizon)
        return _ets_prediction(self, horizon)[0] + future

    def std_z(self, horizon):
        return _ets_prediction(self, horizon)[1]


class _Theta(_Fitted):
    def _fit(self):
        from statsmodels.tsa.forecasting.theta import ThetaModel

        z = self.z
        period = self.period if self.period >= 2 and len(z) >= 2 * self.period else 1
        # ThetaModel's multiplicative deseasonalising needs positive data.
        multiplicative = bool(np.all(z > 0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ThetaModel(
                pd.Series(z),
                period=period,
                deseasonalize=period > 1,
                method="multiplicative" if multiplicative else "additive",
            )
            self.results = model.fit(use_mle=False)
        self._fit_error_scale(z, period, multiplicative)
        return self

    def _fit_error_scale(self, z, period, multiplicative):
        """One-step error scale of the SES inside Theta, on the seasonally adjusted series.

        statsmodels' ``sigma2`` fits an ARIMA to the *unadjusted* series (slow, and far too wide
        for seasonal data), so the SES errors are computed here instead: relative errors when
        the season is multiplicative, absolute ones otherwise.
        """
        from scipy.signal import lfilter
        from statsmodels.tsa.seasonal import seasonal_decompose

        adjusted = z
        if period > 1:
            kind = "multiplicative" if multiplicative else "additive"
            seasonal = np.asarray(seasonal_decompose(z, model=kind, period=period).seasonal)
            adjusted = z / seasonal if multiplicative else z - seasonal
        alpha = float(self.results.params["alpha"])
        level, _ = lfilter([alpha], [1.0, alpha - 1.0], adjusted, zi=[(1 - alpha) * adjusted[0]])
        errors = adjusted[1:] - level[:-1]
        if multiplicative:
            errors = errors / level[:-1]
        self.extra["alpha"] = alpha
        self.extra["relative"] = multiplicative
        self.extra["sigma"] = float(np.sqrt(np.mean(errors**2))) if errors.size else 0.0

    def forecast_z(self, horizon):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(self.results.forecast(horizon), dtype="float64")

    def std_z(self, horizon):
        # statsmodels' Theta interval variance: sigma^2 (1 + (h-1)(1 + (alpha-1)^2)).
        alpha = self.extra["alpha"]
        sd = self.extra["sigma"] * np.sqrt(1 + np.arange(horizon) * (1 + (alpha - 1) ** 2))
        if self.extra["relative"]:
            sd = sd * np.abs(self.forecast_z(horizon))
        return sd


class _Combo(_Fitted):
    """Weighted mean of members' forecasts; the interval half-widths are the weighted mean of the
    members' half-widths around the combined forecast, times the combination's own ``scale``."""

    def _fit(self):
        return self  # members are fitted by the caller

    @property
    def members(self) -> list[tuple[float, _Fitted]]:
        return self.extra["members"]

    def point(self, horizon):
        return np.sum([w * m.point(horizon) for w, m in self.members], axis=0)

    def predict(self, horizon, levels):
        parts = [(w, m.predict(horizon, levels)) for w, m in self.members]
        yhat = np.sum([w * p["yhat"] for w, p in parts], axis=0)
        out = {"yhat": yhat}
        for level in levels:
            below = np.sum([w * (p["yhat"] - p[f"yhat_lower_{level}"]) for w, p in parts], axis=0)
            above = np.sum([w * (p[f"yhat_upper_{level}"] - p["yhat"]) for w, p in parts], axis=0)
            lower = yhat - self.scale * below
            # a positive series (modelled in logs) keeps a non-negative lower bound
            out[f"yhat_lower_{level}"] = np.maximum(lower, 0.0) if self.log else lower
            out[f"yhat_upper_{level}"] = yhat + self.scale * above
        return out

    def error_ratio(self, actual):
        scale, self.scale = self.scale, 1.0
        try:
            one_sd = self.predict(len(actual), (68.27,))
        finally:
            self.scale = scale
        sd = (one_sd["yhat_upper_68.27"] - one_sd["yhat_lower_68.27"]) / 2
        errors = np.asarray(actual, dtype="float64") - one_sd["yhat"]
        ok = (sd > 0) & np.isfinite(errors)
        if not ok.any():
            return 1.0
        ratio = float(np.sqrt(np.mean((errors[ok] / sd[ok]) ** 2)))
        return ratio if math.isfinite(ratio) else 1.0


_METHOD_CLASSES = {"snaive": _SeasonalNaive, "ets": _ETS, "mstl_ets": _MSTLETS, "theta": _Theta}


def _fit_method(name: str, y, *, period: int, periods=(), log: bool = False) -> _Fitted:
    # Theta deseasonalises multiplicatively itself; on log data it does much worse (M4 hourly).
    log = log and name != "theta"
    cls = _METHOD_CLASSES[name]
    fitted = cls(
        name=name,
        y=np.asarray(y, dtype="float64"),
        period=period,
        periods=tuple(periods or ()),
        log=log,
    )
    return fitted._fit()


def _fit_combo(weights: dict[str, float], y, *, period, periods, log, scales) -> _Fitted:
    members = []
    for name, w in weights.items():
        member = _fit_method(name, y, period=period, periods=periods, log=log)
        member.scale = float(scales.get(name, 1.0))
        members.append((float(w), member))
    if len(members) == 1:
        return members[0][1]
    combo = _Combo(
        name="combo",
        y=np.asarray(y, dtype="float64"),
        period=period,
        log=log,
        scale=float(scales.get("combo", 1.0)),
    )
    combo.extra["members"] = members
    combo.results = {m.name: m.results for _, m in members}
    return combo


# --- scoring used for the choice ----------------------------------------------------------


def _smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    denom = np.abs(actual) + np.abs(forecast)
    ratio = np.divide(
        2 * np.abs(actual - forecast), denom, out=np.zeros_like(denom), where=denom > 0
    )
    return float(100 * ratio.mean())


def _mase_scale(history: np.ndarray, period: int) -> float:
    m = period if len(history) > period else 1
    diffs = np.abs(history[m:] - history[:-m])
    return float(diffs.mean()) if diffs.size else 0.0


# --- the estimator ------------------------------------------------------------------------


class LoadForecaster(BaseEstimator):
    """Forecast one load series; with ``method="auto"`` the method is chosen by validation.

    Parameters
    ----------
    method : {"auto", "snaive", "ets", "mstl_ets", "theta", "combo"}, default="auto"
        ``"auto"`` fits every candidate on the history minus the validation window and scores
        it there (mean of sMAPE and MASE, each relative to seasonal naive). Candidates are
        weighted by the inverse square of that score; those under ``min_weight`` are dropped and
        the rest refitted on the whole history. One survivor is used alone, several are
        combined (``method_ == "combo"``). A named method skips validation; ``"combo"`` then
        uses ``combo_weights`` (equal weights of ``candidates`` when ``None``).
    candidates : tuple of str, default=("snaive", "ets", "mstl_ets", "theta")
        Methods considered by ``"auto"`` and combined by ``"combo"``.
    combo_weights : dict or None, default=None
        Method -> weight for ``method="combo"`` (what a trained champion supplies).
    interval_scales : dict or None, default=None
        Method -> interval widening factor, for a named method (from a trained champion).
    seasonal_periods : tuple of int or None, default=None
        Seasonal periods in steps, shortest first. ``None`` derives the daily and weekly periods
        from the series' time index.
    validation_horizon : int or None, default=None
        Length of the validation window; ``None`` means one daily period (at least 12 steps).
    levels : tuple of int, default=(80, 95)
        Central prediction interval levels in percent.
    log_transform : {"auto", True, False}, default="auto"
        Model ``log(y)`` (except Theta, which deseasonalises multiplicatively itself);
        ``"auto"`` does so when every value is positive.
    weight_power : float, default=2.0
        Exponent of the inverse validation score in the combination weights.
    min_weight : float, default=0.05
        Candidates with a smaller weight are left out of the final model.
    calibrate_intervals : bool, default=True
        With ``"auto"``, rescale each method's interval width by the ratio of its validation
        errors to its stated error scale (clipped to [0.5, 5]).
    min_cycles : int, default=2
        Full seasonal cycles needed before a model uses that season; shorter history falls back
        to seasonal naive (or naive when not even one cycle is there).
    """

    def __init__(
        self,
        method: str = "auto",
        *,
        candidates: tuple[str, ...] = CANDIDATES,
        combo_weights: dict | None = None,
        interval_scales: dict | None = None,
        seasonal_periods: tuple[int, ...] | None = None,
        validation_horizon: int | None = None,
        levels: tuple[int, ...] = DEFAULT_LEVELS,
        log_transform: str | bool = "auto",
        weight_power: float = 2.0,
        min_weight: float = 0.05,
        calibrate_intervals: bool = True,
        min_cycles: int = 2,
    ):
        self.method = method
        self.candidates = candidates
        self.combo_weights = combo_weights
        self.interval_scales = interval_scales
        self.seasonal_periods = seasonal_periods
        self.validation_horizon = validation_horizon
        self.levels = levels
        self.log_transform = log_transform
        self.weight_power = weight_power
        self.min_weight = min_weight
        self.calibrate_intervals = calibrate_intervals
        self.min_cycles = min_cycles

    # -- fitting --------------------------------------------------------------------------

    def fit(self, y, X=None):
        """Fit on a regular series ``y`` (a pandas Series with a DatetimeIndex, or an array).

        Parameters
        ----------
        y : pandas.Series or array-like of shape (n_samples,)
            Regularly spaced values, oldest first, without missing values.
        X : ignored
            Present for scikit-learn compatibility.

        Returns
        -------
        self : LoadForecaster
        """
        self._check_params()
        values, index = self._validate_series(y)
        # Multi-threaded BLAS on these small problems only adds contention (3-10x slower on a
        # busy machine); parallelism comes from running series side by side.
        with threadpool_limits(limits=1, user_api="blas"):
            return self._fit(values, index)

    def _fit(self, values, index):
        self.n_obs_ = len(values)
        self.step_ = None
        self.last_ts_ = None
        if index is not None and len(index) >= 2:
            self.step_ = infer_step(index)
            self.last_ts_ = index[-1]
        self.seasonal_periods_ = self._periods()
        self.period_ = self.seasonal_periods_[0] if self.seasonal_periods_ else 1
        self.log_ = bool(
            (self.log_transform is True or self.log_transform == "auto") and np.all(values > 0)
        )
        self.validation_scores_ = {}
        self.fallback_reason_ = None
        scales = dict(self.interval_scales or {})

        if not self._long_enough(len(values)):
            self.fallback_reason_ = (
                f"{len(values)} points are fewer than {self.min_cycles} seasonal cycles of "
                f"{self.period_} steps plus a validation window; seasonal naive is used"
            )
            weights = {"snaive": 1.0}
        elif self.method == "auto":
            weights, scales = self._choose(values)
        elif self.method == "combo":
            weights = dict(self.combo_weights or dict.fromkeys(self.candidates, 1.0))
        else:
            weights = {self.method: 1.0}
        total = sum(weights.values())
        self.weights_ = {k: float(v) / total for k, v in weights.items()}
        keys = list(self.weights_) + (["combo"] if len(self.weights_) > 1 else [])
        self.interval_scales_ = {k: float(scales.get(k, 1.0)) for k in keys}
        self.method_ = next(iter(self.weights_)) if len(self.weights_) == 1 else "combo"
        fit_periods = tuple(p for p in self.seasonal_periods_ if len(values) >= self.min_cycles * p)
        member_scales = dict(self.interval_scales_)
        if len(self.weights_) > 1:  # in a combination only the combination's scale applies
            member_scales = {"combo": member_scales["combo"]}
        self.model_ = _fit_combo(
            self.weights_,
            values,
            period=self.period_,
            periods=fit_periods,
            log=self.log_,
            scales=member_scales,
        )
        self.results_ = self.model_.results
        return self

    def _check_params(self):
        names = list(self.candidates) + list(self.combo_weights or {})
        unknown = [m for m in names if m not in _METHOD_CLASSES]
        if self.method not in (*METHODS, "auto") or unknown:
            raise ValueError(
                f"unknown forecasting method {self.method if not unknown else unknown!r}; "
                f"choose from auto, {', '.join(METHODS)}"
            )
        if any(not 0 < lv < 100 for lv in self.levels):
            raise ValueError(f"interval levels are percentages in (0, 100), got {self.levels!r}")

    @staticmethod
    def _validate_series(y):
        index = None
        if isinstance(y, pd.Series):
            if isinstance(y.index, pd.DatetimeIndex):
                index = y.index
            values = y.to_numpy(dtype="float64")
        else:
            values = np.asarray(y, dtype="float64").ravel()
        if values.size < 2:
            raise ValueError(f"need at least 2 observations to forecast, got {values.size}")
        if not np.all(np.isfinite(values)):
            raise ValueError(
                "the series has missing or infinite values; regularise it first "
                "(fleetml.models.forecast.to_regular_series fills gaps)"
            )
        return values, index

    def _periods(self) -> tuple[int, ...]:
        if self.seasonal_periods is not None:
            return tuple(int(p) for p in self.seasonal_periods if int(p) >= 2)
        if self.step_ is None:
            return ()
        # Periods are kept even when history is short, so the naive fallback stays seasonal.
        return seasonal_periods_for(self.step_, 10**12)

    def _val_h(self) -> int:
        if self.validation_horizon is not None:
            return int(self.validation_horizon)
        return max(12, self.period_)

    def _long_enough(self, n: int) -> bool:
        if self.method == "snaive":
            return True
        need = self.min_cycles * self.period_ if self.period_ >= 2 else 10
        if self.method == "auto":
            need += self._val_h()
        return n >= need

    def _choose(self, values) -> tuple[dict, dict]:
        """Combination weights and interval scales of the candidates, from validation scores."""
        h = self._val_h()
        train, actual = values[:-h], values[-h:]
        scale = _mase_scale(train, self.period_)
        periods = tuple(p for p in self.seasonal_periods_ if len(train) >= self.min_cycles * p)
        ratios, fitted = {}, {}
        for name in self.candidates:
            try:
                model = _fit_method(
                    name, train, period=self.period_, periods=periods, log=self.log_
                )
                fc = model.point(h)
                if not np.all(np.isfinite(fc)):
                    raise ValueError("non-finite forecast")
                ratios[name] = model.error_ratio(actual) if self.calibrate_intervals else 1.0
                fitted[name] = model
            except Exception as exc:  # a candidate that cannot fit is skipped, and recorded
                self.validation_scores_[name] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            mase = float(np.mean(np.abs(actual - fc)) / scale) if scale > 0 else math.nan
            self.validation_scores_[name] = {"smape": _smape(actual, fc), "mase": mase}
        scores = {n: self._relative_score(n) for n in ratios}
        scores = {n: s for n, s in scores.items() if math.isfinite(s)}
        if not scores:
            self.fallback_reason_ = "no candidate could be fitted; seasonal naive is used"
            return {"snaive": 1.0}, {}
        best = min(scores.values())
        if best <= 1e-12:  # a perfect validation forecast takes everything
            weights = {min(scores, key=scores.get): 1.0}
        else:
            raw = {n: (best / s) ** self.weight_power for n, s in scores.items()}
            total = sum(raw.values())
            weights = {n: w / total for n, w in raw.items() if w / total >= self.min_weight}
        for name, score in scores.items():
            self.validation_scores_[name]["relative"] = score
        weights = dict(sorted(weights.items(), key=lambda kv: -kv[1]))
        if len(weights) == 1:
            scales = {n: ratios[n] for n in weights}
        else:  # members keep their stated widths; the combination is calibrated as a whole
            total = sum(weights.values())
            combo = _Combo(name="combo", y=train, period=self.period_, log=self.log_)
            combo.extra["members"] = [(w / total, fitted[n]) for n, w in weights.items()]
            scales = {"combo": combo.error_ratio(actual) if self.calibrate_intervals else 1.0}
        scales = {n: max(MIN_INTERVAL_SCALE, min(r, MAX_INTERVAL_SCALE)) for n, r in scales.items()}
        return weights, scales

    def _relative_score(self, name: str) -> float:
        score = self.validation_scores_[name]
        ref = self.validation_scores_.get("snaive", {})
        parts = []
        for key in ("smape", "mase"):
            value, base = score.get(key, math.nan), ref.get(key, math.nan)
            if math.isfinite(value) and math.isfinite(base) and base > 0:
                parts.append(value / base)
            elif math.isfinite(value):
                parts.append(value)
        return float(np.mean(parts)) if parts else math.inf

    # -- forecasting ----------------------------------------------------------------------

    def predict(self, horizon: int) -> pd.DataFrame:
        """Forecast ``horizon`` steps past the end of the fitted history.

        Returns
        -------
        pandas.DataFrame
            Indexed by forecast time (or step number 1..horizon for a series without a time
            index), with ``yhat`` and ``yhat_lower_<level>`` / ``yhat_upper_<level>`` per level.
        """
        check_is_fitted(self, "model_")
        horizon = int(horizon)
        if horizon < 1:
            raise ValueError(f"horizon must be at least one step, got {horizon}")
        with threadpool_limits(limits=1, user_api="blas"):
            out = self.model_.predict(horizon, self.levels)
        return pd.DataFrame(out, index=self.forecast_index(horizon))

    def forecast_index(self, horizon: int) -> pd.Index:
        """Timestamps of the next ``horizon`` steps (or step numbers without a time index)."""
        check_is_fitted(self, "model_")
        if self.last_ts_ is None:
            return pd.RangeIndex(1, horizon + 1, name="step")
        return pd.DatetimeIndex(
            [self.last_ts_ + (k + 1) * self.step_ for k in range(horizon)], name="ts"
        )

    def summary(self) -> dict:
        """What was chosen and why, for logs and MLflow."""
        check_is_fitted(self, "model_")
        return {
            "method": self.method_,
            "weights": {k: round(v, 4) for k, v in self.weights_.items()},
            "interval_scales": {k: round(v, 4) for k, v in self.interval_scales_.items()},
            "seasonal_periods": list(self.seasonal_periods_),
            "log_transform": self.log_,
            "n_obs": int(self.n_obs_),
            "step": None if self.step_ is None else str(self.step_),
            "fallback_reason": self.fallback_reason_,
            "validation": self.validation_scores_,
        }


def find_peaks(forecast: pd.DataFrame, *, top: int = 3, min_separation: int | None = None):
    """The largest local maxima of ``yhat`` over a forecast, largest first.

    The overall maximum is always the first peak, even at an end of the horizon.

    Parameters
    ----------
    forecast : pandas.DataFrame
        A frame from :meth:`LoadForecaster.predict`.
    top : int
        How many peaks to return.
    min_separation : int or None
        Steps that must separate two peaks; default a quarter of the horizon (at least 1).

    Returns
    -------
    pandas.DataFrame
        Columns ``ts`` (or ``step``), ``yhat`` and, when present, ``yhat_upper_95``.
    """
    yhat = forecast["yhat"].to_numpy()
    n = len(yhat)
    sep = max(1, n // 4) if min_separation is None else max(1, int(min_separation))
    # Interior local maxima; an end of the horizon counts only as the overall maximum (load
    # still rising when the horizon ends), not as a peak in its own right.
    left = np.r_[np.inf, yhat[:-1]]
    right = np.r_[yhat[1:], np.inf]
    interior = np.flatnonzero((yhat >= left) & (yhat >= right))
    candidates = np.union1d(interior, [int(np.argmax(yhat))]) if n else interior
    order = candidates[np.argsort(-yhat[candidates], kind="stable")]
    chosen: list[int] = []
    for i in order:
        if all(abs(i - j) >= sep for j in chosen):
            chosen.append(int(i))
        if len(chosen) == top:
            break
    peaks = forecast.iloc[chosen]
    cols = [c for c in ("yhat", "yhat_upper_95") if c in peaks.columns]
    out = peaks[cols].reset_index()
    label = "ts" if isinstance(forecast.index, pd.DatetimeIndex) else "step"
    return out.rename(columns={out.columns[0]: label})


# --- many series: preparation, forecasting and the bundle served from MLflow --------------


def fleet_step(frame: pd.DataFrame, *, max_points: int = DEFAULT_MAX_POINTS) -> pd.Timedelta:
    """One forecast step for a whole wide frame (so accounts line up and groups can be summed).

    The sampling step is the median over accounts of each account's median gap; the step is then
    :func:`choose_forecast_step` for the frame's time span.
    """
    if frame.empty:
        raise ValueError("no samples to forecast from; check --from/--to, --account and --metric")
    ts = frame["ts"]
    gaps = ts.groupby(frame["account_id"]).diff().dropna()
    gaps = gaps[gaps > pd.Timedelta(0)]
    if gaps.empty:
        raise ValueError("every account has a single sample; forecasting needs a history")
    sampling = gaps.groupby(frame.loc[gaps.index, "account_id"]).median().median()
    return choose_forecast_step(pd.Timedelta(sampling), ts.max() - ts.min(), max_points=max_points)


def account_series(
    frame: pd.DataFrame, metric: str, *, kind: str, step: pd.Timedelta
) -> dict[str, pd.Series]:
    """Regular series of ``metric`` per account: counters as per-minute rates, gauges as they are.

    Accounts with fewer than two usable samples are left out.
    """
    if metric not in frame.columns:
        raise ValueError(f"metric {metric!r} is not in the frame; known: {list(frame.columns[2:])}")
    out: dict[str, pd.Series] = {}
    for account_id, part in frame[["ts", "account_id", metric]].groupby("account_id", sort=True):
        values = pd.Series(part[metric].to_numpy(), index=pd.DatetimeIndex(part["ts"]), name=metric)
        values = values.dropna()
        if kind == "counter":
            values = counter_to_rate(values)
        if len(values) < 2:
            continue
        regular = to_regular_series(values, step)
        if len(regular) >= 2:
            out[str(account_id)] = regular
    return out


def group_series(per_account: dict[str, pd.Series], groups: dict[str, str]) -> dict[str, pd.Series]:
    """The sum over each group's accounts, on the union of their time grids.

    ``groups`` maps account id to group name. An account without data at some time counts as
    its nearest value there (its series is extended flat), so a late-starting account does not
    make the sum jump; times before every account started are dropped.
    """
    members: dict[str, list[pd.Series]] = {}
    for account_id, series in per_account.items():
        group = groups.get(account_id)
        if group is None or (isinstance(group, float) and math.isnan(group)):
            continue
        members.setdefault(str(group), []).append(series)
    out = {}
    for group, parts in sorted(members.items()):
        wide = pd.concat(parts, axis=1)
        out[group] = wide.ffill().bfill().sum(axis=1).rename(parts[0].name)
    return out


@dataclass
class SeriesJob:
    """One series to forecast: its key (account or group), metric, history and method choice."""

    key: str
    metric: str
    series: pd.Series
    horizon: int
    method: str = "auto"
    levels: tuple[int, ...] = DEFAULT_LEVELS
    validation_horizon: int | None = None
    weights: dict | None = None
    interval_scales: dict | None = None

    @classmethod
    def from_choice(cls, key, metric, series, horizon, choice: dict | None) -> SeriesJob:
        """A job using a stored choice (``method``, ``weights``, ``interval_scales``)."""
        choice = choice or {}
        return cls(
            key,
            metric,
            series,
            horizon,
            method=choice.get("method", "auto"),
            weights=choice.get("weights"),
            interval_scales=choice.get("interval_scales"),
        )


def forecast_job(job: SeriesJob) -> dict:
    """Fit and forecast one :class:`SeriesJob`; returns forecast, peaks and what was chosen.

    A series that cannot be modelled at all (e.g. fewer than two points) gets an ``error``
    entry instead of raising, so one bad account never sinks a fleet-wide run.
    """
    try:
        model = LoadForecaster(
            job.method,
            levels=job.levels,
            validation_horizon=job.validation_horizon,
            combo_weights=job.weights,
            interval_scales=job.interval_scales,
        ).fit(job.series)
        forecast = model.predict(job.horizon)
        return {
            "key": job.key,
            "metric": job.metric,
            "forecast": forecast,
            "peaks": find_peaks(forecast),
            "summary": model.summary(),
            "error": None,
        }
    except (ValueError, np.linalg.LinAlgError) as exc:
        return {
            "key": job.key,
            "metric": job.metric,
            "forecast": None,
            "peaks": None,
            "summary": None,
            "error": f"{type(exc).__name__}: {exc}",
        }


def long_forecast_frame(results: list[dict], *, key_column: str = "account_id") -> pd.DataFrame:
    """Stack per-series forecasts into the CLI's long shape, one row per (ts, level).

    Columns: ``ts``, ``<key_column>``, ``metric``, ``yhat``, ``yhat_lower``, ``yhat_upper``,
    ``level``.
    """
    parts = []
    for res in results:
        fc = res.get("forecast")
        if fc is None:
            continue
        levels = sorted(int(c.rsplit("_", 1)[1]) for c in fc.columns if c.startswith("yhat_lower_"))
        for level in levels:
            parts.append(
                pd.DataFrame(
                    {
                        "ts": fc.index,
                        key_column: res["key"],
                        "metric": res["metric"],
                        "yhat": fc["yhat"].to_numpy(),
                        "yhat_lower": fc[f"yhat_lower_{level}"].to_numpy(),
                        "yhat_upper": fc[f"yhat_upper_{level}"].to_numpy(),
                        "level": level,
                    }
                )
            )
    if not parts:
        return pd.DataFrame(
            columns=["ts", key_column, "metric", "yhat", "yhat_lower", "yhat_upper", "level"]
        )
    out = pd.concat(parts, ignore_index=True)
    out[key_column] = out[key_column].astype("str")
    out["metric"] = out["metric"].astype("str")
    if isinstance(out["ts"].dtype, pd.DatetimeTZDtype):
        out["ts"] = out["ts"].astype("datetime64[ms, UTC]")
    return out.sort_values([key_column, "metric", "level", "ts"], ignore_index=True)


class ForecastBundle:
    """What ``fleetml-forecast`` registers: the method chosen per series, and how to prepare data.

    ``choices`` maps ``"account:<id>:<metric>"`` / ``"group:<name>:<metric>"`` to a choice
    ``{"method", "weights", "interval_scales"}`` (see :meth:`LoadForecaster.summary`);
    ``metric_kinds`` says which metrics are counters. :meth:`predict` forecasts a wide metrics
    frame with those choices (``auto`` for series it has not seen), one row per (ts, level).
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
        step = fleet_step(frame, max_points=self.max_points)
        horizon = parse_horizon(self.horizon, step)
        results = []
        for metric in metrics:
            kind = self.metric_kinds.get(metric, "gauge")
            for key, series in account_series(frame, metric, kind=kind, step=step).items():
                choice = self.method_for("account", key, metric)
                results.append(
                    forecast_job(SeriesJob.from_choice(key, metric, series, horizon, choice))
                )
        return long_forecast_frame(results)
