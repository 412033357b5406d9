"""Account events: technical faults, enforcement and operations (see :mod:`fleetml.vocab`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd
import sqlalchemy as sa

from fleetml.errors import InvalidInput
from fleetml.store.accounts import account_pks
from fleetml.store.audit import connect, now_ms
from fleetml.store.tables import events
from fleetml.timestamps import bound_ms
from fleetml.vocab import EVENT_KINDS

EventRow = tuple[int, int, str, str | None, str | None]  # (account_pk, ts_ms, kind, detail, source)


def write_events(conn: sa.Connection, rows: Sequence[EventRow]) -> int:
    """Upsert events; (account, ts, kind) is unique, a replay updates the detail only."""
    if not rows:
        return 0
    created = now_ms()
    # The same (account, ts, kind) twice in one batch: the later detail wins.
    unique: dict[tuple[int, int, str], EventRow] = {}
    for row in rows:
        unique[(row[0], row[1], row[2])] = row
    payload = [
        {
            "account_pk": r[0],
            "ts": r[1],
            "kind": r[2],
            "detail": r[3],
            "source": r[4],
            "created_at": created,
        }
        for r in unique.values()
    ]
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(events)
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_pk", "ts", "kind"],
        set_={"detail": stmt.excluded.detail, "source": stmt.excluded.source},
    )
    conn.execute(stmt, payload)
    return len(payload)


def read_events(
    bind,
    *,
    accounts: Iterable[str] | None = None,
    kinds: Iterable[str] | None = None,
    start=None,
    end=None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Events as a frame (ts, account_id, kind, detail, source), oldest first."""
    kinds = None if kinds is None else list(dict.fromkeys(kinds))
    if kinds:
        unknown = [k for k in kinds if k not in EVENT_KINDS]
        if unknown:
            raise InvalidInput(
                f"unknown event kinds: {', '.join(unknown)}; "
                f"known: {', '.join(sorted(EVENT_KINDS))}"
            )
    with connect(bind) as conn:
        pk_map = account_pks(conn, None if accounts is None else list(accounts))
        query = sa.select(
            events.c.account_pk, events.c.ts, events.c.kind, events.c.detail, events.c.source
        ).order_by(events.c.ts, events.c.id)
        if accounts is not None:
            query = query.where(events.c.account_pk.in_(list(pk_map.values())))
        if kinds:
            query = query.where(events.c.kind.in_(kinds))
        if start is not None:
            query = query.where(events.c.ts >= bound_ms(start))
        if end is not None:
            query = query.where(events.c.ts <= bound_ms(end))
        if limit is not None:
            query = query.limit(limit)
        rows = conn.execute(query).all()
        id_of = {pk: aid for aid, pk in pk_map.items()}
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime([r[1] for r in rows], unit="ms", utc=True).astype(
                "datetime64[ms, UTC]"
            ),
            "account_id": pd.array([id_of.get(r[0], str(r[0])) for r in rows], dtype="str"),
            "kind": pd.array([r[2] for r in rows], dtype="str"),
            "detail": pd.array([r[3] for r in rows], dtype="str"),
            "source": pd.array([r[4] for r in rows], dtype="str"),
        }
    )
    return frame


def first_events(
    conn: sa.Connection,
    windows: Sequence[tuple[str, int, int]],
    kinds: Iterable[str],
) -> list[int | None]:
    """For each ``(account_id, start_ms, end_ms)`` window, the time of the account's first event
    of one of ``kinds`` within it (both ends included), or None."""
    if not windows:
        return []
    pk_map = account_pks(conn, sorted({w[0] for w in windows}))
    pks = sorted(set(pk_map.values()))
    found: dict[int, list[int]] = {}
    for start in range(0, len(pks), 500):
        query = sa.select(events.c.account_pk, events.c.ts).where(
            events.c.account_pk.in_(pks[start : start + 500]),
            events.c.kind.in_(sorted(set(kinds))),
            events.c.ts >= min(w[1] for w in windows),
            events.c.ts <= max(w[2] for w in windows),
        )
        for pk, ts in conn.execute(query).all():
            found.setdefault(int(pk), []).append(int(ts))
    out: list[int | None] = []
    for account, start, end in windows:
        times = [t for t in found.get(pk_map.get(account, -1), ()) if start <= t <= end]
        out.append(min(times) if times else None)
    return out
