"""``fleetml forecast`` forecasts at the data's own step: 48 steps of hourly data are 48 hourly
points; a coarser step happens only when asked, and the output and the file say so."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest


def _hourly_frame(days: int = 18, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2026-02-02", periods=days * 24, freq="h", tz="UTC")
    t = np.arange(len(ts))
    load = 40 + 8 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 1, len(ts))
    frame = pd.DataFrame({"ts": ts, "account_id": "m1", "load": load})
    frame["ts"] = frame["ts"].astype("datetime64[ms, UTC]")
    return frame


@pytest.fixture
def hourly_store(sqlite_settings):
    from fleetml.cli_support import open_engine
    from fleetml.ingest.files import import_metrics_frame
    from fleetml.store.accounts import create_account
    from fleetml.store.engine import dispose_engines
    from fleetml.training import registry

    registry.clear_cache()
    engine = open_engine(sqlite_settings)
    with engine.begin() as conn:
        create_account(conn, account_id="m1", group="g1", actor="test")
        import_metrics_frame(conn, _hourly_frame(), register=True, actor="test")
    yield sqlite_settings
    registry.clear_cache()
    dispose_engines()


def _forecast(tmp_path, *extra):
    from click.testing import CliRunner

    from fleetml.cli import cli

    out = tmp_path / "fc.csv"
    args = ["forecast", "--metric", "load", "--out", str(out), "--n-jobs", "1", *extra]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1]), pd.read_csv(out), result


def test_horizon_48_on_hourly_data_gives_48_hourly_points(hourly_store, tmp_path):
    res, table, _ = _forecast(tmp_path, "--horizon", "48", "--no-champion")
    assert res["step"] == "1h" and res["horizon_steps"] == 48
    assert res["aggregated"] is False and res["aggregation_reason"] is None
    assert res["history_cut"] == 0
    for level in (80, 95):
        part = table[table["level"] == level]
        ts = pd.to_datetime(part["ts"])
        assert len(part) == 48
        assert (ts.diff().dropna() == pd.Timedelta("1h")).all()
        assert ts.iloc[0] == pd.Timestamp("2026-02-20", tz="UTC")  # one step past the last
    assert (~table["aggregated"]).all() and (table["step"] == "1h").all()


def test_an_explicit_step_aggregates_and_says_so(hourly_store, tmp_path):
    res, table, result = _forecast(tmp_path, "--horizon", "48h", "--step", "2h", "--no-champion")
    assert res["step"] == "2h" and res["native_step"] == "1h"
    assert res["horizon_steps"] == 24 and res["aggregated"] is True
    assert "2h" in res["aggregation_reason"]
    assert table["aggregated"].all() and table["note"].str.contains("aggregated").all()
    assert "note: aggregated" in result.stderr


def test_a_finer_step_than_the_data_is_refused(hourly_store, tmp_path):
    from click.testing import CliRunner

    from fleetml.cli import cli

    out = tmp_path / "x.csv"
    result = CliRunner().invoke(
        cli, ["forecast", "--metric", "load", "--step", "30min", "--no-champion", "--out", str(out)]
    )
    assert result.exit_code != 0 and "finer than the data's sampling step" in result.output


def test_a_long_history_is_cut_not_coarsened(hourly_store, tmp_path):
    res, table, result = _forecast(
        tmp_path, "--horizon", "24", "--max-points", "100", "--no-champion"
    )
    assert res["step"] == "1h" and res["aggregated"] is False
    assert res["history_cut"] == 1 and res["max_points"] == 100
    assert len(table[table["level"] == 95]) == 24
    assert "newest 100 points" in result.stderr


def test_jittered_timestamps_keep_the_regular_step_they_stand_for():
    """Samples pushed "every minute" arrive 60.004 s apart on average: the native step is
    1 min on the clock's grid, not 60.004 s drifting away from the actuals (a notebook's
    forecast-vs-actual comparison matched no timestamp at all)."""
    import numpy as np
    import pandas as pd

    from fleetml.models.forecasting.fleet import fleet_step
    from fleetml.models.forecasting.series import regular_step

    rng = np.random.default_rng(0)
    n = 2000
    start = pd.Timestamp("2026-01-01", tz="UTC").value // 10**6
    ts = start + np.cumsum(60_000 + rng.integers(-3_000, 3_020, n))
    frame = pd.DataFrame(
        {"ts": pd.to_datetime(ts, unit="ms", utc=True), "account_id": "a", "load": 1.0}
    )
    assert fleet_step(frame) == pd.Timedelta("1min")
    assert regular_step(pd.Timedelta(seconds=299.2)) == pd.Timedelta("5min")
    assert regular_step(pd.Timedelta(seconds=3601)) == pd.Timedelta("1h")
    assert regular_step(pd.Timedelta(seconds=47.4)) == pd.Timedelta(
        seconds=47
    )  # no round step near
