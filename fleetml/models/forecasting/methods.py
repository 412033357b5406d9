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

import math
import warnings
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import pandas as pd

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


def _normal_quantile(level) -> float:
    """The standard normal quantile bounding a central ``level`` % interval (scipy's
    ``norm.ppf`` costs half a millisecond a call, which adds up over origins and members)."""
    return NormalDist().inv_cdf(0.5 + float(level) / 200)


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
            q = _normal_quantile(level)
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


@dataclass
class ETSResults:
    """A fitted additive-error ETS model (statsmodels ``ETSModel``), reduced to what forecasts
    need: the parameters, the last states and the one-step error variance.

    ``forecast`` gives the exact mean and variance of Hyndman et al. (2008, class 1), the same
    numbers as statsmodels' ``get_prediction`` for these models without its simulation pass and
    the parameters' covariance (a complex-step Hessian) computed for every results object.
    """

    params: np.ndarray
    param_names: list[str]
    level: float
    trend: float
    season: np.ndarray  # the last cycle of seasonal states, oldest first (empty: no season)
    sigma2: float

    def param(self, name: str, default: float = 0.0) -> float:
        if name not in self.param_names:
            return default
        return float(self.params[self.param_names.index(name)])

    def forecast(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance of the 1..horizon step forecasts."""
        alpha, beta = self.param("smoothing_level"), self.param("smoothing_trend")
        gamma, phi = self.param("smoothing_seasonal"), self.param("damping_trend", 1.0)
        h = np.arange(1, horizon + 1)
        damped = np.cumsum(phi**h)  # phi + phi^2 + ... + phi^h
        mean = self.level + damped * self.trend
        m = self.season.size
        if m:
            mean = mean + self.season[(h - 1) % m]
        c = alpha + beta * damped[:-1]
        if m:
            c = c + gamma * (h[:-1] % m == 0)
        var = self.sigma2 * np.r_[1.0, 1.0 + np.cumsum(c**2)]
        return mean, var


def _ets_heuristic_start(z: np.ndarray, m: int) -> tuple[float, float, np.ndarray | None]:
    """statsmodels' heuristic initial level, trend and additive seasonal states (Hyndman &
    Athanasopoulos, section 2.6) in numpy: the same numbers as
    ``initialization_method="heuristic"`` at a fraction of its pandas overhead."""
    if len(z) < 10 or (m and (len(z) < 2 * m or len(z) < 10 + 2 * (m // 2))):
        raise ValueError("too short for the heuristic initial states")
    season = None
    base = z
    if m:
        k = max(min(5, len(z) // m), math.ceil((10 + 2 * (m // 2)) / m))
        x = z[: m * k]
        filt = np.r_[0.5, np.ones(m - 1), 0.5] / m if m % 2 == 0 else np.full(m, 1.0 / m)
        half = len(filt) // 2
        trend = np.full(len(x), np.nan)
        trend[half : len(x) - half] = np.convolve(x, filt, mode="valid")
        detrended = np.full(k * m, np.nan)
        detrended[: len(x)] = x - trend
        season = np.nanmean(detrended.reshape(k, m), axis=0)
        season = season - season.mean()
        base = trend[~np.isnan(trend)]
    design = np.c_[np.ones(10), np.arange(10) + 1.0]
    level, slope = np.linalg.pinv(design) @ base[:10]
    return float(level), float(slope), season


def _fit_ets(z: np.ndarray, *, seasonal_period: int | None, trend: bool = True, params=None):
    """Fit statsmodels' ETSModel (additive error); with ``params`` (smoothing parameters of an
    earlier fit of the same model) only run the filter, which is what rolling origins reuse."""
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    seasonal = "add" if seasonal_period and seasonal_period >= 2 else None
    series = pd.Series(z)
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
            level, slope, season = _ets_heuristic_start(z, seasonal_period if seasonal else 0)
            model = ETSModel(
                series,
                initialization_method="known",
                initial_level=level,
                initial_trend=slope if trend else None,
                initial_seasonal=season,
                **kwargs,
            )
        except ValueError:  # too short for the heuristic start
            model = ETSModel(series, initialization_method="estimated", **kwargs)
        fitted = None
        if params is not None and len(params) == len(model.param_names):
            fitted = np.asarray(params, dtype="float64")
            try:
                yhat, states = model.smooth(fitted, return_raw=True)
            except Exception:  # noqa: BLE001 - any failure: estimate afresh below
                fitted = None
        if fitted is None:
            fitted = np.asarray(model.fit(disp=False, maxiter=200, return_params=True))
            yhat, states = model.smooth(fitted, return_raw=True)
    states = np.asarray(states, dtype="float64")
    m = int(seasonal_period) if seasonal else 0
    return ETSResults(
        params=fitted,
        param_names=list(model.param_names),
        level=float(states[-1, 0]),
        trend=float(states[-1, 1]) if trend else 0.0,
        season=states[-m:, -1].copy() if m else np.empty(0),
        sigma2=float(np.mean((z - np.asarray(yhat, dtype="float64")) ** 2)),
    )


def _ets_prediction(fitted: _Fitted, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of an ETS forecast, computed once per horizon (the
    validation, the interval and the combination all ask for the same horizon)."""
    cache = fitted.extra.setdefault("prediction", {})
    if horizon not in cache:
        mean, var = fitted.results.forecast(horizon)
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


def _mstl_periods(n: int, periods, period: int) -> tuple[int, ...]:
    """The seasons MSTL fits on ``n`` points: it silently drops one with fewer than two
    cycles of data, so they are dropped here too."""
    kept = tuple(p for p in (periods or (period,)) if n > 2 * p)
    return kept or (period,)


def _stl_jump(periods) -> int:
    """Points between evaluations of STL's trend and low-pass smoothers: a tenth of the shortest
    season's trend window (about 1.5 periods), as Cleveland et al. (1990) suggest."""
    return max(1, int(0.15 * min(periods)))


class _MSTLETS(_Fitted):
    def _fit(self):
        from statsmodels.tsa.seasonal import MSTL

        z = self.z
        periods = _mstl_periods(len(z), self.periods, self.period)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # two inner STL iterations (statsmodels' robust default) instead of five: about a
            # third of the time, chosen for speed (docs/forecasting.md); the trend and low-pass
            # smoothers evaluated every ~10 % of their window and interpolated between (the
            # "jumps" of Cleveland et al.'s STL): the seasonal moves by ~1e-4 on the log scale,
            # and a 15-minute series with daily and weekly seasons fits 10x faster
            jump = _stl_jump(periods)
            decomposition = MSTL(
                z,
                periods=periods if len(periods) > 1 else periods[0],
                stl_kwargs={"inner_iter": 2, "trend_jump": jump, "low_pass_jump": jump},
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


@dataclass
class ThetaResults:
    """A fitted Theta method (the M4 Theta: SES with drift on the deseasonalised series).

    ``params`` holds ``b0`` (half the OLS slope is the drift) and ``alpha`` (the SES weight);
    ``seasonal`` one cycle of seasonal indices (empty when the series was not found seasonal);
    ``multiplicative`` how they apply.
    """

    b0: float
    alpha: float
    one_step: float
    n_obs: int
    period: int
    seasonal: np.ndarray
    multiplicative: bool

    @property
    def params(self) -> pd.Series:
        return pd.Series([self.b0, self.alpha], index=["b0", "alpha"])

    def forecast(self, horizon: int) -> np.ndarray:
        """statsmodels ``ThetaModelResults.forecast(horizon, theta=2)``, in numpy."""
        alpha = self.alpha
        h = np.arange(horizon, dtype="float64")
        if alpha > 0:
            h += 1 / alpha - (1 - alpha) ** self.n_obs / alpha
        fc = 0.5 * self.b0 * h + self.one_step
        if self.seasonal.size:
            season = self.seasonal[(self.n_obs + np.arange(horizon)) % self.period]
            fc = fc * season if self.multiplicative else fc + season
        return fc


def _ses_levels(y: np.ndarray, alpha: float) -> np.ndarray:
    """SES levels after each observation, the first level known to be ``y[0]``."""
    from scipy.signal import lfilter

    level, _ = lfilter([alpha], [1.0, alpha - 1.0], y, zi=[(1 - alpha) * y[0]])
    return level


def _ses_alpha(y: np.ndarray) -> float:
    """The SES weight minimising the one-step squared error (initial level ``y[0]``, known).

    This is what statsmodels' ``ExponentialSmoothing(initialization_method="known").fit()`` in
    ``ThetaModel.fit`` estimates (the scale is concentrated out), in about a fortieth of the time.
    """
    from scipy.optimize import minimize_scalar

    def sse(alpha):
        level = _ses_levels(y, alpha)
        return float(np.sum((y[1:] - level[:-1]) ** 2))

    found = minimize_scalar(sse, bounds=(1e-4, 0.9999), method="bounded", options={"xatol": 1e-6})
    return float(found.x)


def _classical_seasonal(z: np.ndarray, period: int, multiplicative: bool) -> np.ndarray:
    """One cycle of classical-decomposition seasonal indices (statsmodels' ``seasonal_decompose``
    in numpy: a centred moving average of order ``period`` as trend, 2 x ``period`` when even,
    then the mean of the detrended values at each cycle position, normalised)."""
    if period % 2 == 0:
        filt = np.r_[0.5, np.ones(period - 1), 0.5] / period
    else:
        filt = np.full(period, 1.0 / period)
    half = len(filt) // 2
    trend = np.full(len(z), np.nan)
    trend[half : len(z) - half] = np.convolve(z, filt, mode="valid")
    detrended = z / trend if multiplicative else z - trend
    cycles = -(-len(z) // period)
    padded = np.full(cycles * period, np.nan)
    padded[: len(z)] = detrended
    means = np.nanmean(padded.reshape(cycles, period), axis=0)
    return means / means.mean() if multiplicative else means - means.mean()


def _theta_seasonal(z: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """statsmodels ThetaModel's deseasonalising: a 90 % seasonality test on the ACF, then a
    classical decomposition (multiplicative for a positive series, additive when an index
    would be at or below zero). Returns the adjusted series, one cycle of indices (empty when
    not seasonal) and whether they are multiplicative."""
    from statsmodels.tsa.stattools import acf

    multiplicative = bool(np.all(z > 0))
    if period < 2:
        return z, np.empty(0), multiplicative
    rho = acf(z, nlags=period, fft=True)
    if not len(z) * rho[-1] ** 2 / np.sum(rho[:-1] ** 2) > 2.705543454095404:  # chi2(1) 90 %
        return z, np.empty(0), multiplicative
    reps = len(z) // period + 1
    if multiplicative:
        cycle = _classical_seasonal(z, period, True)
        if cycle.min() > 0:
            return z / np.tile(cycle, reps)[: len(z)], cycle, True
    cycle = _classical_seasonal(z, period, False)
    return z - np.tile(cycle, reps)[: len(z)], cycle, False


class _Theta(_Fitted):
    """The M4 Theta method (statsmodels ``ThetaModel(...).fit(use_mle=False)``, theta 2),
    computed in numpy: the statsmodels fit spends its time in a state-space SES estimate."""

    def _fit(self):
        z = self.z
        period = self.period if self.period >= 2 and len(z) >= 2 * self.period else 1
        adjusted, seasonal, multiplicative = _theta_seasonal(z, period)
        t = np.arange(len(adjusted), dtype="float64")
        b0 = float(np.polyfit(t, adjusted, 1)[0]) if len(adjusted) >= 2 else 0.0
        alpha = _ses_alpha(adjusted)
        level = _ses_levels(adjusted, alpha)
        self.results = ThetaResults(
            b0=b0,
            alpha=alpha,
            one_step=float(level[-1]),
            n_obs=len(z),
            period=period,
            seasonal=seasonal,
            multiplicative=multiplicative,
        )
        # One-step error scale of the SES on the seasonally adjusted series (statsmodels'
        # ``sigma2`` fits an ARIMA to the *unadjusted* series: slow, and far too wide for
        # seasonal data): relative errors when the season is multiplicative.
        errors = adjusted[1:] - level[:-1]
        relative = bool(seasonal.size) and multiplicative
        if relative:
            errors = errors / level[:-1]
        self.extra["alpha"] = alpha
        self.extra["relative"] = relative
        self.extra["sigma"] = float(np.sqrt(np.mean(errors**2))) if errors.size else 0.0
        return self

    def forecast_z(self, horizon):
        return self.results.forecast(horizon)

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


class _Precomputed(_Fitted):
    """A member whose forecast was made elsewhere (the global model across series): its mean
    and standard deviation per step on the modelled scale, in ``extra``."""

    def _fit(self):
        return self

    def _steps(self, horizon):
        mean = self.extra["mean"]
        if horizon > len(mean):
            raise ValueError(f"{self.name} forecasts {len(mean)} steps, {horizon} were asked for")
        return slice(0, horizon)

    def forecast_z(self, horizon):
        return np.asarray(self.extra["mean"][self._steps(horizon)], dtype="float64")

    def std_z(self, horizon):
        return np.asarray(self.extra["sd"][self._steps(horizon)], dtype="float64")


def precomputed_member(name: str, mean, sd, *, log: bool, as_log: bool = False) -> _Fitted:
    """A member from a forecast made elsewhere: ``mean`` and ``sd`` on y's scale, or on the
    log scale when ``log``. With ``as_log`` a y-scale forecast that stays positive is moved to
    the log scale (sd by the delta method), so a combination in logs can average its widths."""
    mean, sd = np.asarray(mean, dtype="float64"), np.asarray(sd, dtype="float64")
    if as_log and not log and np.all(mean > 0):
        mean, sd, log = np.log(mean), sd / mean, True
    member = _Precomputed(name=name, y=np.empty(0), period=1, log=log)
    member.extra.update(mean=mean, sd=sd)
    return member


def _positive(*arrays) -> bool:
    return all(np.all(np.asarray(a) > 0) for a in arrays)


_METHOD_CLASSES = {"snaive": _SeasonalNaive, "ets": _ETS, "mstl_ets": _MSTLETS, "theta": _Theta}


def _fit_method(
    name: str,
    y,
    *,
    period: int,
    periods=(),
    log: bool = False,
    warm: _Fitted | None = None,
    params=None,
) -> _Fitted:
    """Fit one named method on ``y`` (modelling ``log(y)`` when ``log``).

    ``warm``: the same method fitted on an earlier part of the series; ETS-based methods then
    reuse its smoothing parameters instead of estimating them again (rolling origins).
    ``params``: smoothing parameters to use as they are (a stored choice); they are estimated
    afresh when they do not fit the model.
    """
    cls = _METHOD_CLASSES[name]
    fitted = cls(
        name=name,
        y=np.asarray(y, dtype="float64"),
        period=period,
        periods=tuple(periods or ()),
        log=log,
    )
    warm_params = getattr(getattr(warm, "results", None), "params", None)
    # the same model: plain ETS has one season; MSTL's adjusted series depends on all of them
    same = warm is not None and warm.log == log and warm.period == fitted.period
    if name == "mstl_ets":
        same = same and warm.periods == _mstl_periods(len(fitted.y), fitted.periods, period)
    if params is not None:
        fitted.extra["warm_params"] = np.asarray(params, dtype="float64")
    elif warm_params is not None and same:
        fitted.extra["warm_params"] = np.asarray(warm_params, dtype="float64")
    return fitted._fit()


def member_params(model: _Fitted) -> dict[str, list[float]]:
    """The smoothing parameters of a fitted model's ETS-based members (a single method or a
    combination's), by method name, as plain lists for JSON."""
    members = model.extra.get("members") if isinstance(model, _Combo) else [(1.0, model)]
    return {
        m.name: [float(v) for v in m.results.params]
        for _, m in members
        if isinstance(m.results, ETSResults)
    }


def uses_log(name: str, log: bool, log_methods) -> bool:
    """Whether method ``name`` models ``log(y)``: the series allows it (``log``) and the method
    is among ``log_methods`` (``None``: every method)."""
    return bool(log) and (log_methods is None or name in log_methods)


def _fit_combo(
    weights: dict[str, float],
    y,
    *,
    period,
    periods,
    log,
    scales,
    log_methods=None,
    warm=None,
    params=None,
    external=None,
) -> _Fitted:
    """Fit the weighted members on ``y``; ``warm`` (name -> an earlier fit of that member) or
    ``params`` (name -> stored smoothing parameters) let ETS-based members reuse parameters
    instead of estimating them again; ``external`` (name -> a member made elsewhere, such as
    the global model's forecast) supplies members that are not fitted here."""
    members = []
    warm, params, external = warm or {}, params or {}, external or {}
    for name, w in weights.items():
        if name in external:
            member = external[name]
            member.scale = scales.get(name, 1.0)
            members.append((float(w), member))
            continue
        member = _fit_method(
            name,
            y,
            period=period,
            periods=periods,
            log=uses_log(name, log, log_methods),
            warm=warm.get(name),
            params=params.get(name),
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
