"""The individual forecasting methods, each a thin wrapper around statsmodels.

``snaive``
    seasonal naive (the daily cycle repeated); also the fallback when history is short,
``ets``
    statsmodels ``ETSModel`` with additive error, damped additive trend and the daily season,
``mstl_ets``
    statsmodels ``MSTL`` (daily and, with two weeks of history, weekly seasons), the seasonally
    adjusted series forecast by a damped-trend ``ETSModel`` and the seasons repeated,
``theta``
    statsmodels ``ThetaModel`` (the M4 Theta method, deseasonalised when a test finds a season),
``combo``
    a weighted mean of fitted members (:class:`_Combo`).

Each fitted method gives a point forecast, and normal intervals from its own error variance
times a per-level ``scale`` (set from rolling-origin validation, see
:mod:`fleetml.models.forecasting.intervals`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

METHODS: tuple[str, ...] = ("snaive", "ets", "mstl_ets", "theta", "combo")
#: Methods fitted and weighted by ``method="auto"``.
CANDIDATES: tuple[str, ...] = ("snaive", "ets", "mstl_ets", "theta")
DEFAULT_LEVELS: tuple[int, ...] = (80, 95)


def level_scale(scale, level) -> float:
    """The interval widening factor of ``level`` from a scale that is one number for every
    level (older bundles) or a mapping level -> factor (keys may be ints or strings)."""
    if isinstance(scale, dict):
        for key in (level, str(level), str(int(level)) if float(level).is_integer() else None):
            if key is not None and key in scale:
                return float(scale[key])
        return 1.0
    return float(scale)


@dataclass
class _Fitted:
    """One fitted method. It models ``log(y)`` when ``log`` is set and reports on y's scale.

    ``scale`` widens the interval: one factor, or a mapping level -> factor (the conformal
    factors measured on rolling-origin validation windows).
    """

    name: str
    y: np.ndarray
    period: int
    periods: tuple[int, ...] = ()
    log: bool = False
    scale: float | dict = 1.0
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
        sd_one = self.std_z(horizon)
        out = {"yhat": self.back(mean)}
        for level in levels:
            q = stats.norm.ppf(0.5 + level / 200)
            sd = sd_one * level_scale(self.scale, level)
            out[f"yhat_lower_{level}"] = self.back(mean - q * sd)
            out[f"yhat_upper_{level}"] = self.back(mean + q * sd)
        return out


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


def _fit_ets(z: np.ndarray, *, seasonal_period: int | None, trend: bool = True, params=None):
    """Fit statsmodels' ETSModel; with ``params`` (smoothing parameters of an earlier fit of
    the same model) only run the filter, which is what rolling origins reuse."""
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
        if params is not None and len(params) == len(model.param_names):
            try:
                return model.smooth(np.asarray(params, dtype="float64"))
            except Exception:  # noqa: BLE001 - any failure: estimate afresh below
                pass
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
        self.results = _fit_ets(
            self.z, seasonal_period=self.period, params=self.extra.get("warm_params")
        )
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
            # two inner STL iterations (statsmodels' robust default) instead of five: about a
            # third of the time, chosen for speed (docs/forecasting.md)
            decomposition = MSTL(
                z,
                periods=periods if len(periods) > 1 else periods[0],
                stl_kwargs={"inner_iter": 2},
            ).fit()
        seasonal = np.asarray(decomposition.seasonal, dtype="float64").reshape(len(z), -1)
        self.periods = periods
        self.extra["seasonal"] = seasonal
        self.extra["decomposition"] = decomposition
        self.results = _fit_ets(
            z - seasonal.sum(axis=1), seasonal_period=None, params=self.extra.get("warm_params")
        )
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
    members' half-widths around the combined forecast (on the log scale when the members model
    logs), times the combination's own ``scale``."""

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
            # a member not in logs may put its lower bound at or below zero: on the log scale
            # that is "down to almost nothing"
            lows = [
                np.maximum(p[f"yhat_lower_{level}"], 1e-6 * np.abs(p["yhat"])) for _, p in parts
            ]
            highs = [p[f"yhat_upper_{level}"] for _, p in parts]
            scale = level_scale(self.scale, level)
            if self.log and _positive(yhat, *[p["yhat"] for _, p in parts]):
                # Members modelled in logs: average their half-widths on the log scale, where
                # they were computed. Averaged on the original scale, one member whose log
                # variance grows fast (a damped-trend ETS far ahead) swamps the others with an
                # exponential bound (found on M4 training series' validation windows).
                with np.errstate(all="ignore"):
                    below = np.sum(
                        [
                            w * np.log(p["yhat"] / lo)
                            for (w, p), lo in zip(parts, lows, strict=True)
                        ],
                        axis=0,
                    )
                    above = np.sum(
                        [
                            w * np.log(hi / p["yhat"])
                            for (w, p), hi in zip(parts, highs, strict=True)
                        ],
                        axis=0,
                    )
                out[f"yhat_lower_{level}"] = yhat * np.exp(-scale * below)
                out[f"yhat_upper_{level}"] = yhat * np.exp(np.minimum(scale * above, 700.0))
                continue
            below = np.sum(
                [w * (p["yhat"] - lo) for (w, p), lo in zip(parts, lows, strict=True)], axis=0
            )
            above = np.sum(
                [w * (hi - p["yhat"]) for (w, p), hi in zip(parts, highs, strict=True)], axis=0
            )
            lower = yhat - scale * below
            # a positive series (modelled in logs) keeps a non-negative lower bound
            out[f"yhat_lower_{level}"] = np.maximum(lower, 0.0) if self.log else lower
            out[f"yhat_upper_{level}"] = yhat + scale * above
        return out


def _positive(*arrays) -> bool:
    return all(np.all(np.asarray(a) > 0) for a in arrays)


_METHOD_CLASSES = {"snaive": _SeasonalNaive, "ets": _ETS, "mstl_ets": _MSTLETS, "theta": _Theta}


def _fit_method(
    name: str, y, *, period: int, periods=(), log: bool = False, warm: _Fitted | None = None
) -> _Fitted:
    """Fit one named method on ``y`` (modelling ``log(y)`` when ``log``).

    ``warm``: the same method fitted on an earlier part of the series; ETS-based methods then
    reuse its smoothing parameters instead of estimating them again (rolling origins).
    """
    cls = _METHOD_CLASSES[name]
    fitted = cls(
        name=name,
        y=np.asarray(y, dtype="float64"),
        period=period,
        periods=tuple(periods or ()),
        log=log,
    )
    params = getattr(getattr(warm, "results", None), "params", None)
    if params is not None and warm.log == log and warm.periods == fitted.periods:
        fitted.extra["warm_params"] = np.asarray(params, dtype="float64")
    return fitted._fit()


def uses_log(name: str, log: bool, log_methods) -> bool:
    """Whether method ``name`` models ``log(y)``: the series allows it (``log``) and the method
    is among ``log_methods`` (``None``: every method)."""
    return bool(log) and (log_methods is None or name in log_methods)


def _fit_combo(
    weights: dict[str, float], y, *, period, periods, log, scales, log_methods=None
) -> _Fitted:
    members = []
    for name, w in weights.items():
        member = _fit_method(
            name, y, period=period, periods=periods, log=uses_log(name, log, log_methods)
        )
        member.scale = scales.get(name, 1.0)
        members.append((float(w), member))
    if len(members) == 1:
        return members[0][1]
    combo = _Combo(
        name="combo",
        y=np.asarray(y, dtype="float64"),
        period=period,
        log=log,
        scale=scales.get("combo", 1.0),
    )
    combo.extra["members"] = members
    combo.results = {m.name: m.results for _, m in members}
    return combo
