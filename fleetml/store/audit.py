"""The audit log: who did what, when, with the state before and after."""

from __future__ import annotations

from typing import Any

import pandas as pd
import sqlalchemy as sa

from fleetml.store.tables import audit_log
from fleetml.timestamps import bound_ms, now_ms

__all__ = ["now_ms", "read_audit", "record", "record_many"]


def record(
    conn: sa.Connection,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str | None,
    before: Any = None,
    after: Any = None,
    detail: Any = None,
) -> None:
    """Append one audit entry inside the caller's transaction (so it commits with the change)."""
    conn.execute(
        audit_log.insert().values(
            ts=now_ms(),
            actor=actor,
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            before=before,
            after=after,
            detail=detail,
        )
    )


def record_many(conn: sa.Connection, entries: list[dict]) -> None:
    """Append several audit entries at once (bulk registry imports)."""
    if not entries:
        return
    ts = now_ms()
    rows = [
        {
            "ts": ts,
            "before": None,
            "after": None,
            "detail": None,
            "entity_id": None,
            **entry,
        }
        for entry in entries
    ]
    conn.execute(audit_log.insert(), rows)


def read_audit(
    bind,
    *,
    entity_type: str | None = None,
    entity_id: str | None = None,
    actor: str | None = None,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    limit: int = 1000,
) -> list[dict]:
    """Audit entries, newest first."""
    query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if entity_type:
        query = query.where(audit_log.c.entity_type == entity_type)
    if entity_id:
        query = query.where(audit_log.c.entity_id == entity_id)
    if actor:
        query = query.where(audit_log.c.actor == actor)
    if start is not None:
        query = query.where(audit_log.c.ts >= bound_ms(start))
    if end is not None:
        query = query.where(audit_log.c.ts <= bound_ms(end))
    with _connect(bind) as conn:
        rows = conn.execute(query).mappings().all()
    out = []
    for row in rows:
        item = dict(row)
        item["ts"] = pd.Timestamp(item["ts"], unit="ms", tz="UTC").isoformat()
        out.append(item)
    return out


class _connect:
    """Use a Connection as is, or open one from an Engine for the duration of a read."""

    def __init__(self, bind):
        self.bind = bind
        self.conn = None

    def __enter__(self) -> sa.Connection:
        if isinstance(self.bind, sa.Connection):
            return self.bind
        self.conn = self.bind.connect()
        return self.conn

    def __exit__(self, *exc):
        if self.conn is not None:
            self.conn.close()


connect = _connect
