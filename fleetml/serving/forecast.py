"""Serving the forecast family: the champion ``fleetml-forecast`` bundle, or seasonal naive.

:class:`ServedForecast` forecasts one metric per account (or per group's sum) from the end of
its history. It reuses the library's series preparation and per-series job
(:func:`fleetml.models.forecast.account_series`, :func:`~fleetml.models.forecast.group_series`,
:func:`~fleetml.models.forecast.forecast_job`); the champion bundle supplies the method per
series, and without a usable champion every series is forecast by seasonal naive
(``version`` None, ``fallback`` True, ``reason`` says why).

Like ``fleetml forecast`` by default, serving never aggregates history to a coarser step:
forecasts are at the data's own sampling step. History longer than ``max_points`` steps is cut
(oldest points dropped) and :attr:`SeriesForecast.history_cut` says so.

Training imports :data:`MODEL_NAME` from here, never the reverse.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fleetml.models.forecast import (
    SeriesJob,
    account_series,
    fleet_step,
    forecast_job,
    group_series,
)
from fleetml.serving.base import RESULT_COLUMNS, empty_result
from fleetml.serving.registry import registry_missing

if TYPE_CHECKING:  # pragma: no cover
    from fleetml.config import Settings

log = logging.getLogger("fleetml.serving")

MODEL_NAME = "fleetml-forecast"
FAMILY = "forecast"
#: History a served forecast reads: two weeks, so an hourly series shows two weekly cycles.
DEFAULT_LOOKBACK = pd.Timedelta("14D")
#: Most points one served series keeps (a week of 5-minute samples, 84 days of hourly ones).
#: Longer history is cut, never aggregated to a coarser step.
DEFAULT_MAX_POINTS = 2016
#: Interval columns of a result, from the forecaster's 80 % and 95 % levels.
INTERVAL_COLUMNS = {
    "lo80": "yhat_lower_80",
    "hi80": "yhat_upper_80",
    "lo95": "yhat_lower_95",
    "hi95": "yhat_upper_95",
}
_FALLBACK_CHOICE = {"method": "snaive"}
#: fleet_step coarsens a history longer than its max_points; with this bound it never does.
_NO_CAP = 2**62


def sampling_step(frame: pd.DataFrame) -> pd.Timedelta:
    """The fleet's sampling step: the median over accounts of each account's median gap.

    Raises ``ValueError`` when no account has two samples.
    """
    return fleet_step(frame, max_points=_NO_CAP)


@dataclass
class SeriesForecast:
    """The forecast of one series (an account's metric, or a group's sum).

    ``forecast`` is indexed by target time with ``yhat`` and ``lo80``/``hi80``/``lo95``/``hi95``;
    ``peaks`` has ``ts`` and ``yhat`` of the predicted peaks, largest first. ``error`` is set
    (and the frames are None) when the series could not be forecast at all.
    """

    scope: str
    key: str
    metric: str
    step: pd.Timedelta
    history_points: int
    history_cut: bool
    data_until: pd.Timestamp | None
    forecast: pd.DataFrame | None
    peaks: pd.DataFrame | None
    method: str | None
    error: str | None = None


class ServedForecast:
    """The forecast family behind the :class:`~fleetml.serving.base.ServedModel` protocol.

    Parameters
    ----------
    bundle : ForecastBundle or None
        The champion's bundle; ``None`` forecasts every series by seasonal naive.
    metric : str
        The metric forecast (a column of the wide frames given to the predict methods).
    kind : {"gauge", "counter"} or None
        Counters are forecast as per-minute rates. ``None``: the bundle's kind, else gauge.
    horizon : int
        Steps ahead, at the data's sampling step.
    max_points : int
        Longest history (in steps) one series keeps; older points are dropped.
    lookback : pandas.Timedelta
        History read before the newest sample (:meth:`lookback_ms`).
    reason : str or None
        Why the fallback answers (kept only when ``bundle`` is None).
    """

    family = FAMILY

    def __init__(
        self,
        bundle: Any = None,
        *,
        metric: str,
        kind: str | None = None,
        horizon: int = 24,
        max_points: int = DEFAULT_MAX_POINTS,
        lookback: pd.Timedelta = DEFAULT_LOOKBACK,
        reason: str | None = None,
    ):
        if int(horizon) < 1:
            raise ValueError(f"horizon must be at least one step, got {horizon!r}")
        if int(max_points) < 2:
            raise ValueError(f"max_points must be at least 2, got {max_points!r}")
        self.bundle = bundle
        self.metric = metric
        kinds = getattr(bundle, "metric_kinds", None) or {}
        self.kind = kind or kinds.get(metric, "gauge")
        self.horizon = int(horizon)
        self.max_points = int(max_points)
        self.lookback = pd.Timedelta(lookback)
        self.version: int | None = (
            None if bundle is None else getattr(bundle, "registered_version", None)
        )
        self.fallback = bundle is None
        self.reason = (reason or "no champion") if bundle is None else None

    @classmethod
    def load(cls, settings: Settings, *, metric: str, **kwargs) -> ServedForecast:
        """Wrap the champion ``fleetml-forecast`` bundle, or fall back to seasonal naive.

        A missing registry or champion, or a bundle that does not load or is not a forecast
        bundle, gives the fallback with the reason (logged as a warning when it is a failure).
        """
        missing = registry_missing(settings)
        if missing is not None:
            return cls(None, metric=metric, reason=missing, **kwargs)
        from fleetml.serving import registry

        try:
            bundle = registry.load_bundle(MODEL_NAME, settings=settings)
        except LookupError as exc:
            return cls(None, metric=metric, reason=str(exc), **kwargs)
        except Exception as exc:  # noqa: BLE001 - a broken champion must not stop forecasts
            log.warning(
                "the %s champion could not be loaded; using seasonal naive",
                MODEL_NAME,
                exc_info=True,
            )
            reason = f"the champion could not be loaded ({type(exc).__name__}: {exc})"
            return cls(None, metric=metric, reason=reason, **kwargs)
        if not callable(getattr(bundle, "method_for", None)):
            version = getattr(bundle, "registered_version", "?")
            log.warning("%s version %s is not a forecast bundle", MODEL_NAME, version)
            reason = (
                f"champion version {version} is not a forecast bundle ({type(bundle).__name__})"
            )
            return cls(None, metric=metric, reason=reason, **kwargs)
        return cls(bundle, metric=metric, **kwargs)

    # -- the ServedModel protocol ---------------------------------------------------------

    def lookback_ms(self) -> int:
        """History read before the newest sample (the cap on points may cut it further)."""
        return int(self.lookback / pd.Timedelta(milliseconds=1))

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Forecasts from the end of each account's history: the same as :meth:`predict_latest`.

        A forecaster answers from the end of its history; forecasts from every earlier row are
        a backtest (:mod:`fleetml.evaluation.forecast`), not serving.
        """
        return self.predict_latest(frame)

    def predict_latest(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Forecast :attr:`metric` from each account's history ending at its newest row.

        One row per (account, step): ``ts`` the target time, ``horizon`` ``"+1"``..,
        ``score`` the forecast ``yhat``, ``flag`` whether it is a predicted peak, plus
        ``lo80``, ``hi80``, ``lo95``, ``hi95``. Accounts that cannot be forecast are left out.
        """
        extra = dict.fromkeys(INTERVAL_COLUMNS, "float64")
        if not len(frame):
            return empty_result(extra)
        forecasts = self.forecast_frame(frame, scope="account")
        parts = [_result_rows(f) for f in forecasts if f.forecast is not None]
        if not parts:
            return empty_result(extra)
        out = pd.concat(parts, ignore_index=True)
        out["ts"] = out["ts"].astype("datetime64[ms, UTC]")
        out["account_id"] = out["account_id"].astype("str")
        return out[[*RESULT_COLUMNS, *INTERVAL_COLUMNS]]

    # -- series ---------------------------------------------------------------------------

    def choice(self, scope: str, key: str) -> dict:
        """How a series is forecast: the champion's stored choice, or seasonal naive."""
        if self.bundle is None:
            return dict(_FALLBACK_CHOICE)
        return self.bundle.method_for(scope, key, self.metric)

    def forecast_frame(
        self,
        frame: pd.DataFrame,
        *,
        scope: str = "account",
        groups: dict[str, str] | None = None,
        horizon: int | None = None,
    ) -> list[SeriesForecast]:
        """Forecast :attr:`metric` of a wide frame per account, or per group's sum.

        ``groups`` maps account id to group (needed for ``scope="group"``). Every series is at
        the frame's sampling step; each keeps at most :attr:`max_points` of its newest points.
        Raises ``ValueError`` when the frame lacks the metric or no account has two samples.
        """
        if scope not in ("account", "group"):
            raise ValueError(f"scope must be 'account' or 'group', got {scope!r}")
        if self.metric not in frame.columns:
            raise ValueError(f"metric {self.metric!r} is not in the frame")
        horizon = self.horizon if horizon is None else int(horizon)
        # the step is that of the samples carrying the metric
        observed = frame[self.metric].notna().to_numpy()
        frame = frame.loc[observed, ["ts", "account_id", self.metric]].reset_index(drop=True)
        step = sampling_step(frame)
        frame = self._recent(frame, step)
        per_account = account_series(frame, self.metric, kind=self.kind, step=step)
        if scope == "group":
            series = group_series(per_account, groups or {})
        else:
            series = per_account
        return [self._forecast_one(scope, key, s, step, horizon) for key, s in series.items()]

    def _recent(self, frame: pd.DataFrame, step: pd.Timedelta) -> pd.DataFrame:
        """Drop rows older than what the newest ``max_points`` steps (and two spare) need."""
        newest = frame.groupby("account_id", sort=False)["ts"].transform("max")
        # two spare steps: a counter's first sample has no rate, and a cut must stay visible
        # as a series longer than max_points
        keep = frame["ts"] > newest - (self.max_points + 2) * step
        return frame[keep.to_numpy()]

    def _forecast_one(
        self, scope: str, key: str, series: pd.Series, step: pd.Timedelta, horizon: int
    ) -> SeriesForecast:
        cut = len(series) > self.max_points
        series = series.iloc[-self.max_points :]
        choice = self.choice(scope, key)
        result = forecast_job(SeriesJob.from_choice(key, self.metric, series, horizon, choice))
        if result["error"] and choice.get("method") != "snaive":
            # the champion's method failed on this history: seasonal naive still answers
            log.warning(
                "forecast of %s %s failed (%s); using seasonal naive", scope, key, result["error"]
            )
            job = SeriesJob.from_choice(key, self.metric, series, horizon, _FALLBACK_CHOICE)
            result = forecast_job(job)
        base = dict(
            scope=scope,
            key=str(key),
            metric=self.metric,
            step=step,
            history_points=len(series),
            history_cut=cut,
            data_until=series.index[-1] if len(series) else None,
        )
        if result["error"]:
            return SeriesForecast(
                **base, forecast=None, peaks=None, method=None, error=result["error"]
            )
        raw = result["forecast"]
        forecast = pd.DataFrame({"yhat": raw["yhat"].to_numpy(dtype="float64")}, index=raw.index)
        for column, source in INTERVAL_COLUMNS.items():
            forecast[column] = raw[source].to_numpy(dtype="float64")
        peaks = result["peaks"][["ts", "yhat"]].reset_index(drop=True)
        return SeriesForecast(
            **base, forecast=forecast, peaks=peaks, method=result["summary"]["method"]
        )


def _result_rows(f: SeriesForecast) -> pd.DataFrame:
    """One forecast as rows of the common result shape."""
    fc = f.forecast
    n = len(fc)
    out = pd.DataFrame(
        {
            "ts": fc.index,
            "account_id": f.key,
            "family": FAMILY,
            "horizon": [f"+{k}" for k in range(1, n + 1)],
            "score": fc["yhat"].to_numpy(),
            "flag": np.isin(fc.index, pd.DatetimeIndex(f.peaks["ts"])),
        }
    )
    for column in INTERVAL_COLUMNS:
        out[column] = fc[column].to_numpy()
    return out
