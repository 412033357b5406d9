"""evaluate_alerts over the store (SQLite and PostgreSQL): open, dedup, resolve, suppress, silence,
maintenance, degraded models and an idempotent rerun."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alertdata import NOW, anomaly, predictions, risk

from fleetml.services import alerts as service
from fleetml.store import alerts as store
from fleetml.store.tables import alert_history, alerts, notifications

HOOK = "http://hooks.example/fleet"
MINUTE = 60_000


@pytest.fixture
def cfg(settings):
    return settings.model_copy(
        update={
            "alert_webhooks": [HOOK],
            "alertmanager_url": "http://am.example:9093/",
            "alert_min_duration": 2,
            "alert_suppression_s": 3600.0,
        }
    )


def evaluate(engine, cfg, frame, now, groups, degraded=None):
    return service.evaluate_alerts(engine, cfg, frame, now_ms=now, groups=groups, degraded=degraded)


def rows(engine, table, **where):
    query = sa.select(table).order_by(table.c.id)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def test_flagged_anomaly_opens_one_alert_and_a_second_tick_only_refreshes_it(engine, cfg, fleet):
    first = evaluate(engine, cfg, predictions(anomaly("a1", top_metrics="cpu_pct;rss")), NOW, fleet)
    second = evaluate(
        engine, cfg, predictions(anomaly("a1", top_metrics="rss")), NOW + MINUTE, fleet
    )

    assert (first.opened, first.resolved, first.notified) == (1, 0, 2)  # webhook + alertmanager
    assert (second.opened, second.notified) == (0, 0)
    [alert] = rows(engine, alerts)
    assert alert["account_id"] == "a1" and alert["group"] == "eu" and alert["kind"] == "anomaly"
    assert alert["state"] == "firing" and alert["opened_at"] == NOW
    assert alert["last_seen_at"] == NOW + MINUTE
    assert alert["detail"]["top_metrics"] == ["rss"]  # the detail follows the newest tick
    outbox = rows(engine, notifications)
    assert {(n["event"], n["format"]) for n in outbox} == {
        ("firing", "json"),
        ("firing", "alertmanager"),
    }
    assert [h["to_state"] for h in rows(engine, alert_history)] == ["firing"]


def test_risk_opens_only_after_min_duration_with_severity_from_shortest_horizon(engine, cfg, fleet):
    early = predictions(risk("a1", "1h", run=1, score=0.8), risk("a1", "24h", flag=False))
    assert evaluate(engine, cfg, early, NOW, fleet).opened == 0

    later = predictions(
        risk("a1", "1h", run=2, score=0.8),
        risk("a1", "6h", run=3, score=0.6),
        risk("a1", "24h", flag=False, score=0.2),
        risk("b1", "24h", run=5, score=0.7),
    )
    assert evaluate(engine, cfg, later, NOW + MINUTE, fleet).opened == 2

    by_account = {a["account_id"]: a for a in rows(engine, alerts)}
    a1 = by_account["a1"]
    assert a1["kind"] == "failure_risk" and a1["severity"] == "critical"
    assert a1["detail"]["horizons"] == ["1h", "6h"]
    assert a1["detail"]["shortest_horizon"] == "1h"
    assert a1["detail"]["risks"] == {"1h": 0.8, "6h": 0.6, "24h": 0.2}
    assert by_account["b1"]["severity"] == "warning"


def test_alert_resolves_when_fresh_rows_clear_but_not_from_stale_or_missing_rows(
    engine, cfg, fleet
):
    evaluate(engine, cfg, predictions(anomaly("a1")), NOW, fleet)

    stale = evaluate(
        engine, cfg, predictions(anomaly("a1", flag=False, stale=True)), NOW + 1, fleet
    )
    missing = evaluate(engine, cfg, predictions(anomaly("a2", flag=False)), NOW + 2, fleet)
    assert stale.resolved == missing.resolved == 0
    cleared = evaluate(engine, cfg, predictions(anomaly("a1", flag=False)), NOW + 3, fleet)

    assert cleared.resolved == 1 and cleared.notified == 2  # both receivers heard it fire
    [alert] = rows(engine, alerts)
    assert alert["state"] == "resolved" and alert["resolved_by"] == "fleetml"
    assert alert["resolved_at"] == NOW + 3
    assert [h["to_state"] for h in rows(engine, alert_history)] == ["firing", "resolved"]
    assert sorted(n["event"] for n in rows(engine, notifications)) == [
        "firing",
        "firing",
        "resolved",
        "resolved",
    ]


def test_stale_rows_never_open_an_alert(engine, cfg, fleet):
    counts = evaluate(engine, cfg, predictions(anomaly("a1", stale=True)), NOW, fleet)
    assert counts.opened == 0 and rows(engine, alerts) == []


def test_no_new_alert_within_suppression_after_resolve(engine, cfg, fleet):
    evaluate(engine, cfg, predictions(anomaly("a1")), NOW, fleet)
    evaluate(engine, cfg, predictions(anomaly("a1", flag=False)), NOW + MINUTE, fleet)

    hour = 3600 * 1000
    assert (
        evaluate(engine, cfg, predictions(anomaly("a1")), NOW + MINUTE + hour - 1, fleet).opened
        == 0
    )
    # Other kinds and accounts are not suppressed by it.
    other = predictions(anomaly("a2"), risk("a1", "1h", run=3))
    assert evaluate(engine, cfg, other, NOW + 2 * MINUTE, fleet).opened == 2
    assert evaluate(engine, cfg, predictions(anomaly("a1")), NOW + MINUTE + hour, fleet).opened == 1


def test_silenced_alert_is_recorded_but_not_notified(engine, cfg, fleet):
    with engine.begin() as conn:
        store.create_silence(
            conn,
            account_id=None,
            group="eu",
            kind="anomaly",
            starts_at=NOW - MINUTE,
            ends_at=NOW + 10 * MINUTE,
            comment="planned load test",
            actor="ops",
            now_ms=NOW - MINUTE,
        )
    counts = evaluate(engine, cfg, predictions(anomaly("a1"), anomaly("b1")), NOW, fleet)

    assert counts.opened == 2 and counts.notified == 2  # b1 (us) only, to both receivers
    silenced = {a["account_id"]: a["silenced"] for a in rows(engine, alerts)}
    assert silenced == {"a1": True, "b1": False}
    a1_id = next(a["id"] for a in rows(engine, alerts) if a["account_id"] == "a1")
    assert rows(engine, notifications, alert_id=a1_id) == []

    # A silenced alert that resolves was never heard of: no resolved notification either.
    assert (
        evaluate(engine, cfg, predictions(anomaly("a1", flag=False)), NOW + 1, fleet).notified == 0
    )


def test_alert_outliving_its_silence_is_notified_then(engine, cfg, fleet):
    with engine.begin() as conn:
        store.create_silence(
            conn,
            account_id="a1",
            group=None,
            kind=None,
            starts_at=NOW,
            ends_at=NOW + MINUTE,
            comment=None,
            actor="ops",
            now_ms=NOW,
        )
    assert evaluate(engine, cfg, predictions(anomaly("a1")), NOW, fleet).notified == 0
    after = evaluate(engine, cfg, predictions(anomaly("a1")), NOW + MINUTE, fleet)
    assert after.notified == 2
    assert rows(engine, alerts)[0]["silenced"] is False


def _maintenance(engine, account_id, *stamps):
    from fleetml.store.accounts import account_pks
    from fleetml.store.events import write_events

    with engine.begin() as conn:
        pk = account_pks(conn, [account_id])[account_id]
        write_events(conn, [(pk, ts, kind, None, "pytest") for ts, kind in stamps])


def test_maintenance_window_blocks_opening_until_it_ends(engine, cfg, fleet):
    _maintenance(engine, "a1", (NOW - MINUTE, "maintenance_start"))
    _maintenance(engine, "a2", (NOW - 2 * MINUTE, "maintenance_start"))
    _maintenance(engine, "a2", (NOW - MINUTE, "maintenance_end"))
    _maintenance(engine, "b1", (NOW + MINUTE, "maintenance_start"))  # not begun yet

    frame = predictions(anomaly("a1"), anomaly("a2"), anomaly("b1"))
    assert evaluate(engine, cfg, frame, NOW, fleet).opened == 2
    assert {a["account_id"] for a in rows(engine, alerts)} == {"a2", "b1"}

    _maintenance(engine, "a1", (NOW + 2 * MINUTE, "maintenance_end"))
    assert evaluate(engine, cfg, predictions(anomaly("a1")), NOW + 2 * MINUTE, fleet).opened == 1


def test_rerun_of_the_same_tick_duplicates_nothing(engine, cfg, fleet):
    frame = predictions(anomaly("a1"), risk("a2", "6h", run=4), anomaly("b1", flag=False))
    degraded = {"forecast": "champion model failed to load"}
    first = evaluate(engine, cfg, frame, NOW, fleet, degraded)
    again = evaluate(engine, cfg, frame, NOW, fleet, degraded)

    assert first.opened == 3 and first.notified == 6
    assert (again.opened, again.resolved, again.notified) == (0, 0, 0)
    assert len(rows(engine, alerts)) == 3
    assert len(rows(engine, notifications)) == 6
    assert len(rows(engine, alert_history)) == 3


def test_a_tick_killed_midway_leaves_nothing_and_its_rerun_writes_once(
    engine, cfg, fleet, monkeypatch
):
    frame = predictions(anomaly("a1"), anomaly("b1"))

    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(store, "write_notifications", crash)
        with pytest.raises(RuntimeError):
            evaluate(engine, cfg, frame, NOW, fleet)
    assert rows(engine, alerts) == [] and rows(engine, alert_history) == []

    counts = evaluate(engine, cfg, frame, NOW, fleet)
    assert counts.opened == 2 and len(rows(engine, notifications)) == 4


def test_degraded_family_opens_a_fleet_alert_and_resolves_when_healthy(engine, cfg, fleet):
    frame = predictions(anomaly("a1", flag=False))
    degraded = {"risk": "no champion in the registry"}
    assert evaluate(engine, cfg, frame, NOW, fleet, degraded).opened == 1
    [alert] = rows(engine, alerts)
    assert alert["account_id"] == "fleet" and alert["kind"] == "model_degraded:risk"
    assert "no champion" in alert["summary"]

    assert evaluate(engine, cfg, frame, NOW + MINUTE, fleet, degraded).opened == 0
    healed = evaluate(engine, cfg, frame, NOW + 2 * MINUTE, fleet, {})
    assert healed.resolved == 1 and rows(engine, alerts)[0]["state"] == "resolved"


def test_acknowledged_alert_stays_open_and_still_resolves_by_itself(engine, cfg, fleet):
    evaluate(engine, cfg, predictions(anomaly("a1")), NOW, fleet)
    alert_id = rows(engine, alerts)[0]["id"]
    acked = service.acknowledge_alert(engine, alert_id=alert_id, actor="alice", note="on it")
    assert acked["state"] == "acknowledged" and acked["acknowledged_by"] == "alice"

    assert evaluate(engine, cfg, predictions(anomaly("a1")), NOW + 1, fleet).opened == 0
    assert (
        evaluate(engine, cfg, predictions(anomaly("a1", flag=False)), NOW + 2, fleet).resolved == 1
    )
    history = rows(engine, alert_history)
    assert [(h["from_state"], h["to_state"], h["actor"]) for h in history] == [
        (None, "firing", "fleetml"),
        ("firing", "acknowledged", "alice"),
        ("acknowledged", "resolved", "fleetml"),
    ]


def test_resolving_by_hand_notifies_and_refuses_twice(engine, cfg, fleet):
    from fleetml.errors import Conflict, NotFound

    evaluate(engine, cfg, predictions(anomaly("a1")), NOW, fleet)
    alert_id = rows(engine, alerts)[0]["id"]
    done = service.resolve_alert(engine, alert_id=alert_id, actor="bob", note="fixed")
    assert done["state"] == "resolved" and done["resolved_by"] == "bob"
    assert sorted(n["event"] for n in rows(engine, notifications)) == [
        "firing",
        "firing",
        "resolved",
        "resolved",
    ]
    with pytest.raises(Conflict):
        service.resolve_alert(engine, alert_id=alert_id, actor="bob")
    with pytest.raises(NotFound):
        service.acknowledge_alert(engine, alert_id=alert_id + 1000, actor="bob")
