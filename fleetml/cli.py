"""The ``fleetml`` command.

Sub-commands are imported lazily, so ``fleetml import ...`` does not pay for importing MLflow and
``fleetml --help`` stays fast.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command or group.
_ROOT_COMMANDS: dict[str, str] = {
    "serve": "fleetml.api.cli:serve",
    "demo": "fleetml.demo:demo",
    "db": "fleetml.store.cli:db",
    "accounts": "fleetml.store.cli:accounts",
    "keys": "fleetml.store.cli:keys",
    "metrics": "fleetml.store.cli:metrics",
    "events": "fleetml.store.cli:events",
    "import": "fleetml.ingest.cli:import_group",
    "export": "fleetml.ingest.cli:export_group",
    "simulate": "fleetml.simulate.cli:simulate",
    "train": "fleetml.cli:train",
    "score": "fleetml.cli:score",
    "backtest": "fleetml.cli:backtest",
    "forecast": "fleetml.training.forecast_cli:forecast",
    "worker": "fleetml.scheduler.cli:worker",
    "tick": "fleetml.services.cli:tick",
    "recommend": "fleetml.services.cli:recommend",
}

_HELP: dict[str, str] = {
    "serve": "Run the HTTP API (migrates the database first).",
    "demo": "Quickstart: a demo fleet with metrics, served on 127.0.0.1:8000.",
    "db": "Database schema: migrations and status.",
    "accounts": "The fleet registry: masters, servants, groups and states.",
    "keys": "API keys (roles: runtime, ops, admin).",
    "metrics": "Metric kinds and quick range reads.",
    "events": "Account events and their vocabulary.",
    "import": "Import CSV or Parquet files (metrics, events, accounts).",
    "export": "Export stored data in the import formats.",
    "simulate": "Simulate a fleet: files, the store, or a live stream to a server.",
    "train": "Train a model family (anomaly, risk, forecast) and register it in MLflow.",
    "score": "Score stored samples with a registered model.",
    "backtest": "Walk-forward, strictly causal replay of a model family.",
    "forecast": "Forecast a metric per account or group, with intervals and peaks.",
    "tick": "Run one scoring cycle of the live loop now (or as of --now).",
    "recommend": "Refresh the recommendations for ops now (or as of --now).",
    "anomaly": "Isolation-forest anomaly detection.",
    "risk": "Failure-risk classifiers (technical faults within a horizon).",
    "worker": "Run the scheduler: scoring, forecasts, nightly retrain, retention.",
}

_TRAIN: dict[str, str] = {
    "anomaly": "fleetml.training.anomaly_cli:train_anomaly",
    "risk": "fleetml.training.risk_cli:train_risk",
    "forecast": "fleetml.training.forecast_cli:train_forecast",
}
_SCORE: dict[str, str] = {
    "anomaly": "fleetml.training.anomaly_cli:score_anomaly",
    "risk": "fleetml.training.risk_cli:score_risk",
}
_BACKTEST: dict[str, str] = {
    "anomaly": "fleetml.training.anomaly_cli:backtest_anomaly",
    "risk": "fleetml.training.risk_cli:backtest_risk",
    "forecast": "fleetml.training.forecast_cli:backtest_forecast",
}


def _load(target: str) -> click.Command:
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported only when used."""

    def __init__(
        self, *args, lazy: dict[str, str] | None = None, helps: dict | None = None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})
        self.helps = {**_HELP, **(helps or {})}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, cmd_name):
        if cmd_name in self.lazy:
            return _load(self.lazy[cmd_name])
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx, formatter):
        # Listing help must not import every module (mlflow is slow): show names only.
        rows = [(name, self.helps.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy=_ROOT_COMMANDS)
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    envvar="FLEETML_HOME",
    default=None,
    help="Folder holding all local state (default ./.fleetml, or FLEETML_HOME).",
)
@click.version_option(package_name="fleetml")
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """fleetml: predictive operations for fleets of messaging-bot accounts."""
    ctx.ensure_object(dict)
    ctx.obj["home"] = home


@click.group(
    cls=LazyGroup,
    lazy=_TRAIN,
    helps={"forecast": "Choose a forecasting method per series by validation; register it."},
)
def train() -> None:
    """Train a model family, log it to MLflow and register a version."""


@click.group(cls=LazyGroup, lazy=_SCORE)
def score() -> None:
    """Score stored samples with the champion (or a given version) of a model family."""


@click.group(
    cls=LazyGroup,
    lazy=_BACKTEST,
    helps={"forecast": "Walk-forward forecasts from several origins, scored against actuals."},
)
def backtest() -> None:
    """Walk-forward, strictly causal replay of a model family over stored history."""


def main() -> None:
    cli(prog_name="fleetml")


if __name__ == "__main__":
    main()
