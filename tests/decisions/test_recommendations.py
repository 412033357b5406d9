"""Tuning recommendations: each generator fires on data built to trigger it, with the right setting
and evidence, stays quiet on data built not to, and returns nothing for empty input."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from fleetml.decisions.contracts import (
    POLICY_FIELDS,
    Algorithm,
    Fleet,
    GroupPolicy,
    Mode,
    Recommendation,
    RecommendationKind,
    empty_events,
)
from fleetml.decisions.drift import psi_table
from fleetml.decisions.recommendations import (
    add_servants,
    adjust_failover_threshold,
    change_algorithm,
    investigate_anomaly,
    lower_send_rate,
    promote_mode,
    retrain_drift,
    review_enforcement,
)
from fleetml.vocab import ENFORCEMENT_KINDS

PEAK_TS = 1_767_254_400_000  # 2026-01-01T08:00:00Z


# --- data builders ------------------------------------------------------------------------


@pytest.fixture
def fleet() -> Fleet:
    rows = [
        ("m1", "master", "m1", "g1", 60.0),
        ("s1", "servant", "m1", "g1", 30.0),
        ("s2", "servant", "m1", "g1", 30.0),
        ("m2", "master", "m2", "g2", 100.0),
        ("s3", "servant", "m2", "g2", 100.0),
        ("m3", "master", "m3", "g3", 50.0),
        ("s4", "servant", "m3", "g3", 50.0),
        ("m4", "master", "m4", "g4", 80.0),
        ("m5", "master", "m5", "g5", 50.0),
        ("s5", "servant", "m5", "g5", 55.0),
        ("solo", "master", "solo", "g6", 50.0),
    ]
    frame = pd.DataFrame(rows, columns=["account_id", "role", "master_id", "group", "capacity"])
    return Fleet.from_records(frame)


def forecasts() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "group": ["g1", "g1", "g2", "g9"],
            "peak": [150.0, 200.0, 50.0, 500.0],
            "peak_ts_ms": [PEAK_TS - 3_600_000, PEAK_TS, PEAK_TS, PEAK_TS],
        }
    )


CAPACITY = pd.Series({"g1": 120.0, "g2": 100.0})  # g9 has no known capacity


def send_history(seed: int = 1) -> pd.DataFrame:
    """``hot`` errs above 30 msgs/min, ``calm`` never does, ``short`` has too few intervals."""
    rng = np.random.default_rng(seed)
    n = 400
    rate = rng.uniform(5, 60, n)
    hot_err = np.where(rate > 30, 0.15, 0.01) + rng.uniform(0, 0.005, n)
    calm_err = 0.01 + rng.uniform(0, 0.005, n)
    short_rate = rng.uniform(5, 60, 20)
    return pd.DataFrame(
        {
            "account_id": ["hot"] * n + ["calm"] * n + ["short"] * 20,
            "group": ["g1"] * n + ["g2"] * n + ["g2"] * 20,
            "send_rate": np.concatenate([rate, rate, short_rate]),
            "error_rate": np.concatenate([hot_err, calm_err, np.where(short_rate > 30, 0.3, 0)]),
        }
    )


def failover_outcomes(seed: int = 2) -> pd.DataFrame:
    """g1: faults score 0.4-1, the rest 0-0.5; g3: too few faults to judge."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0.4, 1.0, 60)
    neg = rng.uniform(0.0, 0.5, 240)
    g1 = pd.DataFrame(
        {
            "group": "g1",
            "score": np.concatenate([pos, neg]),
            "fault_followed": [True] * 60 + [False] * 240,
        }
    )
    g3 = pd.DataFrame(
        {
            "group": "g3",
            "score": np.concatenate([[0.9, 0.95], rng.uniform(0, 0.5, 60)]),
            "fault_followed": [True, True] + [False] * 60,
        }
    )
    return pd.concat([g1, g3], ignore_index=True)


def algorithm_stats() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "group": ["g1", "g2", "g3", "g5", "g6"],
            "latency_p95_spread": [1.2, 3.0, 5.0, 1.1, 9.0],
            "capacity_cv": [0.33, 0.0, 0.0, 0.05, 0.0],
        }
    )


ALGORITHMS = {
    "g1": GroupPolicy(algorithm=Algorithm.ROUND_ROBIN),  # unequal capacities -> weighted
    "g2": GroupPolicy(algorithm=Algorithm.WEIGHTED_ROUND_ROBIN),  # slow account -> p2c
    "g3": GroupPolicy(algorithm=Algorithm.P2C_EWMA),  # already latency-aware
    "g5": GroupPolicy(algorithm=Algorithm.ROUND_ROBIN),  # near-equal, fast: keep
    "g6": GroupPolicy(algorithm=Algorithm.ROUND_ROBIN),  # one account: nothing to balance
}


def drift_table(shift: float, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 2000
    ref = pd.DataFrame({"cpu_pct": rng.normal(50, 10, n), "queue_depth": rng.exponential(5, n)})
    cur = pd.DataFrame(
        {"cpu_pct": rng.normal(50 + shift, 10, n), "queue_depth": rng.exponential(5, n)}
    )
    return psi_table(ref, cur)


def anomaly_predictions() -> pd.DataFrame:
    rows = [
        ("a1", "anomaly", 0.95, True, 5, "cpu_pct;queue_depth"),
        ("a1", "anomaly", 0.90, True, 3, "cpu_pct"),
        ("a2", "anomaly", 0.99, True, 2, "cpu_pct"),  # too short
        ("a3", "risk", 0.90, True, 9, ""),  # not an anomaly
        ("a4", "anomaly", 0.20, False, 4, ""),  # not flagged
        ("a5", "anomaly", 0.80, True, 3, ["latency_ms", "error_rate"]),
        ("a6", "anomaly", 0.85, True, 7, '["send_rate"]'),
    ]
    frame = pd.DataFrame(rows, columns=["account_id", "family", "score", "flag", "run", "top"])
    return frame.rename(columns={"top": "top_metrics"}).assign(model_version=4)


MODES = {
    "ready": GroupPolicy(mode=Mode.SHADOW),
    "low_recall": GroupPolicy(mode=Mode.SHADOW),
    "approve_ready": GroupPolicy(mode=Mode.APPROVE),
    "approve_few": GroupPolicy(mode=Mode.APPROVE),
    "auto": GroupPolicy(mode=Mode.AUTO),
    "off": GroupPolicy(mode=Mode.OFF),
}


def shadow_stats() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "group": ["ready", "low_recall", "approve_ready", "approve_few", "auto", "off", "new"],
            "decisions": [12, 40, 25, 15, 100, 100, 30],
            "precision": [0.85, 0.95, 0.95, 0.97, 1.0, 1.0, 0.9],
            "recall": [0.6, 0.3, 0.4, 0.9, 1.0, 1.0, 0.7],
        }
    )


def enforcement_events() -> pd.DataFrame:
    kinds = sorted(ENFORCEMENT_KINDS)
    rows = [
        (PEAK_TS + i * 60_000, f"m{i + 1}", kind, f"platform said {kind}")
        for i, kind in enumerate(kinds)
    ]
    rows += [
        (PEAK_TS - 60_000, "m1", "quality_drop", {"rating": "low"}),  # older: m1's latest wins
        (PEAK_TS, "s1", "crash", ""),  # a fault: never an enforcement review
        (PEAK_TS, "s2", "failover", ""),
    ]
    return pd.DataFrame(rows, columns=["ts_ms", "account_id", "kind", "detail"])


def all_recommendations(fleet: Fleet) -> list[Recommendation]:
    return [
        *add_servants(fleet, forecasts(), available_capacity=CAPACITY),
        *lower_send_rate(send_history()),
        *adjust_failover_threshold(failover_outcomes(), {"g1": GroupPolicy(risk_on=0.8)}),
        *change_algorithm(fleet, ALGORITHMS, algorithm_stats()),
        *retrain_drift(drift_table(15.0), family="anomaly", model_version=4),
        *investigate_anomaly(anomaly_predictions()),
        *promote_mode(MODES, shadow_stats()),
        *review_enforcement(enforcement_events(), fleet),
    ]


def by_key(recs: list[Recommendation]) -> dict[str, Recommendation]:
    return {r.dedup_key: r for r in recs}


# --- 1. add servants -----------------------------------------------------------------------


def test_add_servants_covers_the_gap_before_the_peak(fleet):
    recs = add_servants(fleet, forecasts(), available_capacity=CAPACITY)
    assert [r.dedup_key for r in recs] == ["add_servants:g1"]
    (rec,) = recs
    # 200 msgs/min at 80 % needs 250; 130 missing over 30-msg/min servants: 5 servants
    assert rec.expected_impact["servants"] == 5
    assert "5 servants" in rec.title and "2026-01-01 08:00 UTC" in rec.title
    assert rec.evidence["peak"] == 200.0 and rec.evidence["peak_ts_ms"] == PEAK_TS
    assert rec.evidence["servant_capacity"] == 30.0
    assert rec.expected_impact["utilisation_at_peak_after"] <= 0.8
    assert rec.group == "g1" and rec.setting is None


def test_add_servants_quiet_when_capacity_suffices(fleet):
    ample = pd.Series({"g1": 1000.0, "g2": 1000.0, "g9": 1000.0})
    assert add_servants(fleet, forecasts(), available_capacity=ample) == []


def test_add_servants_more_margin_more_confidence(fleet):
    f = pd.DataFrame({"group": ["g1", "g2"], "peak": [100.0, 400.0], "peak_ts_ms": PEAK_TS})
    recs = by_key(add_servants(fleet, f, available_capacity=CAPACITY))
    assert recs["add_servants:g2"].confidence > recs["add_servants:g1"].confidence


# --- 2. lower send rate --------------------------------------------------------------------


def test_lower_send_rate_caps_at_the_error_knee():
    recs = lower_send_rate(send_history())
    assert [r.dedup_key for r in recs] == ["lower_send_rate:hot"]
    (rec,) = recs
    knee = rec.evidence["knee_send_rate"]
    # the lower edge of the bin holding the true knee (30): at most one bin (55/10) below it
    assert 30 - 5.5 <= knee <= 30
    assert rec.expected_impact["cap_rate_per_min"] == knee
    assert rec.evidence["error_rate_above_knee"] > 0.1 > rec.evidence["baseline_error_rate"]
    assert rec.expected_impact["error_rate_expected"] < rec.expected_impact["error_rate_now"]
    assert rec.account_id == "hot" and rec.group == "g1" and rec.setting is None
    assert rec.evidence["n_samples"] == 400


def test_lower_send_rate_ignores_a_late_blip():
    # errors rise only in one middle bin and fall back: no sustained knee
    rng = np.random.default_rng(4)
    rate = rng.uniform(5, 60, 400)
    err = np.where((rate > 30) & (rate < 35), 0.2, 0.01)
    history = pd.DataFrame({"account_id": "a", "group": "g", "send_rate": rate, "error_rate": err})
    assert lower_send_rate(history) == []


def test_lower_send_rate_confidence_grows_with_samples():
    small = lower_send_rate(send_history().groupby("account_id").head(60))
    large = lower_send_rate(send_history())
    assert small and large
    assert large[0].confidence > small[0].confidence


# --- 3. failover threshold -----------------------------------------------------------------


def test_adjust_failover_threshold_picks_the_most_recall_at_the_precision():
    outcomes = failover_outcomes()
    recs = adjust_failover_threshold(outcomes, {"g1": GroupPolicy(risk_on=0.8)})
    assert [r.dedup_key for r in recs] == ["adjust_failover_threshold:g1"]
    (rec,) = recs
    proposed = rec.setting["value"]
    assert rec.setting == {"group": "g1", "field": "risk_on", "value": proposed}
    g1 = outcomes[outcomes["group"] == "g1"]
    flagged = g1[g1["score"] >= proposed]
    precision = flagged["fault_followed"].mean()
    recall = flagged["fault_followed"].sum() / g1["fault_followed"].sum()
    assert precision >= 0.8
    assert rec.evidence["proposed_precision"] == pytest.approx(precision, abs=1e-4)
    assert rec.evidence["proposed_recall"] == pytest.approx(recall, abs=1e-4)
    # the lowest such threshold: one step lower would fall below the precision
    lower = g1["score"][g1["score"] < proposed].max()
    assert g1[g1["score"] >= lower]["fault_followed"].mean() < 0.8
    assert rec.evidence["proposed_recall"] > rec.evidence["current_recall"]
    assert rec.evidence["n"] == 300 and rec.evidence["positives"] == 60


def test_adjust_failover_threshold_quiet_when_already_there():
    outcomes = failover_outcomes()
    (first,) = adjust_failover_threshold(outcomes, {"g1": GroupPolicy(risk_on=0.8)})
    tuned = {"g1": GroupPolicy(risk_on=first.setting["value"] + 0.01)}
    assert adjust_failover_threshold(outcomes, tuned) == []


def test_adjust_failover_threshold_needs_enough_faults():
    outcomes = failover_outcomes()
    recs = adjust_failover_threshold(outcomes, {"g3": GroupPolicy(risk_on=0.1)})
    assert all(r.group != "g3" for r in recs)
    few = outcomes[outcomes["group"] == "g1"].head(15)
    assert adjust_failover_threshold(few, {}) == []


def test_adjust_failover_threshold_keeps_hysteresis():
    policy = {"g1": GroupPolicy(risk_on=0.9, risk_off=0.6)}
    (rec,) = adjust_failover_threshold(failover_outcomes(), policy)
    assert rec.evidence["proposed_threshold"] <= 0.6
    assert rec.setting is None and "risk_off" in rec.title


# --- 4. algorithm --------------------------------------------------------------------------


def test_change_algorithm_rules(fleet):
    recs = by_key(change_algorithm(fleet, ALGORITHMS, algorithm_stats()))
    assert set(recs) == {"change_algorithm:g1", "change_algorithm:g2"}
    assert recs["change_algorithm:g1"].setting == {
        "group": "g1",
        "field": "algorithm",
        "value": "weighted_round_robin",
    }
    assert recs["change_algorithm:g2"].setting["value"] == "p2c_ewma"
    assert recs["change_algorithm:g2"].evidence["latency_p95_spread"] == 3.0
    assert recs["change_algorithm:g1"].evidence["capacity_cv"] == 0.33


def test_change_algorithm_slow_round_robin_goes_to_p2c(fleet):
    stats = pd.DataFrame({"group": ["g1"], "latency_p95_spread": [4.0], "capacity_cv": [0.5]})
    (rec,) = change_algorithm(fleet, ALGORITHMS, stats)
    assert rec.setting["value"] == Algorithm.P2C_EWMA.value


def test_change_algorithm_fills_cv_from_the_fleet(fleet):
    # g1's capacities 60/30/30 have a coefficient of variation of 0.35
    stats = pd.DataFrame({"group": ["g1"], "latency_p95_spread": [1.0], "capacity_cv": [np.nan]})
    (rec,) = change_algorithm(fleet, ALGORITHMS, stats)
    assert rec.evidence["capacity_cv"] == pytest.approx(0.3536, abs=1e-3)


# --- 5. drift ------------------------------------------------------------------------------


def test_retrain_drift_fires_on_major_drift():
    (rec,) = retrain_drift(drift_table(15.0), family="anomaly", model_version=4)
    assert rec.dedup_key == "retrain_drift:anomaly" and rec.group is None
    top = rec.evidence["top_columns"]
    assert top[0]["column"] == "cpu_pct" and top[0]["psi"] >= 0.25
    assert rec.evidence["model_version"] == 4 and rec.evidence["n_drifted"] == 1
    assert "v4" in rec.title


def test_retrain_drift_quiet_when_stable():
    assert retrain_drift(drift_table(0.0), family="anomaly", model_version=4) == []


# --- 6. anomalies --------------------------------------------------------------------------


def test_investigate_anomaly_one_per_lasting_run():
    recs = by_key(investigate_anomaly(anomaly_predictions()))
    assert set(recs) == {
        "investigate_anomaly:a1",
        "investigate_anomaly:a5",
        "investigate_anomaly:a6",
    }
    a1 = recs["investigate_anomaly:a1"]
    assert a1.evidence["run"] == 5 and a1.evidence["score"] == 0.95
    assert a1.evidence["top_metrics"] == ["cpu_pct", "queue_depth"]
    assert a1.evidence["model_version"] == 4 and a1.account_id == "a1"
    assert recs["investigate_anomaly:a5"].evidence["top_metrics"] == ["latency_ms", "error_rate"]
    assert recs["investigate_anomaly:a6"].evidence["top_metrics"] == ["send_rate"]


def test_investigate_anomaly_min_run():
    assert len(investigate_anomaly(anomaly_predictions(), min_run=6)) == 1


# --- 7. autonomy ladder --------------------------------------------------------------------


def test_promote_mode_climbs_one_rung():
    recs = by_key(promote_mode(MODES, shadow_stats()))
    assert set(recs) == {"promote_mode:ready", "promote_mode:approve_ready", "promote_mode:new"}
    ready = recs["promote_mode:ready"]
    assert ready.setting == {"group": "ready", "field": "mode", "value": "approve"}
    assert ready.evidence["precision"] == 0.85 and ready.evidence["recall"] == 0.6
    assert ready.evidence["decisions"] == 12
    assert recs["promote_mode:approve_ready"].setting["value"] == "auto"
    # a group with no explicit policy runs the default (shadow)
    assert recs["promote_mode:new"].setting["value"] == "approve"


def test_promote_mode_quiet_below_the_bar():
    stats = pd.DataFrame(
        {"group": ["ready"], "decisions": [9], "precision": [0.99], "recall": [0.99]}
    )
    assert promote_mode(MODES, stats) == []


# --- 8. enforcement ------------------------------------------------------------------------


def test_review_enforcement_covers_every_kind(fleet):
    recs = review_enforcement(enforcement_events(), fleet)
    assert {r.evidence["kind"] for r in recs} == set(ENFORCEMENT_KINDS)
    assert len(recs) == len(ENFORCEMENT_KINDS)
    for rec in recs:
        assert rec.setting is None
        assert rec.dedup_key == f"review_enforcement:{rec.account_id}"
        assert "drained and paused" in rec.title
        assert rec.evidence["detail"] == f"platform said {rec.evidence['kind']}"
    m1 = by_key(recs)["review_enforcement:m1"]
    assert m1.evidence["events"] == 2 and m1.evidence["ts_ms"] == PEAK_TS
    assert m1.group == "g1"


def test_review_enforcement_ignores_faults(fleet):
    events = enforcement_events()
    assert review_enforcement(events[~events["kind"].isin(ENFORCEMENT_KINDS)], fleet) == []


# --- every generator -----------------------------------------------------------------------


GENERATORS = {
    "add_servants": lambda fleet, empty: add_servants(
        fleet, empty, available_capacity=pd.Series(dtype=float)
    ),
    "lower_send_rate": lambda fleet, empty: lower_send_rate(empty),
    "adjust_failover_threshold": lambda fleet, empty: adjust_failover_threshold(empty, {}),
    "change_algorithm": lambda fleet, empty: change_algorithm(fleet, {}, empty),
    "retrain_drift": lambda fleet, empty: retrain_drift(empty, family="risk", model_version=None),
    "investigate_anomaly": lambda fleet, empty: investigate_anomaly(empty),
    "promote_mode": lambda fleet, empty: promote_mode({}, empty),
    "review_enforcement": lambda fleet, empty: review_enforcement(empty, fleet),
}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_empty_input_gives_nothing(name, fleet):
    assert GENERATORS[name](fleet, pd.DataFrame()) == []


def test_empty_event_frame_gives_nothing(fleet):
    assert review_enforcement(empty_events(), fleet) == []


def test_every_kind_fires_and_dedup_keys_are_stable(fleet):
    first, second = all_recommendations(fleet), all_recommendations(fleet)
    assert {r.kind for r in first} == set(RecommendationKind)
    assert [r.dedup_key for r in first] == [r.dedup_key for r in second]
    assert len({r.dedup_key for r in first}) == len(first)
    for rec in first:
        assert rec.dedup_key.startswith(f"{rec.kind.value}:")


def test_recommendations_are_serialisable_and_well_formed(fleet):
    for rec in all_recommendations(fleet):
        assert json.loads(json.dumps(rec.evidence, allow_nan=False)) == rec.evidence
        assert json.loads(json.dumps(rec.expected_impact, allow_nan=False)) == rec.expected_impact
        assert isinstance(rec.expected_impact["summary"], str) and rec.expected_impact["summary"]
        assert rec.title and "\n" not in rec.title
        assert 0.0 <= rec.confidence <= 1.0 and not math.isnan(rec.confidence)


def test_settings_name_a_policy_field_with_a_valid_value(fleet):
    settings = [r.setting for r in all_recommendations(fleet) if r.setting is not None]
    assert {s["field"] for s in settings} == {"risk_on", "algorithm", "mode"}
    for setting in settings:
        assert set(setting) == {"group", "field", "value"}
        kind = POLICY_FIELDS[setting["field"]]
        assert kind(setting["value"]) == setting["value"]
        assert json.loads(json.dumps(setting)) == setting
        # accepting it yields a valid policy
        GroupPolicy().replace(**{setting["field"]: kind(setting["value"])})
        if setting["field"] == "risk_on":
            assert 0.0 <= setting["value"] <= 1.0
