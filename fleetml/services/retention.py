"""Retention: forget what is older than ``settings.prediction_retention_s``.

Deleted: prediction history (by the time of the data it scored), finished job runs, and
notifications that were delivered or gave up. Kept: open and resolved alerts (they are the
fleet's history), pending notifications and runs still marked ``running``.

Deletes run in bounded batches, each its own transaction, so SQLite's single writer is never held
for long and the live loop's writes slip in between.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from fleetml.config import Settings
from fleetml.schemas.jobs import JobOutcome
from fleetml.store.audit import now_ms as _now_ms
from fleetml.store.tables import forecast_history, job_runs, notifications, prediction_history

#: Rows deleted per statement.
DEFAULT_BATCH = 5000


def apply_retention(
    engine: Engine,
    settings: Settings,
    now_ms: int | None = None,
    *,
    batch_size: int = DEFAULT_BATCH,
) -> dict:
    """Delete rows older than ``now - settings.prediction_retention_s``; return deleted counts."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    now = _now_ms() if now_ms is None else int(now_ms)
    cutoff = now - int(settings.prediction_retention_s * 1000)
    ph, jr, nt = prediction_history.c, job_runs.c, notifications.c
    fh = forecast_history.c
    return {
        "cutoff_ms": cutoff,
        "prediction_history": _delete_in_batches(
            engine,
            prediction_history,
            (ph.account_id, ph.family, ph.horizon, ph.data_until),
            ph.data_until < cutoff,
            batch_size,
        ),
        "job_runs": _delete_in_batches(
            engine,
            job_runs,
            (jr.id,),
            sa.and_(jr.started_at < cutoff, jr.outcome != JobOutcome.RUNNING.value),
            batch_size,
        ),
        "forecast_history": _delete_in_batches(
            engine,
            forecast_history,
            (fh.scope, fh.target, fh.metric, fh.horizon, fh.computed_at),
            fh.computed_at < cutoff,
            batch_size,
        ),
        "notifications": _delete_in_batches(
            engine,
            notifications,
            (nt.id,),
            sa.and_(nt.created_at < cutoff, nt.state.in_(("delivered", "failed"))),
            batch_size,
        ),
    }


def _delete_in_batches(engine: Engine, table: sa.Table, key: tuple, where, batch_size: int) -> int:
    """Delete ``where`` rows of ``table`` at most ``batch_size`` per transaction; return total."""
    # DELETE ... LIMIT is not portable (SQLite needs a compile option): pick a batch of keys.
    batch = sa.select(*key).where(where).limit(batch_size)
    target = key[0] if len(key) == 1 else sa.tuple_(*key)
    stmt = table.delete().where(target.in_(batch))
    total = 0
    while True:
        with engine.begin() as conn:
            deleted = conn.execute(stmt).rowcount
        total += deleted
        if deleted < batch_size:
            return total
