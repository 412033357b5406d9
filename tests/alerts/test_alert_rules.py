"""The pure alert rules, and the cost of a quiet tick over 10,000 accounts."""

from __future__ import annotations

import numpy as np
import pandas as pd
from alertdata import NOW, anomaly, predictions, risk

from fleetml.alerts import rules

NO_ALERTS = pd.DataFrame(columns=["id", "account_id", "group", "kind", "state", "silenced"])


def silences(*rows: dict) -> pd.DataFrame:
    base = {"account_id": None, "group": None, "kind": None, "deleted_at": None}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_sub_hour_horizon_is_critical_and_unreadable_horizon_is_not():
    frame = predictions(risk("a1", "30min", run=2), risk("a2", "weekly", run=2))
    cond = rules.tick_conditions(frame, open_alerts=NO_ALERTS, min_duration=2)
    severity = dict(zip(cond["account_id"], cond["severity"], strict=True))
    assert severity == {"a1": "critical", "a2": "warning"}


def test_an_anomaly_alert_shows_the_score_its_rule_paged_on():
    """A habituating model reports a lower score on rows that are no news; the alert names the
    calibrated score kept in the prediction's detail (what crossed the threshold)."""
    frame = predictions(
        anomaly("a1", score=0.31, detail={"calibrated_score": 0.62, "habituation_max": 0.7}),
        anomaly("a2", score=0.55),  # a model without habituation: no detail
    )
    cond = rules.tick_conditions(frame, open_alerts=NO_ALERTS, min_duration=2)
    summary = dict(zip(cond["account_id"], cond["summary"], strict=True))
    assert "(score 0.62)" in summary["a1"] and "(score 0.55)" in summary["a2"]
    detail = dict(zip(cond["account_id"], cond["detail"], strict=True))
    assert detail["a1"]["score"] == 0.62


def test_quiet_accounts_produce_no_conditions():
    frame = predictions(anomaly("a1", flag=False), risk("a1", "1h", flag=False))
    assert rules.tick_conditions(frame, open_alerts=NO_ALERTS, min_duration=2).empty


def test_missing_prediction_columns_are_named():
    frame = predictions(anomaly("a1")).drop(columns=["stale", "run"])
    try:
        rules.tick_conditions(frame, open_alerts=NO_ALERTS, min_duration=2)
    except ValueError as exc:
        assert "stale" in str(exc) and "run" in str(exc)
    else:
        raise AssertionError("a frame without stale/run was accepted")


def test_maintenance_needs_a_start_with_no_end_after_it():
    windows = pd.DataFrame(
        {
            "account_id": ["in", "ended", "never", "reopened"],
            "last_start": [100.0, 100.0, np.nan, 300.0],
            "last_end": [np.nan, 200.0, 50.0, 200.0],
        }
    )
    assert rules.under_maintenance(windows) == {"in", "reopened"}


def test_silence_matchers_time_window_and_deletion():
    alerts = pd.DataFrame(
        {
            "account_id": ["a1", "a2", "b1"],
            "group": ["eu", "eu", None],
            "kind": ["anomaly", "failure_risk", "anomaly"],
        }
    )
    active = {"starts_at": NOW - 1, "ends_at": NOW + 1}
    assert rules.silenced_mask(
        alerts, silences({"group": "eu", **active}), now_ms=NOW
    ).tolist() == [
        True,
        True,
        False,
    ]
    both = silences({"group": "eu", "kind": "anomaly", **active})
    assert rules.silenced_mask(alerts, both, now_ms=NOW).tolist() == [True, False, False]
    over = silences({"kind": "anomaly", "starts_at": NOW - 10, "ends_at": NOW})
    future = silences({"kind": "anomaly", "starts_at": NOW + 1, "ends_at": NOW + 10})
    deleted = silences({"kind": "anomaly", "deleted_at": NOW - 5, **active})
    for silence in (over, future, deleted):
        assert not rules.silenced_mask(alerts, silence, now_ms=NOW).any()


def test_quiet_tick_over_ten_thousand_accounts_is_cheap(sqlite_settings):
    """A tick where nothing changes reads the open alerts in a few statements and writes
    nothing, however many accounts there are (its speed is measured by bench/alerts.py, not
    here: a timed test fails on a loaded machine)."""
    import sqlalchemy as sa

    from fleetml.services.alerts import evaluate_alerts
    from fleetml.store.engine import dispose_engines, get_engine
    from fleetml.store.migrate import upgrade

    engine = get_engine(sqlite_settings)
    upgrade(engine)
    n = 10_000
    ids = [f"acc{i:05d}" for i in range(n)]
    families = np.repeat(["anomaly", "risk", "risk", "risk"], n)
    frame = pd.DataFrame(
        {
            "account_id": pd.array(ids * 4, dtype="str"),
            "family": pd.array(families, dtype="str"),
            "horizon": pd.array([""] * n + ["1h"] * n + ["6h"] * n + ["24h"] * n, dtype="str"),
            "score": np.random.default_rng(0).random(4 * n),
            "flag": np.zeros(4 * n, dtype=bool),
            "run": np.zeros(4 * n, dtype="int64"),
            "data_until": np.full(4 * n, NOW - 60_000),
            "stale": np.zeros(4 * n, dtype=bool),
            "model_version": np.full(4 * n, 3),
            "fallback": np.zeros(4 * n, dtype=bool),
            "top_metrics": pd.array([""] * (4 * n), dtype="str"),
        }
    )
    frame.loc[:4, "flag"] = True  # five accounts with an open anomaly alert
    groups = {a: f"g{i % 20}" for i, a in enumerate(ids)}
    try:
        first = evaluate_alerts(engine, sqlite_settings, frame, now_ms=NOW, groups=groups)
        assert first.opened == 5
        statements: list[str] = []

        def count(conn, cursor, statement, parameters, context, executemany):
            statements.append(statement.split(None, 1)[0].upper())

        sa.event.listen(engine, "before_cursor_execute", count)
        try:
            for tick in range(1, 3):
                again = evaluate_alerts(
                    engine, sqlite_settings, frame, now_ms=NOW + tick * 60_000, groups=groups
                )
                assert (again.opened, again.resolved, again.notified) == (0, 0, 0)
        finally:
            sa.event.remove(engine, "before_cursor_execute", count)
    finally:
        dispose_engines()
    # two quiet ticks: nothing opened or deleted, a few batched statements each (the open
    # alerts' last-seen stamp is one UPDATE), not one per account
    assert not {"INSERT", "DELETE"} & set(statements), statements
    assert statements.count("UPDATE") <= 2 and len(statements) <= 10, statements
