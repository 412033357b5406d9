"""``fleetml forecast``, ``fleetml train forecast`` and ``fleetml backtest forecast``.

The commands read stored history, build one regular series per (account or group, metric) with
:mod:`fleetml.models.forecast`, and run the per-series work through
:func:`fleetml.parallel.run_parallel`
(local processes, or a Dask cluster with ``--dask``). Model logic lives in the library; this module
only wires inputs, MLflow and outputs.
"""

from __future__ import annotations

import math
from collections import Counter

import click
import numpy as np
import pandas as pd

from fleetml.cli_support import TIMESTAMP, ctx_settings, open_engine, print_result, write_frame

MODEL_NAME = "fleetml-forecast"
DEFAULT_HORIZON = "24h"

_METRIC = click.option(
    "--metric", "metrics", multiple=True, help="Metric to forecast (repeatable; default all)."
)
_ACCOUNT = click.option(
    "--account", "accounts", multiple=True, help="Account id (repeatable; default all accounts)."
)
_GROUP = click.option(
    "--group", default=None, help="Forecast this master group's sum instead of single accounts."
)
_FROM = click.option("--from", "start", type=TIMESTAMP, default=None, help="First sample time.")
_TO = click.option("--to", "end", type=TIMESTAMP, default=None, help="Last sample time.")
_DASK = click.option(
    "--dask",
    "dask_address",
    default=None,
    help="Dask scheduler address (tcp://host:8786); default FLEETML_DASK_SCHEDULER or local.",
)
_JOBS = click.option("--n-jobs", type=int, default=None, help="Local worker processes.")
_MAX_POINTS = click.option(
    "--max-points",
    type=click.IntRange(min=50),
    default=400,
    show_default=True,
    help="Aggregate each series to the finest step that keeps its history to this many points.",
)


# --- inputs -------------------------------------------------------------------------------


def _load_history(settings, *, metrics, accounts, group, start, end):
    from fleetml.errors import FleetmlError
    from fleetml.services.forecasting import load_history

    try:
        h = load_history(
            open_engine(settings),
            metrics=metrics,
            accounts=accounts,
            group=group,
            start=start,
            end=end,
        )
    except FleetmlError as exc:
        raise click.ClickException(str(exc)) from exc
    return h.frame, h.kinds, h.metrics, h.groups


def _jobs(frame, kinds, metrics, groups, *, group, scope, horizon, max_points, method_for):
    from fleetml.errors import FleetmlError
    from fleetml.services.forecasting import History, build_jobs

    try:
        return build_jobs(
            History(frame, kinds, list(metrics), groups),
            group=group,
            scope=scope,
            horizon=horizon,
            max_points=max_points,
            method_for=method_for,
        )
    except FleetmlError as exc:
        raise click.ClickException(str(exc)) from exc


def _champion_bundle(settings):
    from fleetml.services.forecasting import champion_bundle

    return champion_bundle(settings)


# --- fleetml forecast ---------------------------------------------------------------------


@click.command("forecast")
@_METRIC
@_ACCOUNT
@_GROUP
@click.option(
    "--horizon",
    default=DEFAULT_HORIZON,
    show_default=True,
    help="Steps ahead (e.g. 48) or a duration (48h, 2D, 90min).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output file: .parquet/.pq for Parquet, anything else CSV.",
)
@_FROM
@_TO
@_MAX_POINTS
@click.option(
    "--no-champion", is_flag=True, help="Choose methods afresh even if a champion exists."
)
@_DASK
@_JOBS
def forecast(
    metrics,
    accounts,
    group,
    horizon,
    out,
    start,
    end,
    max_points,
    no_champion,
    dask_address,
    n_jobs,
) -> None:
    """Forecast load per account (or a group's sum) with 80 % and 95 % prediction intervals.

    Writes one row per (series, time, level) and prints the predicted peaks of each series.
    """
    from fleetml.errors import FleetmlError
    from fleetml.services.forecasting import forecast_store

    if group and accounts:
        raise click.UsageError("use either --account or --group, not both")
    settings = ctx_settings()
    bundle = None if no_champion else _champion_bundle(settings)
    try:
        run = forecast_store(
            open_engine(settings),
            metrics=metrics,
            accounts=accounts,
            group=group,
            horizon=horizon,
            start=start,
            end=end,
            max_points=max_points,
            bundle=bundle,
            n_jobs=n_jobs or settings.n_jobs,
            dask_address=dask_address,
        )
    except FleetmlError as exc:
        raise click.ClickException(str(exc)) from exc
    table, results, step, steps = run.table, run.results, run.step, run.horizon_steps
    path = write_frame(table, out)
    _echo_peaks(results)
    failed = [r for r in results if r["error"]]
    for r in failed:
        click.echo(f"warning: {r['key']} {r['metric']}: {r['error']}", err=True)
    print_result(
        {
            "out": str(path),
            "rows": len(table),
            "series": len(results) - len(failed),
            "failed": len(failed),
            "step": str(step),
            "horizon_steps": steps,
            "methods": dict(Counter(r["summary"]["method"] for r in results if r["summary"])),
            "champion_version": getattr(bundle, "registered_version", None),
        }
    )


def _echo_peaks(results) -> None:
    for r in results:
        peaks = r.get("peaks")
        if peaks is None or peaks.empty:
            continue
        parts = [
            f"{row.iloc[0]:%Y-%m-%d %H:%M} {row['yhat']:.4g} (95% up to {row['yhat_upper_95']:.4g})"
            if "yhat_upper_95" in row
            else f"{row.iloc[0]} {row['yhat']:.4g}"
            for _, row in peaks.iterrows()
        ]
        click.echo(
            f"peaks {r['key']} {r['metric']} [{r['summary']['method']}]: " + "; ".join(parts)
        )


# --- fleetml train forecast ---------------------------------------------------------------


def log_to_mlflow(settings, *, bundle, params, metrics, choices, summaries, promote):
    """Log one training run of ``fleetml-forecast`` and register it; returns run id and version.

    The registered version is ``challenger``; it becomes ``champion`` with ``promote`` or when
    there is no champion yet.
    """
    from fleetml.training import registry

    with registry.start_run(MODEL_NAME, settings=settings, run_name="train-forecast") as run:
        registry.log_params(params)
        registry.log_metrics(metrics)
        registry.log_dict(choices, "choices.json")
        registry.log_dict(summaries, "series_summaries.json")
        info = registry.log_bundle(
            bundle, pip_requirements=registry.default_pip_requirements(("statsmodels", "scipy"))
        )
        run_id = run.info.run_id
    version = registry.register_version(
        MODEL_NAME,
        info.model_uri,
        run_id=run_id,
        tags={k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)},
    )
    promoted = False
    if promote or registry.get_champion_version(MODEL_NAME, settings=settings) is None:
        registry.promote(
            MODEL_NAME,
            version,
            reason="--promote" if promote else "first version",
            settings=settings,
        )
        promoted = True
    return run_id, version, promoted


@click.command("forecast")
@_METRIC
@_ACCOUNT
@_FROM
@_TO
@click.option(
    "--horizon",
    default=DEFAULT_HORIZON,
    show_default=True,
    help="Forecast horizon scored on the held-out end of each series (steps or duration).",
)
@click.option(
    "--groups/--no-groups",
    default=True,
    show_default=True,
    help="Also choose methods for each master group's sum.",
)
@_MAX_POINTS
@click.option("--promote", is_flag=True, help="Make this version champion.")
@_DASK
@_JOBS
def train_forecast(
    metrics, accounts, start, end, horizon, groups, max_points, promote, dask_address, n_jobs
) -> None:
    """Choose a forecasting method per series by validation, log to MLflow, register a version.

    Evaluation: each series' last HORIZON is held out, the method chosen on the rest forecasts
    it, and sMAPE / MASE / interval coverage are averaged over series.
    """
    from fleetml.evaluation.forecast import holdout_job
    from fleetml.models.forecast import ForecastBundle, forecast_job
    from fleetml.parallel import run_parallel

    settings = ctx_settings()
    frame, kinds, metrics, group_map = _load_history(
        settings, metrics=metrics, accounts=accounts, group=None, start=start, end=end
    )
    jobs = []
    if groups and accounts:
        click.echo("--account given: group sums would be partial, so groups are not trained")
        groups = False
    scopes = ("account", "group") if groups else ("account",)
    for scope in scopes:
        try:
            found, step, steps = _jobs(
                frame,
                kinds,
                metrics,
                group_map,
                group=None,
                scope=scope,
                horizon=horizon,
                max_points=max_points,
                method_for=lambda *_: {"method": "auto"},
            )
        except click.ClickException:
            if scope == "group":
                continue
            raise
        jobs += [(scope, job) for job in found]
    run = dict(n_jobs=n_jobs or settings.n_jobs, dask_address=dask_address)
    holdout = run_parallel(holdout_job, [j for _, j in jobs], desc="evaluate", **run)
    fitted = run_parallel(forecast_job, [j for _, j in jobs], desc="choose", **run)

    choices, summaries = {}, {}
    for (scope, job), res in zip(jobs, fitted, strict=True):
        key = ForecastBundle.series_key(scope, job.key, job.metric)
        if res["summary"] is not None:
            choices[key] = {k: res["summary"][k] for k in ("method", "weights", "interval_scales")}
            summaries[key] = res["summary"]
    for line in _choice_lines(choices):
        click.echo(line)
    scores = [h["scores"] for h in holdout if h["scores"]]
    evaluation = _mean_scores(scores)
    bundle = ForecastBundle(choices, metric_kinds=kinds, horizon=horizon, max_points=max_points)
    params = {
        "metrics": ",".join(metrics),
        "horizon": horizon,
        "step": str(step),
        "max_points": max_points,
        "n_series": len(jobs),
        "from": start,
        "to": end,
        "groups": groups,
    }
    run_id, version, promoted = log_to_mlflow(
        settings,
        bundle=bundle,
        params=params,
        metrics=evaluation,
        choices=choices,
        summaries=summaries,
        promote=promote,
    )
    print_result(
        {
            "run_id": run_id,
            "model": MODEL_NAME,
            "version": version,
            "champion": promoted,
            "series": len(choices),
            "methods": dict(Counter(c["method"] for c in choices.values())),
            **evaluation,
        }
    )


def _choice_lines(choices: dict[str, str]) -> list[str]:
    counts = Counter(c["method"] for c in choices.values())
    lines = [f"chose {method} for {n} series" for method, n in counts.most_common()]
    if len(choices) <= 20:
        lines += [f"  {key}: {c['method']} {c['weights']}" for key, c in sorted(choices.items())]
    return lines


def _mean_scores(scores: list[dict]) -> dict[str, float]:
    if not scores:
        return {"n_scored": 0}
    keys = [k for k in scores[0] if k != "method"]
    out = {"n_scored": len(scores)}
    for k in keys:
        values = np.array([s.get(k, np.nan) for s in scores], dtype="float64")
        out[k] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    return out


# --- fleetml backtest forecast ------------------------------------------------------------


@click.command("forecast")
@_METRIC
@_ACCOUNT
@_GROUP
@_FROM
@_TO
@click.option(
    "--horizon",
    default=DEFAULT_HORIZON,
    show_default=True,
    help="Steps ahead (e.g. 48) or a duration (48h).",
)
@click.option(
    "--origins",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Forecast origins per series, one horizon apart, ending one horizon before "
    "the last sample.",
)
@click.option(
    "--method",
    default="auto",
    show_default=True,
    help="auto (validation choice at each origin) or a fixed method.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output file: .parquet/.pq for Parquet, anything else CSV.",
)
@_MAX_POINTS
@_DASK
@_JOBS
def backtest_forecast(
    metrics,
    accounts,
    group,
    start,
    end,
    horizon,
    origins,
    method,
    out,
    max_points,
    dask_address,
    n_jobs,
) -> None:
    """Walk-forward, strictly causal backtest: each forecast sees only data up to its origin."""
    from fleetml.evaluation.forecast import backtest_job, summarize_backtest
    from fleetml.models.forecast import METHODS
    from fleetml.parallel import run_parallel

    if method != "auto" and method not in METHODS:
        raise click.BadParameter(
            f"choose auto or one of {', '.join(METHODS)}", param_hint="--method"
        )
    if group and accounts:
        raise click.UsageError("use either --account or --group, not both")
    settings = ctx_settings()
    frame, kinds, metrics, groups = _load_history(
        settings, metrics=metrics, accounts=accounts, group=group, start=start, end=end
    )
    scope = "group" if group else "account"
    jobs, step, steps = _jobs(
        frame,
        kinds,
        metrics,
        groups,
        group=group,
        scope=scope,
        horizon=horizon,
        max_points=max_points,
        method_for=lambda *_: {"method": method},
    )
    parts = run_parallel(
        backtest_job,
        [(job, origins) for job in jobs],
        n_jobs=n_jobs or settings.n_jobs,
        dask_address=dask_address,
        desc="backtest",
    )
    parts = [p for p in parts if not p.empty]
    if not parts:
        raise click.ClickException(
            f"no series is long enough for a {steps}-step backtest at a {step} step; "
            "use a shorter --horizon or more history"
        )
    table = pd.concat(parts, ignore_index=True)
    table = table.rename(columns={"key": "group" if group else "account_id"})
    path = write_frame(table, out)
    key_col = table.columns[0]
    summary = summarize_backtest(table, by=(key_col, "metric", "origin"))
    click.echo(
        f"backtest: {summary['n_forecasts']} forecasts of {steps} steps ({step}) over "
        f"{table[key_col].nunique()} series: sMAPE {summary['smape']:.2f}, "
        f"MASE {summary['mase']:.3f}, "
        f"coverage 80% {100 * summary.get('coverage_80', math.nan):.1f}, "
        f"95% {100 * summary.get('coverage_95', math.nan):.1f}"
    )
    print_result(
        {"out": str(path), "rows": len(table), "step": str(step), "horizon_steps": steps, **summary}
    )
