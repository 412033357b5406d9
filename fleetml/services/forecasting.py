"""Forecast stored metrics per account or per master group (the group's sum).

Reads history from the store, builds one regular series per (account or group, metric) with
:mod:`fleetml.models.forecast`, and runs the per-series work through
:func:`fleetml.parallel.run_parallel` (local processes, or a Dask cluster).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from fleetml.errors import InvalidInput


@dataclass
class History:
    frame: pd.DataFrame
    kinds: dict[str, str]
    metrics: list[str]
    groups: dict[str, str]


@dataclass
class ForecastRun:
    """Forecasts in the long output format, plus the per-series results (peaks, methods)."""

    table: pd.DataFrame
    results: list[dict]
    step: pd.Timedelta
    horizon_steps: int

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
    """Wide frame, metric kinds and the account -> group map for the requested series."""
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
            raise InvalidInput(f"group {group!r} has no accounts; known groups: {known}")
        accounts = tuple(members)
    frame = read_metrics(
        engine, accounts=list(accounts) or None, metrics=metrics, start=start, end=end
    )
    if frame.empty:
        raise InvalidInput(
            "no samples match the selection; check --from/--to, --account, --group and --metric"
        )
    return History(frame, kinds, metrics, groups)


def build_jobs(
    history: History,
    *,
    group: str | None,
    scope: str,
    horizon: str | int,
    max_points: int,
    method_for: Callable[[str, str, str], dict],
):
    """One :class:`SeriesJob` per (series, metric), plus the forecast step and horizon in steps."""
    from fleetml.models.forecast import (
        SeriesJob,
        account_series,
        fleet_step,
        group_series,
        parse_horizon,
    )

    try:  # a bad horizon or unusable history: say so as an input error, not a traceback
        step = fleet_step(history.frame, max_points=max_points)
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
            jobs.append(
                SeriesJob.from_choice(key, metric, s, steps, method_for(scope, key, metric))
            )
    if not jobs:
        raise InvalidInput("no series has at least two usable samples to forecast from")
    return jobs, step, steps


def forecast_store(
    engine,
    *,
    metrics: Sequence[str] = (),
    accounts: Sequence[str] = (),
    group: str | None = None,
    horizon: str | int = "24h",
    start=None,
    end=None,
    max_points: int = 400,
    bundle=None,
    n_jobs: int | None = None,
    dask_address: str | None = None,
) -> ForecastRun:
    """Forecast stored history: per account, or the sum of ``group``.

    ``bundle`` (a trained ``fleetml-forecast`` champion) supplies the method per series; without
    it each series chooses its method by validation.
    """
    from fleetml.models.forecast import forecast_job, long_forecast_frame
    from fleetml.parallel import run_parallel

    if group and accounts:
        raise InvalidInput("use either accounts or a group, not both")
    history = load_history(
        engine, metrics=metrics, accounts=accounts, group=group, start=start, end=end
    )
    scope = "group" if group else "account"
    method_for = bundle.method_for if bundle is not None else (lambda *_: {"method": "auto"})
    jobs, step, steps = build_jobs(
        history,
        group=group,
        scope=scope,
        horizon=horizon,
        max_points=max_points,
        method_for=method_for,
    )
    results = run_parallel(
        forecast_job, jobs, n_jobs=n_jobs, dask_address=dask_address, desc="forecast"
    )
    table = long_forecast_frame(results, key_column="group" if group else "account_id")
    return ForecastRun(table, results, step, steps)


def champion_bundle(settings=None):
    """The champion ``fleetml-forecast`` bundle, or ``None`` when nothing was trained yet."""
    from fleetml.serving import registry

    try:
        return registry.load_bundle("fleetml-forecast", settings=settings)
    except LookupError:
        return None
