"""The decision policy's controller state between processes (``controller_state`` table).

The worker writes it with every tick's decisions, in the same transaction, so what a tick
decided and the counters behind it never disagree; a restarted worker, or the next one-shot
``fleetml tick``, reads it back (see :class:`fleetml.services.decide.DecisionLoop`).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fleetml.store.audit import connect
from fleetml.store.decisions import dialect_insert
from fleetml.store.tables import controller_state

#: The key of the tick's decision loop (one per store).
TICK_KEY = "tick"


def save_controller_state(
    conn: sa.Connection, state: dict[str, Any], *, tick_ms: int, now_ms: int, key: str = TICK_KEY
) -> None:
    """Upsert the state of the decision loop ``key`` inside the caller's transaction."""
    insert = dialect_insert(conn)
    stmt = insert(controller_state).values(
        key=key, tick_ms=int(tick_ms), state=state, updated_at=int(now_ms)
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[controller_state.c.key],
            set_={
                "tick_ms": stmt.excluded.tick_ms,
                "state": stmt.excluded.state,
                "updated_at": stmt.excluded.updated_at,
            },
        )
    )


def load_controller_state(bind, *, key: str = TICK_KEY) -> tuple[int, dict[str, Any]] | None:
    """``(tick_ms, state)`` of the decision loop ``key``, or None when none was saved."""
    query = sa.select(controller_state.c.tick_ms, controller_state.c.state).where(
        controller_state.c.key == key
    )
    with connect(bind) as conn:
        row = conn.execute(query).first()
    if row is None or not isinstance(row.state, dict):
        return None
    return int(row.tick_ms), row.state
