"""bench/independent_fleet.py: its generator, its labels, and a run through the CLI."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "independent_fleet.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_independent_fleet", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_labels_mark_the_rows_within_the_horizon_before_a_fault_of_the_same_account():
    bench = _bench()
    ts = pd.date_range("2026-03-01", periods=12, freq="10min", tz="UTC", unit="us")
    frame = pd.DataFrame({"ts": list(ts) * 2, "account_id": ["a"] * 12 + ["b"] * 12})
    faults = pd.DataFrame(
        {"ts": pd.DatetimeIndex([ts[6]]).as_unit("ns"), "account_id": ["a"], "kind": ["crash"]}
    )
    y = bench.labels(frame, faults, "30min")
    # rows at t in [fault - 30 min, fault) of account a; none of account b, none after
    assert np.flatnonzero(y).tolist() == [3, 4, 5]


def test_the_generator_writes_local_time_across_the_dst_change_and_resetting_counters(tmp_path):
    bench = _bench()
    made = bench.generate(tmp_path, seed=5, masters=2, servants=1, days=30)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert made["rows"] == len(metrics)
    offsets = set(metrics["ts"].str[-6:])
    assert offsets == {"+01:00", "+02:00"}  # CET, then CEST after 2026-03-29
    events = pd.read_csv(tmp_path / "events.csv")
    assert set(events["kind"]) >= {"crash", "logout"}
    sent = metrics[metrics["account_id"] == "bot00"]["sent_total"].to_numpy()
    assert (np.diff(sent) < 0).any()  # a restart resets the counter
    accounts = pd.read_csv(tmp_path / "accounts.csv")
    assert accounts["role"].value_counts().to_dict() == {"master": 2, "servant": 2}


@pytest.mark.slow
def test_a_small_fleet_runs_through_the_cli_beside_the_baseline(tmp_path):
    bench = _bench()
    out = bench.main(
        [
            "--masters", "3", "--servants", "2", "--days", "14", "--train-days", "10",
            "--seed", "3", "--keep", str(tmp_path),
        ]
    )  # fmt: skip
    assert set(out["horizons"]) == {"1h", "6h", "24h"}
    rates = [out["horizons"][h]["positive_rate"] for h in ("1h", "6h", "24h")]
    assert 0 < rates[0] <= rates[1] <= rates[2] < 1
    for h in out["horizons"].values():
        assert h["rows"] > 1000
        assert 0 < h["fleetml_pr_auc"] <= 1 and 0 < h["baseline_pr_auc"] <= 1
    assert (tmp_path / "scores.parquet").exists()
