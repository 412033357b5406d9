"""The offline generator: formats, reproducibility, realism and honesty of the data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fleetml.simulate import COUNTERS, METRICS, FleetSimulator, SimConfig, drive, simulate_fleet
from fleetml.simulate.config import LEAD_TIMES
from fleetml.simulate.policy import ReactiveBaselinePolicy
from fleetml.simulate.truth import fault_table
from fleetml.vocab import ENFORCEMENT_KINDS, EVENT_KINDS, FAULT_KINDS

from ._precursor import auc, window_scores

SMALL = SimConfig(masters=2, servants=1, days=0.5)


def test_same_seed_same_fleet_other_seed_other_fleet():
    a = simulate_fleet(SMALL, seed=3)
    b = simulate_fleet(SMALL, seed=3)
    c = simulate_fleet(SMALL, seed=4)
    pd.testing.assert_frame_equal(a.metrics, b.metrics)
    pd.testing.assert_frame_equal(a.events, b.events)
    assert a.ground_truth == b.ground_truth
    assert not a.metrics["msgs_sent"].equals(c.metrics["msgs_sent"])


def test_metrics_frame_follows_the_import_contract(busy_run):
    frame = busy_run.metrics
    assert list(frame.columns) == ["ts", "account_id", *METRICS]
    assert str(frame["ts"].dtype) == "datetime64[ms, UTC]"
    assert frame["account_id"].dtype == "str"
    assert all(frame[m].dtype == np.float64 for m in METRICS)
    assert set(frame["account_id"]) == set(busy_run.accounts["account_id"])
    accounts = busy_run.accounts
    assert list(accounts.columns) == ["account_id", "role", "master_id", "group", "capacity"]
    servants = accounts[accounts["role"] == "servant"]
    assert (
        servants["master_id"].isin(accounts.loc[accounts["role"] == "master", "account_id"]).all()
    )
    assert accounts.loc[accounts["role"] == "master", "master_id"].isna().all()


def test_counters_are_cumulative_and_reset_on_restart(busy_run):
    frame = busy_run.metrics.drop_duplicates(["account_id", "ts"]).sort_values(["account_id", "ts"])
    sent = frame.groupby("account_id")["msgs_sent"]
    drops = (sent.diff() < 0).sum()
    rises = (sent.diff() > 0).sum()
    assert rises > 20 * drops > 0  # mostly rising, with some resets (crash recoveries, restarts)
    crashes = [f for f in busy_run.ground_truth["faults"] if f["kind"] == "crash"]
    assert crashes, "the busy fleet should contain a crash"


def test_events_use_the_vocabulary_and_enforcement_is_never_a_fault(busy_run):
    events = busy_run.events
    assert set(events["kind"]) <= EVENT_KINDS
    truth = busy_run.ground_truth
    assert truth["faults"] and truth["enforcement"]
    assert {f["kind"] for f in truth["faults"]} <= FAULT_KINDS
    assert {e["kind"] for e in truth["enforcement"]} <= ENFORCEMENT_KINDS
    enforced_events = events[events["kind"].isin(sorted(ENFORCEMENT_KINDS))]
    fault_keys = {(f["account_id"], f["onset"]) for f in truth["faults"]}
    for row in enforced_events.itertuples():
        key = (row.account_id, row.ts.isoformat())
        assert key not in fault_keys or row.kind not in FAULT_KINDS
    # every fault event in the file is a ground-truth fault at its onset
    fault_events = events[events["kind"].isin(sorted(FAULT_KINDS))]
    assert {(r.account_id, r.ts.isoformat()) for r in fault_events.itertuples()} <= fault_keys


def test_ground_truth_describes_every_fault(busy_run):
    for fault in busy_run.ground_truth["faults"]:
        onset = pd.Timestamp(fault["onset"])
        assert pd.Timestamp(fault["precursor_start"]) <= onset < pd.Timestamp(fault["recovery"])
        assert fault["foreseeable"] == (fault["mechanism"] != "sudden")
    kinds = {a["kind"] for a in busy_run.ground_truth["anomalies"]}
    assert {"campaign", "burst"} & kinds
    assert busy_run.ground_truth["maintenance"]


def test_exports_carry_nuisance(busy_run):
    frame = busy_run.metrics
    assert frame.duplicated(["account_id", "ts"]).any()  # duplicated samples
    ts_ms = frame["ts"].astype("int64")
    assert (ts_ms % 60_000 != 0).mean() > 0.9  # clock jitter
    in_file_order = frame.groupby("account_id", sort=False)["ts"].apply(
        lambda s: bool((s.diff().dt.total_seconds() < 0).any())
    )
    assert in_file_order.any()  # late rows arrive out of order
    assert frame[list(METRICS)].isna().any(axis=1).any()  # NaN cells
    summary = busy_run.nuisance
    assert summary["missing_rows"] > 0 and summary["duplicated_rows"] > 0


def test_daily_seasonality_is_visible():
    config = SimConfig(
        masters=2,
        servants=1,
        days=4,
        step_s=300,
        fault_rate_per_day=0.0,
        campaign_rate_per_day=0.0,
        nuisance=False,
    )
    sim = FleetSimulator(config, seed=2)
    demand = sim.demand.msgs.sum(axis=0)
    lag = 86400 // config.step_s
    x = demand - demand.mean()
    acf_day = float((x[:-lag] * x[lag:]).sum() / (x * x).sum())
    acf_half = float((x[: -lag // 2] * x[lag // 2 :]).sum() / (x * x).sum())
    assert acf_day > 0.5
    assert acf_day > acf_half + 0.3


def test_fault_rates_and_lead_times_are_realistic():
    """A 10 x 3 x 7-day fleet has dozens of exogenous faults of every kind, hours apart."""
    sim = FleetSimulator(SimConfig(), seed=5, record=False)
    rows = sim.schedule.faults.rows()
    in_run = (rows["onset"] >= 0) & (rows["onset"] < sim.config.n_steps)
    kinds = pd.Series(
        np.asarray(["none", "crash", "logout", "disconnect", "unreachable", "degraded"])[
            rows["kind"][in_run]
        ]
    )
    assert in_run.sum() >= 25
    assert all(
        kinds.value_counts().get(k, 0) >= 3
        for k in ("crash", "logout", "disconnect", "unreachable")
    )
    onsets = pd.DataFrame({"a": rows["account"][in_run], "on": rows["onset"][in_run]})
    gaps = onsets.sort_values(["a", "on"]).groupby("a")["on"].diff().dropna()
    assert gaps.mean() * sim.config.dt_min > 6 * 60  # several hours apart on average
    lead = (rows["onset"] - rows["start"]) * sim.config.dt_min
    codes = rows["code"]
    for code, name in enumerate(["none", *LEAD_TIMES], start=0):
        if name in LEAD_TIMES:
            spec = LEAD_TIMES[name]
            sel = lead[codes == code]
            assert spec.lo <= np.median(sel) <= spec.hi
    assert (lead[codes == 5] == 0).all()  # sudden faults have no precursor


@pytest.mark.slow
def test_foreseeable_precursors_differ_and_sudden_faults_do_not():
    config = SimConfig(
        masters=6,
        servants=3,
        days=3,
        fault_rate_per_day=0.8,
        fault_mix=(
            ("memory_leak", 0.15),
            ("session_decay", 0.15),
            ("network_degradation", 0.15),
            ("host_degradation", 0.15),
            ("sudden", 0.4),
        ),
    )
    sim = FleetSimulator(config, seed=21)
    drive(sim, ReactiveBaselinePolicy())
    scores, controls = window_scores(sim, window_steps=30, day_steps=1440)
    assert len(scores["foreseeable"]) >= 20 and len(scores["sudden"]) >= 10 and len(controls) >= 10
    assert auc(scores["foreseeable"], controls) > 0.85
    assert 0.25 < auc(scores["sudden"], controls) < 0.7


def test_overload_faults_follow_high_utilisation():
    config = SimConfig(
        masters=3, servants=1, days=1, peak_utilisation=(1.0, 1.2), fault_rate_per_day=0.0
    )
    sim = FleetSimulator(config, seed=4)
    drive(sim, ReactiveBaselinePolicy())
    faults = fault_table(sim)
    over = faults[faults["mechanism"] == "overload"]
    assert len(over) > 0
    assert (over["kind"] == "degraded").all()
    assert (over["lead_time_min"] > 0).mean() > 0.8
    assert set(COUNTERS) >= {"rate_limit_hits"}
