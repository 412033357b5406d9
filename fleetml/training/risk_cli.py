"""``fleetml train risk``, ``fleetml score risk`` and ``fleetml backtest risk``.

Argument parsing only: the work happens in :mod:`fleetml.training.risk`. Every command prints one
JSON object alone on its last line.
"""

from __future__ import annotations

import click

from fleetml.cli_support import TIMESTAMP, ctx_settings, open_engine, print_result, write_frame
from fleetml.training.cli_output import echo_training_outcome
from fleetml.training.progress import PROGRESS_OPTION, StageProgress, progress_enabled

_FROM = click.option("--from", "start", type=TIMESTAMP, default=None, help="First sample time.")
_TO = click.option("--to", "end", type=TIMESTAMP, default=None, help="Last sample time.")
_ACCOUNT = click.option(
    "--account", "accounts", multiple=True, help="Only this account (repeatable)."
)
_HORIZON = click.option(
    "--horizon",
    "horizons",
    default="1h,6h,24h",
    show_default=True,
    help="Comma-separated prediction horizons (durations).",
)
_PRECISION = click.option(
    "--target-precision",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.8,
    show_default=True,
    help="Precision the stored decision threshold aims for on validation.",
)


_BUDGET = click.option(
    "--alert-budget",
    type=click.FloatRange(min=0.0, min_open=True),
    default=0.5,
    show_default=True,
    help="At-risk onsets per account-day a horizon's threshold may raise on validation; the "
    "threshold is raised (or chosen, when the target precision is unreachable) to stay within.",
)


def _read_features(ctx, param, value):
    """Load and check the settings file while parsing, so a bad file stops before any work."""
    if value is None:
        return None
    from fleetml.features.files import FeatureConfigError, load_feature_config

    try:
        return load_feature_config(value)
    except FeatureConfigError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc


#: ``--features FILE``, shared by the risk and anomaly commands.
FEATURES_OPTION = click.option(
    "--features",
    "feature_config",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    callback=_read_features,
    help="Feature settings file (FeatureConfig fields as JSON, or YAML for .yaml/.yml); stored "
    "with the model and used when it scores. Default: the built-in feature settings.",
)


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from exc


def _config(
    horizons: str,
    target_precision: float,
    seed: int,
    alert_budget: float = 0.5,
    feature_config=None,
):
    from fleetml.training.risk import RiskTrainConfig, parse_horizons

    try:
        return RiskTrainConfig(
            horizons=parse_horizons(horizons),
            target_precision=target_precision,
            random_state=seed,
            alert_budget=alert_budget,
            feature_config=feature_config,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--horizon") from exc


@click.command("risk")
@_HORIZON
@_FROM
@_TO
@_ACCOUNT
@_PRECISION
@_BUDGET
@click.option(
    "--promote", is_flag=True, help="Make this version champion whatever the gate and sanity say."
)
@click.option(
    "--max-alerts-per-account-day",
    type=click.FloatRange(min=0.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Sanity limit: at-risk onsets per account-day and horizon on the held-out period.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@FEATURES_OPTION
@PROGRESS_OPTION
def train_risk(
    horizons,
    start,
    end,
    accounts,
    target_precision,
    alert_budget,
    promote,
    max_alerts_per_account_day,
    seed,
    feature_config,
    progress,
) -> None:
    """Train failure-risk classifiers (one per horizon), register them as ``fleetml-risk``.

    Labels: a technical fault (crash, disconnect, logout, unreachable, degraded) within
    (t, t + horizon]. The time range is split train / validation / test with a purge gap of one
    horizon; calibration and the decision threshold come from validation, the reported metrics
    from test. The threshold reaches --target-precision on validation when it can while keeping
    at most --alert-budget at-risk onsets per account-day there; otherwise it is the lowest
    threshold that stays within the budget (alerts are off when even that is no better than
    chance). Each horizon's rule and reason are printed. A horizon with too few positive
    training rows or no positive validation rows is dropped with a warning (a classifier
    without positives would be meaningless). --features sets the feature builder's knobs
    (windows, feature families) from a file; the model stores them and logs them to MLflow as
    feature_config.json.

    \b
    Promotion:
    - sanity check: every trained horizon has positive training and validation rows and at most
      --max-alerts-per-account-day at-risk onsets per account-day on the held-out period; a
      version failing it is never promoted without --promote, not even the first one (with no
      champion, serving falls back to its heuristics);
    - gate: mean test PR-AUC at least the champion's on the same period;
    - the first version becomes champion when it passes the sanity check, even if its gate
      failed (the output says so); later versions need both, or --promote.
    """
    from fleetml.training.risk import STAGES
    from fleetml.training.risk import train_risk as run

    config = _config(horizons, target_precision, seed, alert_budget, feature_config)
    config.max_alerts_per_account_day = max_alerts_per_account_day
    settings = ctx_settings()
    engine = open_engine(settings)
    try:
        with StageProgress(STAGES, enabled=progress_enabled(progress), desc="train risk") as bar:
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
    echo_training_outcome(result, _risk_lines(result, target_precision))
    print_result(result)


def _num(value, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _risk_lines(result: dict, target_precision: float) -> list[str]:
    lines = []
    rules = result.get("threshold_rules", {})
    for h, m in result["metrics"].items():
        counts = result["positives"].get(h, {})
        rule = rules.get(h, {})
        lines.append(
            f"{h}: threshold {_num(m.get('threshold'), '.4g')} ({rule.get('rule', 'n/a')}), "
            f"at-risk onsets per account-day {_num(m.get('val_alerts_per_account_day'), '.2f')} "
            f"on validation, {_num(m.get('alerts_per_account_day'), '.2f')} held out; PR-AUC "
            f"{_num(m.get('pr_auc'))}, recall at the threshold {_num(m.get('recall'))}, "
            f"recall@{target_precision} {_num(m.get('recall_at_target_precision'))}, ECE "
            f"{_num(m.get('ece'))}, faults caught {m.get('faults_caught')}/{m.get('faults')}; "
            f"positive rows train/val/test {counts.get('train')}/{counts.get('val')}/"
            f"{counts.get('test')}"
        )
        if rule.get("reason"):
            lines.append(f"{h} threshold: {rule['reason']}")
    return lines


@click.command("risk")
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
def score_risk(start, end, accounts, version, out) -> None:
    """Risk of every stored sample, per horizon, with the champion (or --version).

    Columns: ts, account_id, horizon, risk (calibrated probability of a technical fault within
    the horizon), at_risk (risk >= the stored threshold), and enforcement_risk when the model
    has an enforcement part.
    """
    from fleetml.serving.risk import score_risk as run

    settings = ctx_settings()
    engine = open_engine(settings)
    try:
        scores, summary = run(
            engine, settings, start=start, end=end, accounts=list(accounts) or None, version=version
        )
    except (ValueError, LookupError) as exc:
        _fail(exc)
    summary["out"] = str(write_frame(scores, out))
    print_result(summary)


@click.command("risk")
@_HORIZON
@_FROM
@_TO
@_ACCOUNT
@_PRECISION
@_BUDGET
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output file: .parquet/.pq for Parquet, anything else CSV.",
)
@click.option(
    "--folds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Walk-forward periods after the initial training span.",
)
@click.option(
    "--initial",
    type=click.FloatRange(0.1, 0.9),
    default=0.5,
    show_default=True,
    help="Fraction of the time range used only for the first training.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@FEATURES_OPTION
def backtest_risk(
    horizons,
    start,
    end,
    accounts,
    target_precision,
    alert_budget,
    out,
    folds,
    initial,
    seed,
    feature_config,
) -> None:
    """Walk-forward, strictly causal replay: each period is scored by models trained, calibrated
    and thresholded only on data whose label windows closed before it. Writes the scores (with
    the true label) and prints PR-AUC, precision, recall and lead times per horizon."""
    import time

    from fleetml.training.risk import backtest_risk as run
    from fleetml.training.risk import load_risk_data

    config = _config(horizons, target_precision, seed, alert_budget, feature_config)
    settings = ctx_settings()
    engine = open_engine(settings)
    t0 = time.perf_counter()
    try:
        data = load_risk_data(engine, start=start, end=end, accounts=list(accounts) or None)
        scores, summary = run(
            data.frame,
            faults=data.faults,
            enforcement=data.enforcement,
            kinds=data.kinds,
            groups=data.groups,
            masters=data.masters,
            config=config,
            folds=folds,
            initial=initial,
        )
    except (ValueError, LookupError) as exc:
        _fail(exc)
    summary.update(
        model="fleetml-risk",
        mode="backtest",
        out=str(write_frame(scores, out)),
        seconds=round(time.perf_counter() - t0, 2),
    )
    for h, m in summary["metrics"].items():
        click.echo(
            f"{h}: PR-AUC {m['pr_auc']:.3f}, precision {m['precision']:.3f}, recall "
            f"{m['recall']:.3f}, faults caught {m['faults_caught']}/{m['faults']}, median lead "
            f"{m['median_lead_time_s'] / 3600:.2f} h",
            err=True,
        )
    print_result(summary)
