"""`fleetml simulate` from the command line: files, formats, loading into the store."""

from __future__ import annotations

import json

import pandas as pd
from click.testing import CliRunner

from fleetml.cli import cli
from fleetml.simulate import COUNTERS, METRICS

ARGS = ["--masters", "2", "--servants", "1", "--days", "0.1", "--seed", "4"]


def _run(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def test_simulate_writes_the_import_formats(tmp_path):
    out = tmp_path / "run"
    result = _run("simulate", *ARGS, "--out", str(out))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["accounts"] == 4 and summary["metric_rows"] > 0
    assert {p.name for p in out.iterdir()} == {
        "accounts.csv",
        "metrics.parquet",
        "events.csv",
        "ground_truth.json",
    }
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert list(metrics.columns) == ["ts", "account_id", *METRICS]
    assert str(metrics["ts"].dtype) == "datetime64[ms, UTC]"
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["seed"] == 4 and set(truth["counters"]) == set(COUNTERS)
    events = pd.read_csv(out / "events.csv")
    assert list(events.columns) == ["ts", "account_id", "kind", "detail"]


def test_csv_format_writes_iso_timestamps(tmp_path):
    out = tmp_path / "csv"
    result = _run("simulate", *ARGS, "--step", "5m", "--format", "csv", "--out", str(out))
    assert result.exit_code == 0, result.output
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["ts"].str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$").all()
    assert len(metrics) >= 4 * 28  # 0.1 day at 5-minute steps, minus a few missing samples


def test_into_home_loads_the_store(tmp_path):
    home = tmp_path / "home"
    result = _run("--home", str(home), "simulate", *ARGS, "--into-home")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["imported"]["metrics"]["rejected"] == 0
    from fleetml.config import get_settings
    from fleetml.store.accounts import accounts_frame
    from fleetml.store.engine import get_engine
    from fleetml.store.metrics import metric_kinds, read_metrics

    engine = get_engine(get_settings(home))
    accounts = accounts_frame(engine)
    assert sorted(accounts["role"].value_counts().to_dict().items()) == [
        ("master", 2),
        ("servant", 2),
    ]
    assert len(read_metrics(engine)) == summary["imported"]["metrics"]["rows_stored"]
    assert metric_kinds(engine)["msgs_sent"] == "counter"


def test_simulate_needs_a_destination_and_a_valid_step(tmp_path):
    result = CliRunner().invoke(cli, ["simulate", *ARGS])
    assert result.exit_code != 0 and "--out" in result.output
    result = CliRunner().invoke(
        cli, ["simulate", *ARGS, "--step", "7 parsecs", "--out", str(tmp_path)]
    )
    assert result.exit_code != 0 and "use e.g. 30s, 1m" in result.output
