"""Retention deletes what is older than prediction_retention_s, in batches, and nothing else."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fleetml.services.retention import apply_retention
from fleetml.store.tables import (
    alerts,
    forecast_history,
    job_runs,
    notifications,
    prediction_history,
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
        "prediction_history": 7,
        "forecast_history": 2,
        "job_runs": 3,
        "notifications": 2,
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
