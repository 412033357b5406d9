"""Forecast stored metrics per account or per master group (the group's sum).

Reads history from the store, builds one regular series per (account or group, metric) with
:mod:`fleetml.models.forecast`, and runs the per-series work through
:func:`fleetml.parallel.run_parallel` (local processes, or a Dask cluster).

The served side (the API and the hourly job) goes through
:class:`fleetml.serving.forecast.ServedForecast` at the data's own sampling step and keeps its
answers in the ``forecasts`` cache: :func:`refresh_forecasts` writes every group's forecast,
:func:`cached_forecast` answers one target from the cache or computes and caches it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from fleetml.errors import InvalidInput, NotFound
from fleetml.timestamps import format_step

if TYPE_CHECKING:  # pragma: no cover
    from fleetml.config import Settings
    from fleetml.serving.forecast import SeriesForecast, ServedForecast


@dataclass
class History:
    frame: pd.DataFrame
    kinds: dict[str, str]
    metrics: list[str]
    groups: dict[str, str]


@dataclass
class ForecastRun:
    """Forecasts in the long output format, plus the per-series results (peaks, methods).

    ``step`` is the forecast step, ``native_step`` the data's own sampling step; when they
    differ the history was aggregated and ``aggregation_reason`` says why. ``history_cut``
    counts the series whose oldest points were dropped to keep ``max_points``.
    ``global_model`` says whether the global gradient-boosting member was fitted for the run
    (``used``, ``series``, ``reason``); ``None`` when it was turned off or a champion chose.
    """

    table: pd.DataFrame
    results: list[dict]
    step: pd.Timedelta
    horizon_steps: int
    native_step: pd.Timedelta | None = None
    aggregation_reason: str | None = None
    max_points: int | None = None
    global_model: dict | None = None

    @property
    def aggregated(self) -> bool:
        return self.native_step is not None and self.step != self.native_step

    @property
    def history_cut(self) -> int:
        return sum(bool(r.get("history_cut")) for r in self.results)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if r["error"]]


def load_history(
    engine,
    *,
    metrics: Sequence[str] = (),
    accounts: Sequence[str] = (),
    group: str | None = None,
    start=None,
    end=None,
) -> History:
    """Wide frame, metric kinds and the account -> group map for the requested series.

    Raises ``InvalidInput`` for unknown metrics, ``NotFound`` for a group without accounts or
    a selection without samples.
    """
    from fleetml.store.accounts import accounts_frame
    from fleetml.store.metrics import metric_kinds, read_metrics

    kinds = metric_kinds(engine)
    if not kinds:
        raise InvalidInput("the store holds no metrics yet; import or ingest samples first")
    metrics = list(metrics) or sorted(kinds)
    unknown = [m for m in metrics if m not in kinds]
    if unknown:
        raise InvalidInput(
            f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(sorted(kinds))}"
        )
    registry = accounts_frame(engine)
    groups = {
        str(a): g
        for a, g in zip(registry["account_id"], registry["group"], strict=True)
        if isinstance(g, str) and g
    }
    if group is not None:
        members = sorted(a for a, g in groups.items() if g == group)
        if not members:
            known = ", ".join(sorted(set(groups.values()))) or "none"
            raise NotFound(f"group {group!r} has no accounts; known groups: {known}")
        accounts = tuple(members)
    frame = read_metrics(
        engine, accounts=list(accounts) or None, metrics=metrics, start=start, end=end
    )
    if frame.empty:
        raise NotFound(
            "no samples match the selection; check the time range, accounts, group and metrics"
        )
    return History(frame, kinds, metrics, groups)


def build_jobs(
    history: History,
    *,
    group: str | None,
    scope: str,
    horizon: str | int,
    max_points: int | None,
    method_for: Callable[[str, str, str], dict],
    step: str | pd.Timedelta | None = None,
):
    """One :class:`SeriesJob` per (series, metric), the :class:`StepChoice` and the horizon in
    steps.

    Series are at the data's own sampling step unless ``step`` asks for a coarser one; each
    keeps its newest ``max_points`` points (older history is dropped, never aggregated).
    """
    from fleetml.models.forecast import (
        SeriesJob,
        account_series,
        forecast_step,
        group_series,
        parse_horizon,
        recent,
    )

    try:  # a bad horizon or unusable history: say so as an input error, not a traceback
        choice = forecast_step(history.frame, step)
        step = choice.step
        steps = parse_horizon(horizon, step)
        per_metric = {
            metric: account_series(
                history.frame, metric, kind=history.kinds.get(metric, "gauge"), step=step
            )
            for metric in history.metrics
        }
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    jobs = []
    for metric, per_account in per_metric.items():
        if scope == "group":
            wanted = {a: history.groups[a] for a in per_account if a in history.groups}
            series = group_series(per_account, wanted)
            if group is not None:
                series = {k: v for k, v in series.items() if k == group}
        else:
            series = per_account
        for key, s in series.items():
            s, cut = recent(s, max_points)
            job = SeriesJob.from_choice(key, metric, s, steps, method_for(scope, key, metric))
            job.history_cut = cut
            jobs.append(job)
    if not jobs:
        raise InvalidInput("no series has at least two usable samples to forecast from")
    return jobs, choice, steps


def forecast_store(
    engine,
    *,
    metrics: Sequence[str] = (),
    accounts: Sequence[str] = (),
    group: str | None = None,
    horizon: str | int = "24h",
    start=None,
    end=None,
    max_points: int | None = None,
    step: str | None = None,
    bundle=None,
    n_jobs: int | None = None,
    dask_address: str | None = None,
    progress: bool | None = None,
    global_model: bool = True,
) -> ForecastRun:
    """Forecast stored history: per account, or the sum of ``group``.

    Forecasts are at the data's own sampling step unless ``step`` asks for a coarser one; a
    series longer than ``max_points`` keeps its newest points (default
    :data:`fleetml.models.forecast.DEFAULT_MAX_POINTS`).

    ``bundle`` (a trained ``fleetml-forecast`` champion) supplies the method per series; without
    it each series chooses its method by validation. ``progress``: a bar on stderr over the
    series, always (True), never (False) or when stderr is a terminal (None).

    ``global_model``: without a champion, first fit one gradient-boosting model across all the
    run's series (:func:`fleetml.models.forecasting.fleet.add_global_member`) and let each
    series weigh its forecast beside its own methods on its validation origins.
    """
    from fleetml.models.forecast import DEFAULT_MAX_POINTS, forecast_job, long_forecast_frame
    from fleetml.models.forecasting.fleet import add_global_member
    from fleetml.parallel import run_parallel

    max_points = DEFAULT_MAX_POINTS if max_points is None else int(max_points)
    if group and accounts:
        raise InvalidInput("use either accounts or a group, not both")
    history = load_history(
        engine, metrics=metrics, accounts=accounts, group=group, start=start, end=end
    )
    scope = "group" if group else "account"
    method_for = bundle.method_for if bundle is not None else (lambda *_: {"method": "auto"})
    jobs, choice, steps = build_jobs(
        history,
        group=group,
        scope=scope,
        horizon=horizon,
        max_points=max_points,
        method_for=method_for,
        step=step,
    )
    global_report = None
    if global_model and bundle is None:
        global_report = add_global_member(jobs, n_jobs=2 if (n_jobs or 1) > 1 else 1)
    results = run_parallel(
        forecast_job,
        jobs,
        n_jobs=n_jobs,
        dask_address=dask_address,
        desc="forecast",
        progress=progress,
    )
    table = long_forecast_frame(results, key_column="group" if group else "account_id")
    return ForecastRun(
        table,
        results,
        choice.step,
        steps,
        native_step=choice.native,
        aggregation_reason=choice.reason,
        max_points=max_points,
        global_model=global_report,
    )


def champion_bundle(settings=None):
    """The champion ``fleetml-forecast`` bundle, or ``None`` when nothing was trained yet."""
    from fleetml.serving import registry

    try:
        return registry.load_bundle("fleetml-forecast", settings=settings)
    except LookupError:
        return None


# --- served forecasts and their cache -----------------------------------------------------

#: A cached forecast older than this many refresh periods (``forecast_every_s``) is recomputed.
STALE_AFTER_REFRESHES = 2
#: How many known groups an error message lists.
_LIST_LIMIT = 20


def served_forecast(settings: Settings, *, metric: str, kind: str, horizon: int) -> ServedForecast:
    """The champion forecaster of ``metric`` (or the seasonal-naive fallback)."""
    from fleetml.serving.forecast import ServedForecast

    return ServedForecast.load(settings, metric=metric, kind=kind, horizon=horizon)


def _metric_kind(engine, metric: str) -> str:
    from fleetml.store.metrics import metric_kinds

    kinds = metric_kinds(engine)
    if metric not in kinds:
        known = ", ".join(sorted(kinds)[:_LIST_LIMIT]) or "none yet"
        raise InvalidInput(
            f"metric {metric!r} is not stored, so it cannot be forecast; known metrics: {known}"
        )
    return kinds[metric]


def _members(engine, *, scope: str, target: str) -> dict[str, str]:
    """Account -> group of the accounts a target covers; ``NotFound`` when there are none."""
    from fleetml.store.accounts import accounts_frame

    registry = accounts_frame(engine)
    groups = {
        str(a): g
        for a, g in zip(registry["account_id"], registry["group"], strict=True)
        if isinstance(g, str) and g
    }
    if scope == "account":
        if target not in set(registry["account_id"].astype(str)):
            raise NotFound(f"account {target!r} is not registered (or is retired)")
        return {target: groups.get(target, "")}
    if scope != "group":
        raise InvalidInput(f"scope must be 'account' or 'group', got {scope!r}")
    members = {a: g for a, g in groups.items() if g == target}
    if not members:
        known = sorted(set(groups.values()))
        listed = ", ".join(known[:_LIST_LIMIT]) + (", ..." if len(known) > _LIST_LIMIT else "")
        raise NotFound(f"group {target!r} has no active accounts; known groups: {listed or 'none'}")
    return members


def _window(engine, *, lookback_ms: int, now_ms: int | None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The history to read: ``lookback_ms`` up to the newest stored sample (or ``now_ms``)."""
    from fleetml.store.metrics import time_range

    _, newest = time_range(engine)
    if newest is None:
        raise NotFound("the store holds no samples yet; ingest metrics before forecasting")
    end = newest if now_ms is None else min(newest, pd.Timestamp(int(now_ms), unit="ms", tz="UTC"))
    return end - pd.Timedelta(milliseconds=lookback_ms), end


def _iso(ts) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%f")[:23] + "Z"


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def forecast_record(
    result: SeriesForecast, *, model: ServedForecast, horizon: int, computed_at: int
) -> dict[str, Any]:
    """A row of the ``forecasts`` cache for one series forecast (:mod:`fleetml.store.forecasts`)."""
    fc = result.forecast
    stamps = [_iso(t) for t in fc.index]
    columns = {c: fc[c].to_numpy().tolist() for c in ("yhat", "lo80", "hi80", "lo95", "hi95")}
    points = [
        {"ts": stamps[i], **{c: _finite(v[i]) for c, v in columns.items()}}
        for i in range(len(stamps))
    ]
    peaks = [
        {"ts": _iso(t), "yhat": _finite(y)}
        for t, y in zip(result.peaks["ts"], result.peaks["yhat"], strict=True)
    ]
    payload = {
        "step": format_step(result.step),
        "step_seconds": result.step.total_seconds(),
        "points": points,
        "peaks": peaks,
        "fallback": model.fallback,
        "fallback_reason": model.reason,
        "method": result.method,
        # counters are forecast as their per-minute rate (fleetml.models.forecast.counter_to_rate)
        "values": "rate_per_minute" if model.kind == "counter" else "value",
        "data_until": None if result.data_until is None else _iso(result.data_until),
        "history_points": result.history_points,
        "history_cut": result.history_cut,
        "max_points": model.max_points,
    }
    return {
        "scope": result.scope,
        "target": result.key,
        "metric": result.metric,
        "horizon": int(horizon),
        "computed_at": int(computed_at),
        "model_version": model.version,
        "payload": payload,
    }


def compute_forecast(
    engine,
    settings: Settings,
    *,
    scope: str,
    target: str,
    metric: str,
    horizon: int,
    now_ms: int | None = None,
    model: ServedForecast | None = None,
) -> dict[str, Any]:
    """Forecast one account's metric (or a group's sum) now; returns a cache row, unstored.

    Raises ``InvalidInput`` for an unknown metric, ``NotFound`` for an unknown target or one
    without enough recent history to forecast.
    """
    from fleetml.store.audit import now_ms as clock

    kind = _metric_kind(engine, metric)
    members = _members(engine, scope=scope, target=target)
    model = model or served_forecast(settings, metric=metric, kind=kind, horizon=horizon)
    start, end = _window(engine, lookback_ms=model.lookback_ms(), now_ms=now_ms)
    try:
        history = load_history(
            engine, metrics=[metric], accounts=list(members), start=start, end=end
        )
    except NotFound:
        raise NotFound(
            f"{scope} {target!r} has no {metric} samples between {_iso(start)} and {_iso(end)} "
            f"(the {model.lookback} before the newest stored sample); nothing to forecast from"
        ) from None
    try:
        results = model.forecast_frame(history.frame, scope=scope, groups=members, horizon=horizon)
    except ValueError as exc:
        raise NotFound(
            f"{scope} {target!r} has too little {metric} history to forecast: {exc}"
        ) from exc
    result = next((r for r in results if r.key == target), None)
    if result is None or result.forecast is None:
        why = "fewer than two usable samples" if result is None else result.error
        raise NotFound(
            f"{scope} {target!r} cannot be forecast from its {metric} samples between "
            f"{_iso(start)} and {_iso(end)}: {why}"
        )
    computed_at = clock() if now_ms is None else int(now_ms)
    return forecast_record(result, model=model, horizon=horizon, computed_at=computed_at)


def cached_forecast(
    engine,
    settings: Settings,
    *,
    scope: str,
    target: str,
    metric: str,
    horizon: int,
    now_ms: int | None = None,
    write: Callable[[Callable], Any] | None = None,
) -> dict[str, Any]:
    """One forecast from the cache, or computed and cached when missing or stale.

    A cached row older than ``STALE_AFTER_REFRESHES`` refresh periods is recomputed. ``write``
    runs ``work(conn)`` in a committed transaction (the API passes its single writer); default
    a transaction of ``engine``. The answer is the cache row plus ``cached`` (True when it came
    from the cache).
    """
    from fleetml.store.audit import now_ms as clock
    from fleetml.store.forecasts import read_forecast, write_forecasts

    _metric_kind(engine, metric)  # unknown metrics and targets fail before the cache is read
    _members(engine, scope=scope, target=target)
    now = clock() if now_ms is None else int(now_ms)
    row = read_forecast(engine, scope=scope, target=target, metric=metric, horizon=horizon)
    max_age_ms = STALE_AFTER_REFRESHES * settings.forecast_every_s * 1000
    if row is not None and now - row["computed_at"] <= max_age_ms:
        return {**row, "cached": True}
    record = compute_forecast(
        engine,
        settings,
        scope=scope,
        target=target,
        metric=metric,
        horizon=horizon,
        now_ms=now_ms,
    )
    if write is None:
        with engine.begin() as conn:
            write_forecasts(conn, [record])
    else:
        write(lambda conn: write_forecasts(conn, [record]))
    return {**record, "cached": False}


def refresh_forecasts(engine, settings: Settings, *, now_ms: int | None = None) -> dict[str, Any]:
    """Forecast ``settings.forecast_metric`` for every group and store the forecasts together.

    Each group's sum is forecast ``settings.forecast_horizon`` steps ahead at the data's own
    sampling step, and every forecast is written in one transaction. Returns counts:
    ``groups`` forecast, ``accounts`` whose history was read, ``series`` stored, ``failed``,
    ``seconds``, ``model_version`` (None for the fallback), ``fallback``, ``step_seconds``;
    plus ``reason`` when there was nothing to forecast.
    """
    from fleetml.store.accounts import accounts_frame
    from fleetml.store.audit import now_ms as clock
    from fleetml.store.forecasts import write_forecasts, write_history

    started = time.perf_counter()
    metric, horizon = settings.forecast_metric, settings.forecast_horizon
    counts: dict[str, Any] = {
        "groups": 0,
        "accounts": 0,
        "series": 0,
        "failed": 0,
        "seconds": 0.0,
        "model_version": None,
        "fallback": None,
        "step_seconds": None,
    }

    def done(**more) -> dict[str, Any]:
        counts.update(more)
        counts["seconds"] = round(time.perf_counter() - started, 3)
        return counts

    try:
        kind = _metric_kind(engine, metric)
    except InvalidInput as exc:
        return done(reason=str(exc))
    registry = accounts_frame(engine)
    groups = {
        str(a): g
        for a, g in zip(registry["account_id"], registry["group"], strict=True)
        if isinstance(g, str) and g
    }
    if not groups:
        return done(reason="no account belongs to a group")
    model = served_forecast(settings, metric=metric, kind=kind, horizon=horizon)
    counts.update(model_version=model.version, fallback=model.fallback)
    try:
        start, end = _window(engine, lookback_ms=model.lookback_ms(), now_ms=now_ms)
        history = load_history(
            engine, metrics=[metric], accounts=list(groups), start=start, end=end
        )
        results = model.forecast_frame(history.frame, scope="group", groups=groups)
    except (NotFound, ValueError) as exc:
        return done(reason=str(exc))
    computed_at = clock() if now_ms is None else int(now_ms)
    rows = [
        forecast_record(r, model=model, horizon=horizon, computed_at=computed_at)
        for r in results
        if r.forecast is not None
    ]
    with engine.begin() as conn:
        write_forecasts(conn, rows)
        write_history(conn, rows)  # to measure them against what happens
    return done(
        groups=len(results),
        accounts=int(history.frame["account_id"].nunique()),
        series=len(rows),
        failed=len(results) - len(rows),
        step_seconds=results[0].step.total_seconds() if results else None,
    )


def forecast_accuracy(
    engine, settings: Settings, *, group: str, metric: str | None = None, days: float = 7.0
) -> dict[str, Any]:
    """The hourly job's past forecasts of a group against what happened.

    Every forecast kept in the history (made in the last ``days``) is compared, point by point,
    with the group's actual series at the same step (the sum of its accounts; counters as
    per-minute rates, as forecast): ``runs`` has per forecast the points that came true so far
    (``n``), sMAPE, MAE and how many actual points fell inside the 80 % and 95 % bands;
    ``overlay`` is the newest forecast that fully came true, with ``actual`` beside each point.
    """
    from fleetml.evaluation.forecast import smape
    from fleetml.models.forecast import account_series, group_series
    from fleetml.store.forecasts import read_history
    from fleetml.store.metrics import time_range

    metric = metric or settings.forecast_metric
    kind = _metric_kind(engine, metric)
    _, newest = time_range(engine)
    if newest is None:
        raise NotFound("the store holds no samples yet")
    since = int(newest.value // 1_000_000) - int(days * 86_400_000)
    past = read_history(engine, scope="group", target=group, metric=metric, since_ms=since)
    out: dict[str, Any] = {"group": group, "metric": metric, "runs": [], "overlay": None}
    if not past:
        return out
    step = pd.Timedelta(seconds=float(past[-1]["payload"]["step_seconds"]))
    first = min(
        pd.Timestamp(p["payload"]["points"][0]["ts"]) for p in past if p["payload"]["points"]
    )
    history = load_history(
        engine, metrics=[metric], group=group, start=first - 2 * step, end=newest
    )
    per_account = account_series(history.frame, metric, kind=kind, step=step)
    actual = group_series(per_account, history.groups).get(group)
    if actual is None or actual.empty:
        return out
    out["step_seconds"] = step.total_seconds()
    for record in past:
        points = pd.DataFrame(record["payload"]["points"])
        if points.empty:
            continue
        points["ts"] = pd.to_datetime(points["ts"], utc=True)
        points["actual"] = actual.reindex(pd.DatetimeIndex(points["ts"])).to_numpy()
        came = points.dropna(subset=["actual", "yhat"])
        if came.empty:
            continue
        y, f = came["actual"].to_numpy(), came["yhat"].to_numpy()
        inside = {
            level: float(((came[f"lo{level}"] <= y) & (y <= came[f"hi{level}"])).mean())
            for level in (80, 95)
        }
        out["runs"].append(
            {
                "computed_at": int(record["computed_at"]),
                "model_version": record["model_version"],
                "n": len(came),
                "horizon": int(record["horizon"]),
                "smape": smape(y, f),
                "mae": float(abs(y - f).mean()),
                "coverage80": inside[80],
                "coverage95": inside[95],
            }
        )
        if len(came) == len(points):  # fully came true: the newest such one is the overlay
            shown = points.assign(ts=points["ts"].map(_iso))
            out["overlay"] = {
                "computed_at": int(record["computed_at"]),
                "points": shown.astype(object).where(shown.notna(), None).to_dict(orient="records"),
            }
    return out
