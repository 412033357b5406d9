"""``fleetml train anomaly``, ``fleetml score anomaly`` and ``fleetml backtest anomaly``.

Argument parsing only: the work happens in :mod:`fleetml.training.anomaly`. Every command prints
one JSON object alone on its last line.
"""

from __future__ import annotations

import click

from fleetml.cli_support import TIMESTAMP, ctx_settings, open_engine, print_result, write_frame

_FROM = click.option("--from", "start", type=TIMESTAMP, default=None, help="First sample time.")
_TO = click.option("--to", "end", type=TIMESTAMP, default=None, help="Last sample time.")
_ACCOUNT = click.option(
    "--account", "accounts", multiple=True, help="Only this account (repeatable)."
)


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from exc


@click.command("anomaly")
@_FROM
@_TO
@_ACCOUNT
@click.option("--promote", is_flag=True, help="Make this version champion whatever the gate says.")
@click.option(
    "--threshold", type=float, default=None, help="Alert threshold on the calibrated score."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
def train_anomaly(start, end, accounts, promote, threshold, seed) -> None:
    """Train the anomaly detector on stored metrics, register it and maybe promote it.

    The last quarter of the selected time range is held out to evaluate the new version against a
    robust z-score baseline and the current champion. The first version ever registered
    becomes champion; later ones only when they pass the promotion gate or with --promote.
    """
    from fleetml.training.anomaly import AnomalyTrainConfig
    from fleetml.training.anomaly import train_anomaly as run

    settings = ctx_settings()
    engine = open_engine(settings)
    config = AnomalyTrainConfig(random_state=seed)
    if threshold is not None:
        config.threshold = threshold
    try:
        result = run(
            engine,
            settings,
            start=start,
            end=end,
            accounts=list(accounts) or None,
            promote=promote,
            config=config,
        )
    except (ValueError, LookupError) as exc:
        _fail(exc)
    click.echo(
        f"registered {result['model']} version {result['version']} (run {result['run_id']}); "
        f"champion is version {result['champion']}: {result['promotion_reason']}",
        err=True,
    )
    print_result(result)


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
    default=500,
    show_default=True,
    help="Refit on all data so far every N samples.",
)
@click.option(
    "--threshold", type=float, default=None, help="Alert threshold on the calibrated score."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
def backtest_anomaly(
    start, end, accounts, out, warmup, warmup_max, refit_every, threshold, seed
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
    config = AnomalyTrainConfig(random_state=seed)
    if threshold is not None:
        config.threshold = threshold
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
