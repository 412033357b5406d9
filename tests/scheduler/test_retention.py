"""Retention deletes what is past its period (predictions, history, decisions), in batches, and
nothing else: enforcement events, actions, alerts and open recommendations stay."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fleetml.services.retention import apply_retention
from fleetml.store.tables import (
    alerts,
    decisions,
    events,
    forecast_history,
    job_runs,
    notifications,
    prediction_history,
    recommendations,
    samples,
)

NOW = 1_800_000_000_000
DAY = 86_400_000


@pytest.fixture
def week(settings):
    return settings.model_copy(update={"prediction_retention_s": 7 * 86400.0})


def _prediction(account: str, data_until: int) -> dict:
    return {
        "account_id": account,
        "family": "anomaly",
        "horizon": "",
        "data_until": data_until,
        "computed_at": data_until,
        "score": 0.1,
        "flag": False,
        "model_version": 1,
        "fallback": False,
    }


def _run(started_at: int, outcome: str) -> dict:
    return {"job": "score", "started_at": started_at, "outcome": outcome}


def _note(alert_id: int, created_at: int, state: str) -> dict:
    return {
        "alert_id": alert_id,
        "event": "firing",
        "target": "http://hook",
        "format": "json",
        "payload": {},
        "state": state,
        "attempts": 1,
        "created_at": created_at,
    }


def _alert(account: str, opened_at: int, state: str) -> dict:
    return {
        "account_id": account,
        "kind": "risk",
        "severity": "warning",
        "state": state,
        "summary": "risk over threshold",
        "opened_at": opened_at,
        "updated_at": opened_at,
        "last_seen_at": opened_at,
        "silenced": False,
    }


def _count(engine, table, where=None) -> int:
    query = sa.select(sa.func.count()).select_from(table)
    if where is not None:
        query = query.where(where)
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def test_retention_deletes_old_rows_only(engine, week):
    old, recent = NOW - 8 * DAY, NOW - 6 * DAY
    with engine.begin() as conn:
        conn.execute(
            prediction_history.insert(),
            [_prediction(f"a{i}", old - i) for i in range(7)]
            + [_prediction("a0", recent), _prediction("a1", NOW)],
        )
        conn.execute(
            job_runs.insert(),
            [
                _run(old, "ok"),
                _run(old, "error"),
                _run(old, "skipped"),
                _run(old, "running"),  # killed long ago, not yet seen by a new leader: kept
                _run(recent, "ok"),
            ],
        )
        conn.execute(
            notifications.insert(),
            [
                _note(1, old, "delivered"),
                _note(2, old, "failed"),
                _note(3, old, "pending"),  # still to deliver: kept
                _note(4, recent, "delivered"),
            ],
        )
        conn.execute(alerts.insert(), [_alert("a0", old, "resolved"), _alert("a1", old, "firing")])
        conn.execute(
            forecast_history.insert(),
            [
                {"scope": "group", "target": "eu", "metric": "msgs_sent", "horizon": 24,
                 "computed_at": at, "model_version": None, "payload": {"points": []}}
                for at in (old - 1, old, recent)
            ],
        )  # fmt: skip

    counts = apply_retention(engine, week, now_ms=NOW, batch_size=2)

    assert counts == {
        "cutoff_ms": NOW - 7 * DAY,
        "history_cutoff_ms": NOW - 90 * DAY,
        "decision_cutoff_ms": NOW - 180 * DAY,
        "prediction_history": 7,
        "forecast_history": 2,
        "job_runs": 3,
        "notifications": 2,
        "samples": 0,
        "events": 0,
        "decisions": 0,
        "recommendations": 0,
    }
    assert _count(engine, prediction_history) == 2
    assert _count(engine, prediction_history, prediction_history.c.data_until < NOW - 7 * DAY) == 0
    with engine.connect() as conn:
        kept_runs = conn.execute(
            sa.select(job_runs.c.outcome, job_runs.c.started_at).order_by(job_runs.c.id)
        ).all()
        kept_notes = (
            conn.execute(sa.select(notifications.c.alert_id).order_by(notifications.c.alert_id))
            .scalars()
            .all()
        )
    assert [tuple(r) for r in kept_runs] == [("running", old), ("ok", recent)]
    assert kept_notes == [3, 4]
    assert _count(engine, alerts) == 2  # resolved alerts are the fleet's history


def test_retention_twice_deletes_nothing_more(engine, week):
    with engine.begin() as conn:
        conn.execute(prediction_history.insert(), [_prediction("a0", NOW - 30 * DAY)])
    assert apply_retention(engine, week, now_ms=NOW)["prediction_history"] == 1
    again = apply_retention(engine, week, now_ms=NOW)
    assert (again["prediction_history"], again["job_runs"], again["notifications"]) == (0, 0, 0)


def test_retention_refuses_a_batch_size_below_one(engine, week):
    with pytest.raises(ValueError, match="batch_size"):
        apply_retention(engine, week, now_ms=NOW, batch_size=0)


def _decision(ts_ms: int, action_id: int | None) -> dict:
    return {
        "ts_ms": ts_ms,
        "kind": "weight" if action_id is None else "failover",
        "rule": "risk",
        "account_id": "a0",
        "group": "g",
        "mode": "auto",
        "status": "executed",
        "params": {},
        "inputs": {},
        "models": {},
        "reason": "test",
        "action_id": action_id,
    }


def _recommendation(updated_at: int, state: str, key: str) -> dict:
    return {
        "kind": "investigate_anomaly",
        "state": state,
        "title": "look",
        "evidence": {},
        "expected_impact": {},
        "confidence": 0.5,
        "dedup_key": key,
        "occurrences": 1,
        "created_at": updated_at,
        "updated_at": updated_at,
        "expires_at": updated_at + DAY,
    }


def test_history_and_decisions_age_out_but_enforcement_and_actions_stay(engine, settings):
    settings = settings.model_copy(
        update={"history_retention_s": 30 * 86400.0, "decision_retention_s": 60 * 86400.0}
    )
    old, recent = NOW - 31 * DAY, NOW - 29 * DAY
    ancient = NOW - 61 * DAY
    with engine.begin() as conn:
        conn.execute(
            samples.insert(),
            [{"account_pk": pk, "ts": ts, "vals": {"cpu": 1.0}}
             for pk in (1, 2) for ts in (old - 1, old, recent)],
        )  # fmt: skip
        conn.execute(
            events.insert(),
            [
                {"account_pk": 1, "ts": old, "kind": kind, "created_at": old}
                for kind in ("crash", "failover", "banned", "restricted", "quality_drop",
                             "restriction_lifted")
            ]
            + [{"account_pk": 1, "ts": recent, "kind": "crash", "created_at": recent}],
        )  # fmt: skip
        conn.execute(
            decisions.insert(),
            [_decision(ancient, None), _decision(ancient, 7), _decision(recent, None)],
        )
        conn.execute(
            recommendations.insert(),
            [
                _recommendation(ancient, "dismissed", "k1"),
                _recommendation(ancient, "applied", "k2"),
                _recommendation(ancient, "open", "k3"),  # still waiting for a person: kept
                _recommendation(recent, "dismissed", "k4"),
            ],
        )

    counts = apply_retention(engine, settings, now_ms=NOW, batch_size=3)

    assert (counts["samples"], counts["events"]) == (4, 2)
    assert (counts["decisions"], counts["recommendations"]) == (1, 2)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.min(samples.c.ts))).scalar_one() == recent
        kept_kinds = set(conn.execute(sa.select(events.c.kind)).scalars())
        kept_decisions = conn.execute(
            sa.select(decisions.c.ts_ms, decisions.c.action_id).order_by(decisions.c.id)
        ).all()
        kept_recs = set(conn.execute(sa.select(recommendations.c.dedup_key)).scalars())
    # a ban or restriction however old still says whether the number may send
    assert kept_kinds == {"banned", "restricted", "quality_drop", "restriction_lifted", "crash"}
    assert [tuple(r) for r in kept_decisions] == [(ancient, 7), (recent, None)]
    assert kept_recs == {"k3", "k4"}


def test_retention_follows_the_data_clock_of_a_replay(engine, settings):
    """A replay of last year's data on the data clock keeps it: the cutoff is the newest sample
    less the retention, not the wall clock less it."""
    replay = settings.model_copy(update={"tick_clock": "data", "history_retention_s": 30 * 86400.0})
    year_ago = NOW - 365 * DAY  # NOW is in 2027, the wall clock is not
    with engine.begin() as conn:
        conn.execute(
            samples.insert(),
            [{"account_pk": 1, "ts": year_ago - d * DAY, "vals": {"cpu": 1.0}}
             for d in (0, 10, 40)],
        )  # fmt: skip

    counts = apply_retention(engine, replay)

    assert counts["history_cutoff_ms"] == year_ago - 30 * DAY
    assert counts["samples"] == 1
    assert _count(engine, samples) == 2
