"""The estimator: :class:`LoadForecaster` chooses, weights and calibrates methods per series.

With ``method="auto"`` each candidate method is fitted at several rolling origins cut from the
end of the history and scored on the window after each (sMAPE and MASE relative to seasonal
naive, averaged over origins). Candidates are weighted by that score and the survivors refitted
on the whole history and combined (``combo``), or used alone when one dominates. Interval widths
are calibrated by split conformal prediction on the same origins' errors
(:mod:`fleetml.models.forecasting.intervals`). :func:`find_peaks` reads a forecast's peaks.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import ThreadpoolController

from fleetml.evaluation.forecast import mase, smape
from fleetml.models.forecasting.global_gbm import GLOBAL_MEMBER
from fleetml.models.forecasting.intervals import conformal_scales
from fleetml.models.forecasting.methods import (
    _METHOD_CLASSES,
    CANDIDATES,
    DEFAULT_LEVELS,
    METHODS,
    _Combo,
    _fit_combo,
    _fit_method,
    member_params,
    precomputed_member,
    uses_log,
)
from fleetml.models.forecasting.series import infer_step, seasonal_periods_for

#: Methods that model ``log(y)`` when a series is positive (``None``: all). Theta is left out:
#: it deseasonalises multiplicatively itself. Chosen on validation windows cut from M4 hourly
#: *training* series (``bench/m4.py --validate``: OWA 0.555 without Theta in logs, 0.596 with).
DEFAULT_LOG_METHODS: tuple[str, ...] | None = ("snaive", "ets", "mstl_ets")


@lru_cache(maxsize=1)
def _threadpools() -> ThreadpoolController:
    """The process's thread pools, found once: each lookup scans the loaded libraries (about
    10 ms, as much as fitting a method)."""
    return ThreadpoolController()


def _one_blas_thread():
    return _threadpools().limit(limits=1, user_api="blas")


class LoadForecaster(BaseEstimator):
    """Forecast one load series; with ``method="auto"`` the method is chosen by validation.

    Parameters
    ----------
    method : {"auto", "snaive", "ets", "mstl_ets", "theta", "combo"}, default="auto"
        ``"auto"`` fits every candidate at up to ``n_origins`` rolling origins cut from the end
        of the history and scores it on the window after each (mean of sMAPE and MASE, each
        relative to seasonal naive, averaged over origins). Candidates are weighted by a
        power (``weight_power``) of the inverse of that score; those under ``min_weight`` are
        dropped and the rest refitted on the whole history. One survivor is used alone, several are
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
        Length of each validation window; ``None`` means one daily period (at least 12 steps).
    n_origins : int, default=3
        Rolling validation origins, ``validation_horizon`` apart, the last one leaving exactly
        one window; origins with too little history before them are skipped.
    levels : tuple of int, default=(80, 95)
        Central prediction interval levels in percent.
    log_transform : {"auto", True, False}, default="auto"
        Model ``log(y)``; ``"auto"`` does so when every value is positive.
    log_methods : tuple of str or None, default=DEFAULT_LOG_METHODS
        The methods that use the log transform when it applies (``None``: all).
    weight_power : float, default=8.0
        Exponent of the inverse validation score in the combination weights: higher puts
        more weight on the candidates that did best on the rolling origins. Chosen on
        validation windows of M4 hourly training series (``bench/m4.py --validate``, OWA with
        exponents 1, 2, 4, 8, 16: 0.613, 0.538, 0.482, 0.474, 0.482; docs/forecasting.md).
    min_weight : float, default=0.05
        Candidates with a smaller weight are left out of the final model.
    calibrate_intervals : bool, default=True
        With ``"auto"``, widen or narrow the chosen model's intervals per level by split
        conformal prediction on the rolling-origin validation errors
        (:mod:`fleetml.models.forecasting.intervals`).
    min_cycles : int, default=2
        Full seasonal cycles needed before a model uses that season; shorter history falls back
        to seasonal naive (or naive when not even one cycle is there).
    refit : {"filter", "estimate"}, default="filter"
        How ETS-based members are refitted on the whole history after ``"auto"`` validation:
        ``"filter"`` keeps the smoothing parameters estimated at the oldest validation origin
        (the ones the combination weights and interval scales were measured with) and only
        runs the filter over the whole history; ``"estimate"`` estimates them again (about
        five times the cost of a member's refit). Chosen on validation windows of M4 hourly
        training series (``bench/m4.py --validate``; see docs/forecasting.md).
    member_params : dict or None, default=None
        Method -> smoothing parameters of ETS-based members for a named method or ``"combo"``
        (what a trained champion stores, from :meth:`summary`), used as they are instead of
        being estimated; so a champion replays the model it chose.
    global_member : dict or None, default=None
        Forecasts of a model fitted across many series (see
        :func:`fleetml.models.forecasting.global_gbm.global_member_forecasts`):
        ``{"validation": {origin: GlobalForecast}, "final": GlobalForecast}``. With ``"auto"``
        it is weighed beside the candidates as the member ``"gbm"`` when it has a forecast at
        every validation origin; those must come from a model that saw nothing after the
        earliest origin, or the weights would favour it unfairly.
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
        n_origins: int = 3,
        origin_spacing: float = 1.0,
        levels: tuple[int, ...] = DEFAULT_LEVELS,
        log_transform: str | bool = "auto",
        log_methods: tuple[str, ...] | None = DEFAULT_LOG_METHODS,
        weight_power: float = 8.0,
        min_weight: float = 0.05,
        calibrate_intervals: bool = True,
        min_cycles: int = 2,
        refit: str = "filter",
        member_params: dict | None = None,
        global_member: dict | None = None,
    ):
        self.method = method
        self.candidates = candidates
        self.combo_weights = combo_weights
        self.interval_scales = interval_scales
        self.seasonal_periods = seasonal_periods
        self.validation_horizon = validation_horizon
        self.n_origins = n_origins
        self.origin_spacing = origin_spacing
        self.levels = levels
        self.log_transform = log_transform
        self.log_methods = log_methods
        self.weight_power = weight_power
        self.min_weight = min_weight
        self.calibrate_intervals = calibrate_intervals
        self.min_cycles = min_cycles
        self.refit = refit
        self.member_params = member_params
        self.global_member = global_member

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
        with _one_blas_thread():
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
        self.validation_origins_ = 0
        self.fallback_reason_ = None
        scales = dict(self.interval_scales or {})
        warm: dict = {}
        external: dict = {}

        if not self._long_enough(len(values)):
            self.fallback_reason_ = (
                f"{len(values)} points are fewer than {self.min_cycles} seasonal cycles of "
                f"{self.period_} steps plus a validation window; seasonal naive is used"
            )
            weights = {"snaive": 1.0}
        elif self.method == "auto":
            weights, scales, warm = self._choose(values)
            if GLOBAL_MEMBER in weights:
                external[GLOBAL_MEMBER] = self._global(self.global_member["final"])
        elif self.method == "combo":
            weights = dict(self.combo_weights or dict.fromkeys(self.candidates, 1.0))
        else:
            weights = {self.method: 1.0}
        total = sum(weights.values())
        self.weights_ = {k: float(v) / total for k, v in weights.items()}
        keys = list(self.weights_) + (["combo"] if len(self.weights_) > 1 else [])
        self.interval_scales_ = {k: _as_scale(scales.get(k, 1.0)) for k in keys}
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
            log_methods=self.log_methods,
            warm=warm if self.refit == "filter" else None,
            params=None if self.method == "auto" else self.member_params,
            external=external,
        )
        self.results_ = self.model_.results
        return self

    def _check_params(self):
        names = (
            list(self.candidates) + list(self.combo_weights or {}) + list(self.log_methods or ())
        )
        unknown = [m for m in names if m not in _METHOD_CLASSES]
        if self.method not in (*METHODS, "auto") or unknown:
            raise ValueError(
                f"unknown forecasting method {self.method if not unknown else unknown!r}; "
                f"choose from auto, {', '.join(METHODS)}"
            )
        if self.refit not in ("estimate", "filter"):
            raise ValueError(f"refit must be 'estimate' or 'filter', got {self.refit!r}")
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

    def _origins(self, n: int) -> list[int]:
        """Validation origins (history lengths), oldest first: the last leaves one window, the
        others step back a window each, while enough history stays before them."""
        return rolling_origins(
            n,
            horizon=self._val_h(),
            period=self.period_,
            n_origins=self.n_origins,
            origin_spacing=self.origin_spacing,
            min_cycles=self.min_cycles,
        )

    def validation_origins(self, y) -> list[int]:
        """The rolling origins (history lengths) ``"auto"`` would validate ``y`` at, without
        fitting; empty when the series is too short to be validated. What a caller preparing a
        ``global_member`` must forecast from."""
        self._check_params()
        values, index = self._validate_series(y)
        self.step_ = infer_step(index) if index is not None and len(index) >= 2 else None
        self.seasonal_periods_ = self._periods()
        self.period_ = self.seasonal_periods_[0] if self.seasonal_periods_ else 1
        if self.method != "auto" or not self._long_enough(len(values)):
            return []
        return self._origins(len(values))

    def _global(self, forecast) -> object:
        """The global model's forecast as a member of this series' combination."""
        return precomputed_member(
            GLOBAL_MEMBER, forecast.mean, forecast.sd, log=forecast.log, as_log=self.log_
        )

    def _global_at(self, origins) -> dict:
        """The global member at each validation origin, or {} when one is missing."""
        if not self.global_member:
            return {}
        found = self.global_member.get("validation", {})
        if self.global_member.get("final") is None or any(o not in found for o in origins):
            self.validation_scores_[GLOBAL_MEMBER] = {
                "error": "the global model has no forecast at every validation origin"
            }
            return {}
        return {o: self._global(found[o]) for o in origins}

    def _choose(self, values) -> tuple[dict, dict, dict]:
        """Combination weights and interval scales of the candidates, from rolling origins.

        Oldest origin first: ETS-based candidates estimate their smoothing parameters there and
        only filter at the later origins (no parameter ever saw its validation window, and the
        validation costs about one fit per candidate instead of one per origin).
        """
        h = self._val_h()
        origins = self._origins(len(values))
        self.validation_origins_ = len(origins)
        scores: dict[str, list[tuple[float, float]]] = {n: [] for n in self.candidates}
        fitted: list[dict] = []  # per origin: name -> fitted member
        first: dict = {}  # name -> member fitted at the oldest origin
        at_origin = self._global_at(origins)
        if at_origin:
            scores[GLOBAL_MEMBER] = []
        for origin in origins:
            train, actual = values[:origin], values[origin : origin + h]
            periods = tuple(p for p in self.seasonal_periods_ if len(train) >= self.min_cycles * p)
            members = {}
            for name in self.candidates:
                if name in self.validation_scores_:  # failed at a later origin already
                    continue
                try:
                    model = _fit_method(
                        name,
                        train,
                        period=self.period_,
                        periods=periods,
                        log=uses_log(name, self.log_, self.log_methods),
                        warm=first.get(name),
                    )
                    first.setdefault(name, model)
                    fc = model.point(h)
                    if not np.all(np.isfinite(fc)):
                        raise ValueError("non-finite forecast")
                except Exception as exc:  # a candidate that cannot fit is dropped, and recorded
                    self.validation_scores_[name] = {"error": f"{type(exc).__name__}: {exc}"}
                    continue
                members[name] = model
                scores[name].append((smape(actual, fc), mase(actual, fc, train, self.period_)))
            if at_origin:
                model = members[GLOBAL_MEMBER] = at_origin[origin]
                fc = model.point(h)
                scores[GLOBAL_MEMBER].append(
                    (smape(actual, fc), mase(actual, fc, train, self.period_))
                )
            fitted.append((actual, members))
        for name, rows in scores.items():
            if name in self.validation_scores_ or not rows:
                continue
            arr = np.array(rows, dtype="float64")
            self.validation_scores_[name] = {
                "smape": float(np.nanmean(arr[:, 0])),
                "mase": float(np.nanmean(arr[:, 1])) if np.isfinite(arr[:, 1]).any() else math.nan,
                "origins": len(rows),
            }
        names = list(self.candidates) + ([GLOBAL_MEMBER] if at_origin else [])
        ok = [n for n in names if "error" not in self.validation_scores_.get(n, {})]
        relative = {n: self._relative_score(n) for n in ok if n in self.validation_scores_}
        relative = {n: r for n, r in relative.items() if math.isfinite(r)}
        if not relative:
            self.fallback_reason_ = "no candidate could be fitted; seasonal naive is used"
            return {"snaive": 1.0}, {}, first
        best = min(relative.values())
        if best <= 1e-12:  # a perfect validation forecast takes everything
            weights = {min(relative, key=relative.get): 1.0}
        else:
            raw = {n: (best / r) ** self.weight_power for n, r in relative.items()}
            total = sum(raw.values())
            weights = {n: w / total for n, w in raw.items() if w / total >= self.min_weight}
        for name, score in relative.items():
            self.validation_scores_[name]["relative"] = score
        weights = dict(sorted(weights.items(), key=lambda kv: -kv[1]))
        key = next(iter(weights)) if len(weights) == 1 else "combo"
        if not self.calibrate_intervals:
            return weights, {key: 1.0}, first
        total = sum(weights.values())
        windows = []
        for actual, members in fitted:
            if key == "combo":
                model = _Combo(name="combo", y=values, period=self.period_, log=self.log_)
                model.extra["members"] = [(w / total, members[n]) for n, w in weights.items()]
            else:
                model = members[key]
            windows.append((actual, model.predict(len(actual), self.levels)))
        return weights, {key: conformal_scales(windows, self.levels)}, first

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
        with _one_blas_thread():
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
            "interval_scales": {k: _rounded(v) for k, v in self.interval_scales_.items()},
            "member_params": member_params(self.model_),
            "seasonal_periods": list(self.seasonal_periods_),
            "log_transform": self.log_,
            "validation_origins": self.validation_origins_,
            "n_obs": int(self.n_obs_),
            "step": None if self.step_ is None else str(self.step_),
            "fallback_reason": self.fallback_reason_,
            "validation": self.validation_scores_,
        }


def rolling_origins(
    n: int,
    *,
    horizon: int,
    period: int,
    n_origins: int = 3,
    origin_spacing: float = 1.0,
    min_cycles: int = 2,
) -> list[int]:
    """Rolling validation origins (history lengths) of a series of ``n`` points, oldest first:
    the last leaves one window of ``horizon`` steps, the others step back ``origin_spacing``
    windows each while ``min_cycles`` seasonal cycles stay before them."""
    need = min_cycles * period if period >= 2 else 10
    stride = max(1, int(horizon * origin_spacing))
    origins = [n - horizon - stride * k for k in range(max(1, int(n_origins)))]
    return sorted(o for o in origins if o >= need) or [n - horizon]


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


def _as_scale(scale) -> float | dict:
    """An interval scale as stored: one factor, or level -> factor (JSON gives string keys)."""
    if isinstance(scale, dict):
        return {_level_key(k): float(v) for k, v in scale.items()}
    return float(scale)


def _level_key(level):
    value = float(level)
    return int(value) if value.is_integer() else value


def _rounded(scale):
    if isinstance(scale, dict):
        return {k: round(v, 4) for k, v in scale.items()}
    return round(scale, 4)
