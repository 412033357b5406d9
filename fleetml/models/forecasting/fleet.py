"""Many series: one regular series per account or group, one job per series, one long table.

:func:`forecast_step` picks the step (the data's own unless a coarser one is asked for),
:func:`account_series` and :func:`group_series` build the series, :func:`recent` keeps the
newest points of each, :func:`forecast_job` fits and forecasts one :class:`SeriesJob` (picklable
for :func:`fleetml.parallel.run_parallel`), :func:`long_forecast_frame` stacks the results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fleetml.models.forecasting.methods import DEFAULT_LEVELS
from fleetml.models.forecasting.selection import LoadForecaster, find_peaks
from fleetml.models.forecasting.series import (
    choose_forecast_step,
    counter_to_rate,
    regular_step,
    to_regular_series,
)
from fleetml.timestamps import format_step


def fleet_step(frame: pd.DataFrame, *, max_points: int | None = None) -> pd.Timedelta:
    """The sampling step of a whole wide frame (so accounts line up and groups can be summed).

    It is the median over accounts of each account's median gap. With ``max_points`` (an older
    calling convention, kept for callers that want it) the step is instead
    :func:`choose_forecast_step` for the frame's time span, which may be coarser.
    """
    if frame.empty:
        raise ValueError("no samples to forecast from; check --from/--to, --account and --metric")
    ts = frame["ts"]
    gaps = ts.groupby(frame["account_id"]).diff().dropna()
    gaps = gaps[gaps > pd.Timedelta(0)]
    if gaps.empty:
        raise ValueError("every account has a single sample; forecasting needs a history")
    sampling = gaps.groupby(frame.loc[gaps.index, "account_id"]).median().median()
    sampling = regular_step(pd.Timedelta(sampling))
    if max_points is None:
        return sampling
    return choose_forecast_step(pd.Timedelta(sampling), ts.max() - ts.min(), max_points=max_points)


@dataclass(frozen=True)
class StepChoice:
    """The forecast step of a run and why: ``native`` is the data's own sampling step;
    ``aggregated`` is True when ``step`` is coarser, and ``reason`` then says why."""

    step: pd.Timedelta
    native: pd.Timedelta
    reason: str | None = None

    @property
    def aggregated(self) -> bool:
        return self.step != self.native


def forecast_step(frame: pd.DataFrame, step=None) -> StepChoice:
    """The step to forecast a wide frame at: its own sampling step, or ``step`` when given.

    ``step`` (a duration such as ``"1h"``) may not be finer than the sampling step: averaging
    cannot invent samples. Raises ``ValueError`` otherwise or when the duration is unreadable.
    """
    native = fleet_step(frame)
    if step is None:
        return StepChoice(native, native)
    try:
        wanted = pd.Timedelta(step)
    except ValueError as exc:
        raise ValueError(f"step {step!r} is not a duration like 1h, 30min or 1D") from exc
    if wanted < native:
        raise ValueError(
            f"step {step} is finer than the data's sampling step ({format_step(native)}); "
            "ask for the sampling step or a coarser one"
        )
    if wanted == native:
        return StepChoice(native, native)
    return StepChoice(
        wanted, native, f"aggregated to the requested step {step} from {format_step(native)}"
    )


def recent(series: pd.Series, max_points: int | None) -> tuple[pd.Series, bool]:
    """The newest ``max_points`` points of a series (older history is dropped, never averaged
    into a coarser step) and whether anything was cut."""
    if max_points is None or len(series) <= int(max_points):
        return series, False
    return series.iloc[-int(max_points) :], True


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
    history_cut: bool = False
    member_params: dict | None = None
    global_member: dict | None = None

    @classmethod
    def from_choice(cls, key, metric, series, horizon, choice: dict | None) -> SeriesJob:
        """A job using a stored choice (``method``, ``weights``, ``interval_scales`` and, from
        champions trained since ETS parameters are stored, ``member_params``)."""
        choice = choice or {}
        return cls(
            key,
            metric,
            series,
            horizon,
            method=choice.get("method", "auto"),
            weights=choice.get("weights"),
            interval_scales=choice.get("interval_scales"),
            member_params=choice.get("member_params"),
        )


def validation_horizon(job: SeriesJob) -> int:
    """The validation window of a job: its own, else the forecast horizon (so the conformal
    scores cover the steps asked for), at least 12 steps and at most a fifth of the history."""
    if job.validation_horizon is not None:
        return int(job.validation_horizon)
    return max(12, min(int(job.horizon), len(job.series) // 5))


def forecast_job(job: SeriesJob) -> dict:
    """Fit and forecast one :class:`SeriesJob`; returns forecast, peaks and what was chosen.

    A series that cannot be modelled at all (e.g. fewer than two points) gets an ``error``
    entry instead of raising, so one bad account never sinks a fleet-wide run.
    """
    try:
        model = LoadForecaster(
            job.method,
            levels=job.levels,
            validation_horizon=validation_horizon(job),
            combo_weights=job.weights,
            interval_scales=job.interval_scales,
            member_params=job.member_params,
            global_member=job.global_member,
        ).fit(job.series)
        forecast = model.predict(job.horizon)
        return {
            "key": job.key,
            "metric": job.metric,
            "forecast": forecast,
            "peaks": find_peaks(forecast),
            "summary": model.summary(),
            "history_cut": job.history_cut,
            "error": None,
        }
    except (ValueError, np.linalg.LinAlgError) as exc:
        return {
            "key": job.key,
            "metric": job.metric,
            "forecast": None,
            "peaks": None,
            "summary": None,
            "history_cut": job.history_cut,
            "error": f"{type(exc).__name__}: {exc}",
        }


#: Fewest series validated by ``"auto"`` for :func:`add_global_member` to fit a global model.
MIN_GLOBAL_SERIES = 5


def add_global_member(
    jobs: list[SeriesJob],
    *,
    min_series: int = MIN_GLOBAL_SERIES,
    max_rows: int = 200_000,
    random_state: int = 0,
    n_jobs: int = 1,
) -> dict:
    """Fit the global gradient-boosting model across the ``"auto"`` jobs of a run and attach its
    forecasts to each job (``job.global_member``), causal for each job's validation origins.

    Jobs with a stored choice (a champion's method) are left alone. Does nothing when fewer
    than ``min_series`` jobs can be validated, the jobs are not at one step, or the history is
    too short for the model; ``n_jobs`` of 2 or more fits its two models side by side. Returns
    what was done, for the run's report: ``used`` (bool),
    ``series`` (jobs given a forecast) and ``reason`` when not used.
    """
    from fleetml.models.forecasting.global_gbm import global_member_forecasts

    candidates, origins = [], []
    for job in jobs:
        if job.method != "auto":
            continue
        probe = LoadForecaster(levels=job.levels, validation_horizon=validation_horizon(job))
        try:
            found = probe.validation_origins(job.series)
        except ValueError:
            continue
        if found:
            candidates.append((job, probe))
            origins.append(found)
    if len(candidates) < max(1, int(min_series)):
        return {"used": False, "series": 0, "reason": f"{len(candidates)} series to validate"}
    steps = {probe.step_ for _, probe in candidates}
    if len(steps) != 1:
        return {"used": False, "series": 0, "reason": "the series are not at one step"}
    periods = candidates[0][1].seasonal_periods_
    try:
        forecasts = global_member_forecasts(
            [job.series.to_numpy(dtype="float64") for job, _ in candidates],
            origins=origins,
            horizon=max(job.horizon for job, _ in candidates),
            period=periods[0] if periods else 1,
            long_period=periods[1] if len(periods) > 1 else None,
            validation_horizons=[validation_horizon(job) for job, _ in candidates],
            max_rows=max_rows,
            random_state=random_state,
            n_jobs=n_jobs,
        )
    except ValueError as exc:
        return {"used": False, "series": 0, "reason": str(exc)}
    for (job, _), fc in zip(candidates, forecasts, strict=True):
        job.global_member = fc
    return {"used": True, "series": sum(fc is not None for fc in forecasts), "reason": None}


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
