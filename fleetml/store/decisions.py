"""The decision record: what the policy decided, by which rule, on what, and how it turned out.

Rows come back as plain dicts with epoch-millisecond timestamps. A tick writes its decisions
with dedup keys (tick time, kind, account), so rerunning the tick after a crash finds the rows
it wrote the first time instead of adding them again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from fleetml.decisions.contracts import Decision, json_safe
from fleetml.store.alerts import MAX_ID
from fleetml.store.audit import connect
from fleetml.store.tables import decisions as decision_table

_CHUNK = 2000  # keys per IN list: well under SQLite's bound-parameter limit
_KEY_LENGTH = 256


def dialect_insert(conn: sa.Connection):
    """The INSERT of the connection's dialect (both have ON CONFLICT)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def check_keys(keys: Iterable[str | None]) -> None:
    """Dedup keys must fit their column (PostgreSQL refuses longer ones mid-transaction)."""
    long = [k for k in keys if k is not None and len(k) > _KEY_LENGTH]
    if long:
        raise ValueError(f"dedup keys longer than {_KEY_LENGTH} characters: {long[0][:80]!r}...")


def insert_deduplicated(
    conn: sa.Connection, table: sa.Table, payload: Sequence[dict[str, Any]]
) -> tuple[list[int], set[int]]:
    """Insert ``payload`` rows (each with ``dedup_key``, possibly None) into ``table``, skipping
    keys already stored. Returns the id of every row in payload order (existing or new) and the
    set of ids this call created."""
    keyed = [i for i, row in enumerate(payload) if row["dedup_key"] is not None]
    loose = [i for i, row in enumerate(payload) if row["dedup_key"] is None]
    ids: list[int | None] = [None] * len(payload)
    created: set[int] = set()
    if loose:
        stmt = table.insert().returning(table.c.id, sort_by_parameter_order=True)
        new = conn.execute(stmt, [payload[i] for i in loose]).scalars().all()
        for i, row_id in zip(loose, new, strict=True):
            ids[i] = int(row_id)
            created.add(int(row_id))
    if keyed:
        stmt = (
            dialect_insert(conn)(table)
            .on_conflict_do_nothing(index_elements=["dedup_key"])
            .returning(table.c.id)
        )
        created.update(int(r) for r in conn.execute(stmt, [payload[i] for i in keyed]).scalars())
        by_key: dict[str, int] = {}
        keys = sorted({payload[i]["dedup_key"] for i in keyed})
        for start in range(0, len(keys), _CHUNK):
            query = sa.select(table.c.dedup_key, table.c.id).where(
                table.c.dedup_key.in_(keys[start : start + _CHUNK])
            )
            by_key.update((k, int(v)) for k, v in conn.execute(query).all())
        for i in keyed:
            ids[i] = by_key[payload[i]["dedup_key"]]
    return [int(i) for i in ids if i is not None], created


# ---- what a tick writes --------------------------------------------------------------------


def write_decisions(
    conn: sa.Connection,
    decisions: Sequence[Decision],
    *,
    ts_ms: int,
    dedup_keys: Sequence[str | None],
) -> list[int]:
    """Record ``decisions`` made at ``ts_ms``; returns their ids in the same order.

    A decision whose dedup key is already stored is not written again: its id is the stored
    row's (a rerun of the same tick). A None key always writes a new row.
    """
    if len(dedup_keys) != len(decisions):
        raise ValueError(
            f"{len(decisions)} decisions but {len(dedup_keys)} dedup keys; pass one key "
            "(or None) per decision"
        )
    if not decisions:
        return []
    check_keys(dedup_keys)
    payload = [
        {
            "ts_ms": int(ts_ms),
            "kind": str(d.kind),
            "rule": str(d.rule),
            "account_id": d.account_id,
            "group": d.group,
            "mode": str(d.mode),
            "status": str(d.status),
            "params": json_safe(d.params or {}),
            "inputs": json_safe(d.inputs or {}),
            "models": json_safe(d.models or {}),
            "reason": d.reason or "",
            "dedup_key": key,
        }
        for d, key in zip(decisions, dedup_keys, strict=True)
    ]
    ids, _ = insert_deduplicated(conn, decision_table, payload)
    return ids


def set_outcome(
    conn: sa.Connection,
    *,
    decision_id: int,
    outcome: Mapping[str, Any],
    at_ms: int,
    only_open: bool = False,
) -> bool:
    """Record how a decision turned out (the outcome tracker's verdict); False if unknown (or,
    with ``only_open``, already judged)."""
    if not 0 < decision_id <= MAX_ID:
        return False
    query = decision_table.update().where(decision_table.c.id == decision_id)
    if only_open:
        query = query.where(decision_table.c.outcome_at.is_(None))
    result = conn.execute(query.values(outcome=json_safe(dict(outcome)), outcome_at=int(at_ms)))
    return result.rowcount == 1


def open_failovers(
    conn: sa.Connection,
    *,
    since_ms: int,
    until_ms: int,
    rules: Iterable[str],
    limit: int = 10_000,
) -> list[dict[str, Any]]:
    """Failover decisions of an account made from ``since_ms`` to ``until_ms`` by one of
    ``rules`` that have no outcome yet, oldest first: ``id``, ``ts_ms``, ``rule``,
    ``account_id``, ``group``, ``inputs``."""
    t = decision_table
    query = (
        sa.select(t.c.id, t.c.ts_ms, t.c.rule, t.c.account_id, t.c.group, t.c.inputs)
        .where(
            t.c.kind == "failover",
            t.c.ts_ms >= int(since_ms),
            t.c.ts_ms <= int(until_ms),
            t.c.rule.in_(sorted(rules)),
            t.c.account_id.is_not(None),
            t.c.outcome_at.is_(None),
        )
        .order_by(t.c.ts_ms, t.c.id)
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def set_status(conn: sa.Connection, *, action_ids: Iterable[int], status: str) -> None:
    """What became of the decisions behind actions (approved, rejected, expired, failed)."""
    ids = sorted({int(i) for i in action_ids if 0 < int(i) <= MAX_ID})
    for start in range(0, len(ids), _CHUNK):
        conn.execute(
            decision_table.update()
            .where(decision_table.c.action_id.in_(ids[start : start + _CHUNK]))
            .values(status=status)
        )


def link_actions(conn: sa.Connection, *, links: Mapping[int, int]) -> None:
    """Point decisions at the actions made from them (decision id -> action id)."""
    if links:
        conn.execute(
            decision_table.update()
            .where(decision_table.c.id == sa.bindparam("b_id"))
            .values(action_id=sa.bindparam("b_action")),
            [{"b_id": int(d), "b_action": int(a)} for d, a in links.items()],
        )


# ---- what the outcome tracker and operators read -------------------------------------------


def read_open_outcomes(
    bind, *, kinds: Iterable[str], before_ms: int, limit: int = 10_000
) -> list[dict]:
    """Decisions of ``kinds`` made before ``before_ms`` that have no outcome yet, oldest first."""
    query = (
        sa.select(decision_table)
        .where(
            decision_table.c.kind.in_(sorted(set(kinds))),
            decision_table.c.outcome.is_(None),
            decision_table.c.ts_ms < before_ms,
        )
        .order_by(decision_table.c.ts_ms, decision_table.c.id)
        .limit(limit)
    )
    with connect(bind) as conn:
        return [dict(r) for r in conn.execute(query).mappings().all()]


def read_decisions(
    bind,
    *,
    account_id: str | None = None,
    group: str | None = None,
    kind: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int = 100,
    after_id: int | None = None,
) -> list[dict]:
    """Decisions newest first, filtered; ``since_ms <= ts_ms <= until_ms``.

    ``after_id`` pages: only decisions listed after that id (smaller ids, older).
    """
    query = sa.select(decision_table).order_by(decision_table.c.id.desc()).limit(limit)
    if account_id is not None:
        query = query.where(decision_table.c.account_id == account_id)
    if group is not None:
        query = query.where(decision_table.c.group == group)
    if kind is not None:
        query = query.where(decision_table.c.kind == kind)
    if since_ms is not None:
        query = query.where(decision_table.c.ts_ms >= since_ms)
    if until_ms is not None:
        query = query.where(decision_table.c.ts_ms <= until_ms)
    if after_id is not None and after_id <= MAX_ID:
        query = query.where(decision_table.c.id < after_id)
    with connect(bind) as conn:
        return [dict(r) for r in conn.execute(query).mappings().all()]


def get_decision(bind, *, decision_id: int) -> dict | None:
    """One decision, or None."""
    if not 0 < decision_id <= MAX_ID:
        return None
    with connect(bind) as conn:
        query = sa.select(decision_table).where(decision_table.c.id == decision_id)
        row = conn.execute(query).mappings().first()
    return None if row is None else dict(row)
