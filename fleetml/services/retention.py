"""Retention: forget what is old, so the store (and the nightly retrain) stays bounded.

Against the fleet's clock (:func:`~fleetml.services.clock.fleet_now`: a replay on the data's
time never loses its data to the wall clock):

* older than ``prediction_retention_s``: prediction and forecast history (by the time of the
  data scored), finished job runs, notifications that were delivered or gave up;
* older than ``history_retention_s``: metric samples and events, except enforcement events
  (``restricted``, ``banned``, ``quality_drop``, ``restriction_lifted``), which are kept for
  good: the decision loop reads the standing restriction or ban of an account however old it is;
* older than ``decision_retention_s``: decisions that published no action (weight changes,
  shadow decisions) and recommendations that are no longer open.

Kept: open and resolved alerts (they are the fleet's history), pending notifications, runs still
marked ``running``, actions and the decisions behind them (a restarted worker rebuilds which
masters are failed over and which numbers are held from the newest published actions), and the
audit log.

Deletes run in bounded batches, each its own transaction, so SQLite's single writer is never held
for long and the live loop's writes slip in between.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from fleetml.config import Settings
from fleetml.schemas.jobs import JobOutcome
from fleetml.services.clock import fleet_now
from fleetml.store.tables import (
    decisions,
    events,
    forecast_history,
    job_runs,
    notifications,
    prediction_history,
    recommendations,
    samples,
)
from fleetml.vocab import ENFORCEMENT_KINDS

#: Events never deleted: what says whether a number is restricted, banned or held right now.
KEPT_EVENT_KINDS: frozenset[str] = ENFORCEMENT_KINDS | {"restriction_lifted"}

#: Rows deleted per statement.
DEFAULT_BATCH = 5000


def apply_retention(
    engine: Engine,
    settings: Settings,
    now_ms: int | None = None,
    *,
    batch_size: int = DEFAULT_BATCH,
) -> dict:
    """Delete what is past its retention period (see the module docstring); return the deleted
    row counts per table and the three cutoffs (ms since the epoch)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    now = fleet_now(engine, settings) if now_ms is None else int(now_ms)
    cutoff = now - int(settings.prediction_retention_s * 1000)
    history_cutoff = now - int(settings.history_retention_s * 1000)
    decision_cutoff = now - int(settings.decision_retention_s * 1000)
    ph, jr, nt = prediction_history.c, job_runs.c, notifications.c
    fh, sm, ev = forecast_history.c, samples.c, events.c
    dc, rc = decisions.c, recommendations.c
    return {
        "cutoff_ms": cutoff,
        "history_cutoff_ms": history_cutoff,
        "decision_cutoff_ms": decision_cutoff,
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
        "samples": _delete_in_batches(
            engine, samples, (sm.ts, sm.account_pk), sm.ts < history_cutoff, batch_size
        ),
        "events": _delete_in_batches(
            engine,
            events,
            (ev.id,),
            sa.and_(ev.ts < history_cutoff, ev.kind.not_in(sorted(KEPT_EVENT_KINDS))),
            batch_size,
        ),
        "decisions": _delete_in_batches(
            engine,
            decisions,
            (dc.id,),
            sa.and_(dc.ts_ms < decision_cutoff, dc.action_id.is_(None)),
            batch_size,
        ),
        "recommendations": _delete_in_batches(
            engine,
            recommendations,
            (rc.id,),
            sa.and_(rc.updated_at < decision_cutoff, rc.state != "open"),
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
