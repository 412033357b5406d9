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
from fleetml.timestamps import format_step
from fleetml.training.cli_output import echo_training_outcome
from fleetml.training.progress import PROGRESS_OPTION, progress_enabled, run_with_progress
from fleetml.training.summary import json_ready

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
#: Default of --max-points (fleetml.models.forecast.DEFAULT_MAX_POINTS, kept literal so the
#: CLI does not import the models at start-up).
DEFAULT_MAX_POINTS = 2016
_MAX_POINTS = click.option(
    "--max-points",
    type=click.IntRange(min=50),
    default=DEFAULT_MAX_POINTS,
    show_default=True,
    help="Keep each series' newest this many points at the forecast step; older history is "
    "dropped (never aggregated to a coarser step).",
)
_STEP = click.option(
    "--step",
    default=None,
    help="Forecast step (e.g. 1h, 30min); default the data's own sampling step. A coarser step "
    "averages the samples into buckets, and the output says so.",
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


def _jobs(frame, kinds, metrics, groups, *, group, scope, horizon, max_points, method_for, step):
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
            step=step,
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
@_STEP
@_MAX_POINTS
@click.option(
    "--no-champion", is_flag=True, help="Choose methods afresh even if a champion exists."
)
@click.option(
    "--global-model/--no-global-model",
    default=True,
    show_default=True,
    help="Without a champion, fit one gradient-boosting model across all series first and "
    "weigh it in each series' combination on validation (docs/forecasting.md).",
)
@_DASK
@_JOBS
@PROGRESS_OPTION
def forecast(
    metrics,
    accounts,
    group,
    horizon,
    out,
    start,
    end,
    step,
    max_points,
    no_champion,
    global_model,
    dask_address,
    n_jobs,
    progress,
) -> None:
    """Forecast load per account (or a group's sum) with 80 % and 95 % prediction intervals.

    Forecasts are at the data's own sampling step (HORIZON 48 on hourly data: 48 hourly
    points) unless --step asks for a coarser one. Writes one row per (series, time, level),
    with the step and whether it was aggregated, and prints the predicted peaks of each series.
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
            step=step,
            bundle=bundle,
            n_jobs=n_jobs or settings.n_jobs,
            dask_address=dask_address,
            progress=progress,
            global_model=global_model,
        )
    except FleetmlError as exc:
        raise click.ClickException(str(exc)) from exc
    table, results, steps = run.table, run.results, run.horizon_steps
    note = run.aggregation_reason or ""
    table = table.assign(step=format_step(run.step), aggregated=run.aggregated, note=note)
    path = write_frame(table, out)
    if run.aggregated:
        click.echo(f"note: {run.aggregation_reason}", err=True)
    if run.history_cut:
        click.echo(
            f"note: {run.history_cut} series kept only their newest {run.max_points} points "
            "(--max-points); older history was not used",
            err=True,
        )
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
            "step": format_step(run.step),
            "native_step": format_step(run.native_step),
            "aggregated": run.aggregated,
            "aggregation_reason": run.aggregation_reason,
            "horizon_steps": steps,
            "max_points": run.max_points,
            "history_cut": run.history_cut,
            "methods": dict(Counter(r["summary"]["method"] for r in results if r["summary"])),
            "champion_version": getattr(bundle, "registered_version", None),
            "global_model": run.global_model,
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
    """Log one training run of ``fleetml-forecast`` and register it; returns run id, version and
    whether it was promoted (see :func:`register_forecast` for the rule)."""
    out = register_forecast(
        settings,
        bundle=bundle,
        params=params,
        metrics=metrics,
        choices=choices,
        summaries=summaries,
        promote=promote,
    )
    return out["run_id"], out["version"], out["promoted"]


def register_forecast(
    settings,
    *,
    bundle,
    params,
    metrics,
    choices,
    summaries,
    promote: bool,
    naive: dict | None = None,
) -> dict:
    """Log one training run of ``fleetml-forecast``, register it (alias ``challenger``) and apply
    the shared promotion rule (:func:`fleetml.training.registry.apply_promotion_rule`).

    Sanity and gate: the version's mean held-out MASE must beat or tie the seasonal-naive
    forecast's (``naive``, same series and periods). A first version passing it becomes
    champion; a later one only with ``promote`` (there is no comparison with the champion yet).
    Returns ``run_id``, ``version``, ``promoted``, ``promotion_reason``, the gate and sanity
    outcomes and ``warnings``.
    """
    from fleetml.training import registry
    from fleetml.training.sanity import forecast_sanity

    sane, sanity_reason = forecast_sanity(metrics, naive or {})
    with registry.start_run(MODEL_NAME, settings=settings, run_name="train-forecast") as run:
        registry.log_params(params)
        registry.log_metrics(metrics)
        registry.log_metrics(naive or {}, prefix="snaive_")
        registry.log_dict(choices, "choices.json")
        registry.log_dict(summaries, "series_summaries.json")
        registry.log_dict(
            {"sanity": {"passed": sane, "reason": sanity_reason}, "snaive": naive}, "gate.json"
        )
        info = registry.log_bundle(
            bundle, pip_requirements=registry.default_pip_requirements(("statsmodels", "scipy"))
        )
        run_id = run.info.run_id
    version = registry.register_version(
        MODEL_NAME,
        info.model_uri,
        run_id=run_id,
        tags={
            **{k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)},
            "sanity_passed": sane,
        },
    )
    champion_version = registry.get_champion_version(MODEL_NAME, settings=settings)
    if champion_version is None:
        gate_ok, gate_reason = sane, sanity_reason
    else:  # no comparison with the champion yet: --promote is the gate
        gate_ok = promote
        gate_reason = (
            "forecast versions are not compared with the champion yet: "
            "a later version replaces it only with --promote"
        )
    promoted, reason = registry.apply_promotion_rule(
        MODEL_NAME,
        version,
        champion_version=champion_version,
        force=promote,
        gate_passed=gate_ok,
        gate_reason=gate_reason,
        sanity_passed=sane,
        sanity_reason=sanity_reason,
        settings=settings,
    )
    return {
        "run_id": run_id,
        "version": version,
        "champion": version if promoted else champion_version,
        "previous_champion": champion_version,
        "promoted": promoted,
        "promotion_reason": reason,
        "gate_passed": gate_ok,
        "gate_reason": gate_reason,
        "sanity_passed": sane,
        "sanity_reason": sanity_reason,
        "promoted_despite_failed_gate": promoted and not sane,
        "warnings": registry.promotion_warnings(
            promoted=promoted,
            gate_passed=gate_ok or champion_version is not None,  # later: --promote decides
            sanity_passed=sane,
            reason=reason,
        ),
    }


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
@_STEP
@_MAX_POINTS
@click.option(
    "--promote", is_flag=True, help="Make this version champion whatever the sanity check says."
)
@_DASK
@_JOBS
@PROGRESS_OPTION
def train_forecast(
    metrics,
    accounts,
    start,
    end,
    horizon,
    groups,
    step,
    max_points,
    promote,
    dask_address,
    n_jobs,
    progress,
) -> None:
    """Choose a forecasting method per series by validation, log to MLflow, register a version.

    Evaluation: each series' last HORIZON is held out, the method chosen on the rest forecasts
    it, and sMAPE / MASE / interval coverage are averaged over series.

    \b
    Promotion:
    - sanity check: the mean held-out MASE beats or ties the seasonal-naive forecast's on the
      same series; a version failing it is never promoted without --promote, not even the
      first one;
    - the first version becomes champion when it passes; later versions only with --promote
      (they are not compared with the champion yet).
    """
    import dataclasses

    from fleetml.evaluation.forecast import holdout_job
    from fleetml.models.forecast import ForecastBundle, forecast_job

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
            found, choice, steps = _jobs(
                frame,
                kinds,
                metrics,
                group_map,
                group=None,
                scope=scope,
                horizon=horizon,
                max_points=max_points,
                method_for=lambda *_: {"method": "auto"},
                step=step,
            )
        except click.ClickException:
            if scope == "group":
                continue
            raise
        jobs += [(scope, job) for job in found]
    run = dict(
        n_jobs=n_jobs or settings.n_jobs,
        dask_address=dask_address,
        enabled=progress_enabled(progress),
    )
    series_jobs = [j for _, j in jobs]
    holdout = run_with_progress(holdout_job, series_jobs, desc="evaluate", **run)
    naive_jobs = [dataclasses.replace(j, method="snaive") for j in series_jobs]
    naive_holdout = run_with_progress(holdout_job, naive_jobs, desc="seasonal naive", **run)
    fitted = run_with_progress(forecast_job, series_jobs, desc="choose", **run)

    choices, summaries = {}, {}
    for (scope, job), res in zip(jobs, fitted, strict=True):
        key = ForecastBundle.series_key(scope, job.key, job.metric)
        if res["summary"] is not None:
            stored = ("method", "weights", "interval_scales", "member_params")
            choices[key] = {k: res["summary"][k] for k in stored}
            summaries[key] = res["summary"]
    for line in _choice_lines(choices):
        click.echo(line, err=True)
    scores = [h["scores"] for h in holdout if h["scores"]]
    evaluation = _mean_scores(scores)
    # The sanity check compares both on the series both could score.
    pairs = [(h["scores"], n["scores"]) for h, n in zip(holdout, naive_holdout, strict=True)]
    pairs = [(ours, naive) for ours, naive in pairs if ours and naive]
    paired = _mean_scores([ours for ours, _ in pairs])
    naive = _mean_scores([naive for _, naive in pairs])
    bundle = ForecastBundle(choices, metric_kinds=kinds, horizon=horizon, max_points=max_points)
    params = {
        "metrics": ",".join(metrics),
        "horizon": horizon,
        "step": format_step(choice.step),
        "native_step": format_step(choice.native),
        "max_points": max_points,
        "n_series": len(jobs),
        "from": start,
        "to": end,
        "groups": groups,
    }
    outcome = register_forecast(
        settings,
        bundle=bundle,
        params=params,
        metrics={**evaluation, "paired_mase": paired.get("mase", math.nan)},
        choices=choices,
        summaries=summaries,
        promote=promote,
        naive=naive,
    )
    result = json_ready(
        {
            "model": MODEL_NAME,
            **outcome,
            # kept a boolean (unlike anomaly and risk, where it is the version) for callers
            # written against earlier releases
            "champion": outcome["promoted"],
            "series": len(choices),
            "methods": dict(Counter(c["method"] for c in choices.values())),
            **evaluation,
            "snaive_mase": naive.get("mase", math.nan),
            "snaive_smape": naive.get("smape", math.nan),
        }
    )
    echo_training_outcome(
        result,
        [
            f"held out: mean MASE {paired.get('mase', math.nan):.3f} vs seasonal naive's "
            f"{naive.get('mase', math.nan):.3f} over {len(pairs)} series"
        ],
    )
    print_result(result)


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
@_STEP
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
    step,
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
    jobs, choice, steps = _jobs(
        frame,
        kinds,
        metrics,
        groups,
        group=group,
        scope=scope,
        horizon=horizon,
        max_points=max_points,
        method_for=lambda *_: {"method": method},
        step=step,
    )
    step = choice.step
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
            f"no series is long enough for a {steps}-step backtest at a {format_step(step)} step; "
            "use a shorter --horizon or more history"
        )
    table = pd.concat(parts, ignore_index=True)
    table = table.rename(columns={"key": "group" if group else "account_id"})
    path = write_frame(table, out)
    key_col = table.columns[0]
    summary = summarize_backtest(table, by=(key_col, "metric", "origin"))
    click.echo(
        f"backtest: {summary['n_forecasts']} forecasts of {steps} steps ({format_step(step)}) over "
        f"{table[key_col].nunique()} series: sMAPE {summary['smape']:.2f}, "
        f"MASE {summary['mase']:.3f}, "
        f"coverage 80% {100 * summary.get('coverage_80', math.nan):.1f}, "
        f"95% {100 * summary.get('coverage_95', math.nan):.1f}"
    )
    print_result(
        {
            "out": str(path),
            "rows": len(table),
            "step": format_step(step),
            "aggregated": choice.aggregated,
            "aggregation_reason": choice.reason,
            "horizon_steps": steps,
            **summary,
        }
    )
