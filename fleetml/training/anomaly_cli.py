"""``fleetml train anomaly``, ``fleetml score anomaly`` and ``fleetml backtest anomaly``.

Argument parsing only: the work happens in :mod:`fleetml.training.anomaly`. Every command prints
one JSON object alone on its last line.
"""

from __future__ import annotations

import math

import click

from fleetml.cli_support import TIMESTAMP, ctx_settings, open_engine, print_result, write_frame
from fleetml.evaluation.backtest import DEFAULT_ANOMALY_REFIT_EVERY
from fleetml.training.cli_output import echo_training_outcome
from fleetml.training.progress import PROGRESS_OPTION, StageProgress, progress_enabled
from fleetml.training.risk_cli import FEATURES_OPTION

_FROM = click.option("--from", "start", type=TIMESTAMP, default=None, help="First sample time.")
_TO = click.option("--to", "end", type=TIMESTAMP, default=None, help="Last sample time.")
_ACCOUNT = click.option(
    "--account", "accounts", multiple=True, help="Only this account (repeatable)."
)


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from exc


def _finite(ctx, param, value: float | None) -> float | None:
    """FloatRange lets nan and inf through; refuse them before any data is read."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number, got {value}", param=param)
    return value


_HABITUATION = click.option(
    "--habituation-half-life",
    "habituation_half_life",
    type=click.FloatRange(min=0.0),
    default=None,
    callback=_finite,
    help="Half-life in samples of each account's decaying maximum: the reported anomaly_score "
    "halves on samples not above it and keeps 0.55 on samples above it by less than the margin "
    "(default 1000; 0 reports the calibrated score). Alerts are unchanged: the rule runs on "
    "the calibrated score.",
)
_HABITUATION_MARGIN = click.option(
    "--habituation-margin",
    "habituation_margin",
    type=click.FloatRange(min=0.0),
    default=None,
    callback=_finite,
    help="How far (relatively) a sample must rise above that maximum to keep its full score "
    "(default 0.05); a sample above it by less keeps 0.55 of it. 0: any sample above it keeps "
    "its score.",
)


@click.command("anomaly")
@_FROM
@_TO
@_ACCOUNT
@click.option(
    "--promote", is_flag=True, help="Make this version champion whatever the gate and sanity say."
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Fixed alert threshold on the calibrated score (default: chosen on validation).",
)
@click.option(
    "--max-alerts-per-account-day",
    type=click.FloatRange(min=0.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Sanity limit: alert onsets per account-day on the held-out period.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@_HABITUATION
@_HABITUATION_MARGIN
@FEATURES_OPTION
@PROGRESS_OPTION
def train_anomaly(
    start,
    end,
    accounts,
    promote,
    threshold,
    max_alerts_per_account_day,
    seed,
    habituation_half_life,
    habituation_margin,
    feature_config,
    progress,
) -> None:
    """Train the anomaly detector on stored metrics, register it and maybe promote it.

    The last quarter of the selected time range is held out to evaluate the new version against a
    robust z-score baseline and the current champion. The alert rule comes from the training
    period alone: the threshold is the lowest that keeps a validation slice (its last fifth)
    within 0.5 alert onsets per account-day, and the level range check needs 7 days of history.
    --features sets the feature builder's knobs from a file; the model stores them and logs them
    to MLflow as feature_config.json.

    \b
    Promotion:
    - sanity check: at most --max-alerts-per-account-day alert onsets per account-day on the
      held-out period; a version failing it is never promoted without --promote, not even the
      first one (with no champion, serving falls back to its heuristics);
    - gate: event-wise F1 above the baseline's and not below the champion's, alerting on at most
      5 % of held-out rows;
    - the first version becomes champion when it passes the sanity check, even if its gate
      failed (the output says so); later versions need both, or --promote.
    """
    from fleetml.training.anomaly import STAGES, AnomalyTrainConfig
    from fleetml.training.anomaly import train_anomaly as run

    settings = ctx_settings()
    engine = open_engine(settings)
    config = AnomalyTrainConfig(
        random_state=seed,
        max_alerts_per_account_day=max_alerts_per_account_day,
        feature_config=feature_config,
    )
    if threshold is not None:
        config.threshold = threshold
        config.tune_threshold = False
    if habituation_half_life is not None:
        config.habituation_half_life = habituation_half_life
    if habituation_margin is not None:
        config.habituation_margin = habituation_margin
    try:
        with StageProgress(STAGES, enabled=progress_enabled(progress), desc="train anomaly") as bar:
            result = run(
                engine,
                settings,
                start=start,
                end=end,
                accounts=list(accounts) or None,
                promote=promote,
                config=config,
                progress=bar,
            )
    except (ValueError, LookupError) as exc:
        _fail(exc)
    echo_training_outcome(result, _anomaly_lines(result))
    print_result(result)


def _anomaly_lines(result: dict) -> list[str]:
    rate = result.get("test_alerts_per_account_day")
    share = result.get("test_alert_rate")
    f1 = result.get("test_f1")
    return [
        f"rule: threshold {result['threshold']:g}, range check "
        f"{'on' if result['rule']['range_check'] else 'off'}",
        "held out: "
        + (f"{rate:.2f} alert onsets per account-day" if rate is not None else "no alerts measured")
        + (f", {100 * share:.1f} % of rows flagged" if share is not None else "")
        + (f", event F1 {f1:.3f}" if f1 is not None else ", no labelled fault windows"),
    ]


@click.command("anomaly")
@_FROM
@_TO
@_ACCOUNT
@click.option("--version", type=int, default=None, help="Model version (default: champion).")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output file: .parquet/.pq for Parquet, anything else CSV.",
)
def score_anomaly(start, end, accounts, version, out) -> None:
    """Score every stored sample with the champion (or --version) and write the scores.

    Columns: ts, account_id, anomaly_score (calibrated, 0..1), is_anomaly, top_metrics
    (the metrics that contributed most to a flagged point, ';'-separated).
    """
    from fleetml.serving.anomaly import score_anomaly as run

    settings = ctx_settings()
    engine = open_engine(settings)
    try:
        scores, summary = run(
            engine,
            settings,
            start=start,
            end=end,
            accounts=list(accounts) or None,
            version=version,
        )
    except (ValueError, LookupError) as exc:
        _fail(exc)
    path = write_frame(scores, out)
    summary["out"] = str(path)
    print_result(summary)


@click.command("anomaly")
@_FROM
@_TO
@_ACCOUNT
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output file: .parquet/.pq for Parquet, anything else CSV.",
)
@click.option(
    "--warmup",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.15,
    show_default=True,
    help="Fraction of each account's samples that only trains.",
)
@click.option("--warmup-max", type=click.IntRange(min=1), default=None, help="Cap on warm-up rows.")
@click.option(
    "--refit-every",
    type=click.IntRange(min=1),
    default=DEFAULT_ANOMALY_REFIT_EVERY,
    show_default=True,
    help="Refit on all data so far every N samples.",
)
@click.option(
    "--threshold", type=float, default=None, help="Alert threshold on the calibrated score."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@_HABITUATION
@_HABITUATION_MARGIN
@FEATURES_OPTION
def backtest_anomaly(
    start,
    end,
    accounts,
    out,
    warmup,
    warmup_max,
    refit_every,
    threshold,
    seed,
    habituation_half_life,
    habituation_margin,
    feature_config,
) -> None:
    """Walk-forward, strictly causal replay of every account on its own.

    The warm-up samples only train (empty anomaly_score); every later sample is scored by a model
    fitted on samples before it. Stored fault events, when present, are used to print event-wise
    precision, recall and lead time.
    """
    import time

    from fleetml.training.anomaly import (
        AnomalyTrainConfig,
        evaluate_scores,
        fault_windows,
        json_ready,
        load_data,
    )
    from fleetml.training.anomaly import (
        backtest_anomaly as run,
    )

    settings = ctx_settings()
    engine = open_engine(settings)
    config = AnomalyTrainConfig(random_state=seed, feature_config=feature_config)
    if threshold is not None:
        config.threshold = threshold
    if habituation_half_life is not None:
        config.habituation_half_life = habituation_half_life
    if habituation_margin is not None:
        config.habituation_margin = habituation_margin
    t0 = time.perf_counter()
    try:
        data = load_data(engine, start=start, end=end, accounts=list(accounts) or None)
        scores = run(
            data.frame,
            kinds=data.kinds,
            config=config,
            warmup=warmup,
            warmup_max=warmup_max,
            refit_every=refit_every,
        )
    except (ValueError, LookupError) as exc:
        _fail(exc)
    path = write_frame(scores, out)
    scored = scores[scores["anomaly_score"].notna()].reset_index(drop=True)
    windows = fault_windows(data.events, before=config.label_before, after=config.label_after)
    summary = {
        "model": "fleetml-anomaly",
        "mode": "backtest",
        "out": str(path),
        "rows": len(scores),
        "scored_rows": len(scored),
        "accounts": int(scores["account_id"].nunique()) if len(scores) else 0,
        "anomalies": int(scores["is_anomaly"].sum()) if len(scores) else 0,
        "seconds": round(time.perf_counter() - t0, 2),
        **(evaluate_scores(scored, windows) if len(scored) else {}),
    }
    summary = json_ready(summary)
    click.echo(
        f"backtest: {summary['accounts']} accounts, {summary['rows']} samples, "
        f"{summary['scored_rows']} scored, {summary['anomalies']} flagged -> {path}",
        err=True,
    )
    print_result(summary)
