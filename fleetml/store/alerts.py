"""Alerts, their history, silences and the notification outbox.

Rows come back as plain dicts with epoch-millisecond timestamps; the API turns them into ISO
strings. Writers take the caller's connection, so an alert change, its history, its audit entry
and its notifications commit together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa

from fleetml.errors import Conflict, InvalidInput, NotFound
from fleetml.store import audit
from fleetml.store.audit import connect
from fleetml.store.tables import (
    accounts,
    alert_feedback,
    alert_history,
    alerts,
    events,
    notifications,
    silences,
)

OPEN_STATES = ("firing", "acknowledged")
#: Largest id these tables can hold (INTEGER is 32-bit on PostgreSQL): a larger id a caller
#: names is unknown, and must not reach the database, which would refuse to compare it.
MAX_ID = 2**31 - 1
_CHUNK = 2000  # ids per IN list: well under SQLite's bound-parameter limit
# The partial unique index uq_alerts_open, spelled as the ON CONFLICT target must spell it.
_OPEN_PREDICATE = sa.text("state != 'resolved'")


def _insert(conn: sa.Connection):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _chunks(values: Sequence, size: int = _CHUNK) -> Iterable[list]:
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start : start + size]


# ---- what a tick reads ---------------------------------------------------------------------


def read_open_alerts(bind) -> pd.DataFrame:
    """Every open alert: id, account_id, group, kind, state, silenced."""
    query = sa.select(
        alerts.c.id,
        alerts.c.account_id,
        alerts.c.group,
        alerts.c.kind,
        alerts.c.state,
        alerts.c.silenced,
    ).where(alerts.c.state.in_(OPEN_STATES))
    with connect(bind) as conn:
        rows = conn.execute(query).all()
    columns = ["id", "account_id", "group", "kind", "state", "silenced"]
    frame = pd.DataFrame.from_records(rows, columns=columns)
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    frame["silenced"] = frame["silenced"].astype(bool)
    return frame


def read_silences(bind, *, now_ms: int) -> pd.DataFrame:
    """Silences not deleted and not yet over at ``now_ms`` (current and future)."""
    query = sa.select(silences).where(silences.c.deleted_at.is_(None), silences.c.ends_at > now_ms)
    with connect(bind) as conn:
        rows = conn.execute(query).mappings().all()
    columns = [c.name for c in silences.c]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    return pd.DataFrame.from_records([dict(r) for r in rows], columns=columns)


def read_last_resolved(bind, *, account_ids: Iterable[str], since_ms: int) -> pd.DataFrame:
    """The newest resolution at or after ``since_ms`` per (account_id, kind) of ``account_ids``."""
    out = []
    with connect(bind) as conn:
        for chunk in _chunks(sorted(set(account_ids))):
            query = (
                sa.select(
                    alerts.c.account_id,
                    alerts.c.kind,
                    sa.func.max(alerts.c.resolved_at).label("resolved_at"),
                )
                .where(
                    alerts.c.state == "resolved",
                    alerts.c.resolved_at >= since_ms,
                    alerts.c.account_id.in_(chunk),
                )
                .group_by(alerts.c.account_id, alerts.c.kind)
            )
            out.extend(conn.execute(query).all())
    return pd.DataFrame.from_records(out, columns=["account_id", "kind", "resolved_at"])


def read_maintenance_windows(bind, *, account_ids: Iterable[str], now_ms: int) -> pd.DataFrame:
    """The newest maintenance_start and maintenance_end at or before ``now_ms`` per account.

    Columns account_id, last_start, last_end (NaN when the account has none).
    """
    out = []
    with connect(bind) as conn:
        for chunk in _chunks(sorted(set(account_ids))):
            query = (
                sa.select(accounts.c.account_id, events.c.kind, sa.func.max(events.c.ts))
                .select_from(events.join(accounts, accounts.c.id == events.c.account_pk))
                .where(
                    events.c.kind.in_(("maintenance_start", "maintenance_end")),
                    events.c.ts <= now_ms,
                    accounts.c.account_id.in_(chunk),
                )
                .group_by(accounts.c.account_id, events.c.kind)
            )
            out.extend(conn.execute(query).all())
    frame = pd.DataFrame.from_records(out, columns=["account_id", "kind", "ts"])
    if frame.empty:
        return pd.DataFrame(
            {
                "account_id": pd.Series(dtype=object),
                "last_start": pd.Series(dtype="float64"),
                "last_end": pd.Series(dtype="float64"),
            }
        )
    wide = frame.pivot(index="account_id", columns="kind", values="ts")
    wide = wide.reindex(columns=["maintenance_start", "maintenance_end"]).astype("float64")
    wide.columns = ["last_start", "last_end"]
    return wide.reset_index()


# ---- what a tick writes --------------------------------------------------------------------


def insert_alerts(conn: sa.Connection, *, rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Open alerts; a key that already has an open alert is skipped. Returns the rows inserted.

    ``rows`` carry account_id, group, kind, severity, summary, detail, silenced, opened_at.
    """
    if not rows:
        return []
    payload = [
        {
            "account_id": r["account_id"],
            "group": r.get("group"),
            "kind": r["kind"],
            "severity": r["severity"],
            "state": "firing",
            "summary": r["summary"],
            "detail": r.get("detail"),
            "opened_at": r["opened_at"],
            "updated_at": r["opened_at"],
            "last_seen_at": r["opened_at"],
            "silenced": bool(r.get("silenced", False)),
        }
        for r in rows
    ]
    stmt = (
        _insert(conn)(alerts)
        .on_conflict_do_nothing(index_elements=["account_id", "kind"], index_where=_OPEN_PREDICATE)
        .returning(*alerts.c)
    )
    return [dict(r) for r in conn.execute(stmt, payload).mappings().all()]


def touch_alerts(conn: sa.Connection, *, rows: Sequence[Mapping[str, Any]], now_ms: int) -> int:
    """Refresh open alerts still firing: last_seen_at, detail and whether they are silenced."""
    if not rows:
        return 0
    stmt = (
        alerts.update()
        .where(alerts.c.id == sa.bindparam("b_id"), alerts.c.state != "resolved")
        .values(
            last_seen_at=now_ms,
            updated_at=now_ms,
            detail=sa.bindparam("b_detail", type_=alerts.c.detail.type),
            silenced=sa.bindparam("b_silenced", type_=sa.Boolean),
        )
    )
    payload = [
        {"b_id": int(r["id"]), "b_detail": r.get("detail"), "b_silenced": bool(r["silenced"])}
        for r in rows
    ]
    conn.execute(stmt, payload)
    return len(payload)


def close_alerts(conn: sa.Connection, *, ids: Iterable[int], now_ms: int, actor: str) -> list[dict]:
    """Resolve the given alerts if still open; returns the rows that changed (new state)."""
    out: list[dict] = []
    for chunk in _chunks(sorted({int(i) for i in ids})):
        stmt = (
            alerts.update()
            .where(alerts.c.id.in_(chunk), alerts.c.state != "resolved")
            .values(state="resolved", resolved_at=now_ms, resolved_by=actor, updated_at=now_ms)
            .returning(*alerts.c)
        )
        out.extend(dict(r) for r in conn.execute(stmt).mappings().all())
    return out


def write_history(conn: sa.Connection, *, rows: Sequence[Mapping[str, Any]]) -> None:
    """Append state changes: alert_id, ts, from_state, to_state, actor, note."""
    if rows:
        conn.execute(
            alert_history.insert(),
            [
                {
                    "alert_id": int(r["alert_id"]),
                    "ts": int(r["ts"]),
                    "from_state": r.get("from_state"),
                    "to_state": r["to_state"],
                    "actor": r["actor"],
                    "note": r.get("note"),
                }
                for r in rows
            ],
        )


def notified_targets(conn: sa.Connection, *, alert_ids: Iterable[int]) -> list[dict]:
    """The (alert_id, target, format) that were sent a 'firing' notification."""
    out: list[dict] = []
    for chunk in _chunks(sorted({int(i) for i in alert_ids})):
        query = sa.select(
            notifications.c.alert_id, notifications.c.target, notifications.c.format
        ).where(notifications.c.alert_id.in_(chunk), notifications.c.event == "firing")
        out.extend(dict(r) for r in conn.execute(query).mappings().all())
    return out


def write_notifications(conn: sa.Connection, *, rows: Sequence[Mapping[str, Any]]) -> int:
    """Queue notifications (alert_id, event, target, format, payload, created_at).

    An (alert, event, target) already queued is skipped; returns how many rows were written.
    """
    if not rows:
        return 0
    payload = [
        {
            "alert_id": int(r["alert_id"]),
            "event": r["event"],
            "target": r["target"],
            "format": r["format"],
            "payload": r["payload"],
            "state": "pending",
            "attempts": 0,
            "created_at": int(r["created_at"]),
        }
        for r in rows
    ]
    stmt = (
        _insert(conn)(notifications)
        .on_conflict_do_nothing(index_elements=["alert_id", "event", "target"])
        .returning(notifications.c.id)
    )
    return len(conn.execute(stmt, payload).all())


# ---- what operators read and do ------------------------------------------------------------


def list_alerts(
    bind,
    *,
    state: str | None = None,
    account_id: str | None = None,
    group: str | None = None,
    kind: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[dict]:
    """Alerts newest first; ``state='open'`` means firing or acknowledged.

    ``before_id`` pages: only alerts with a smaller id.
    """
    query = sa.select(alerts).order_by(alerts.c.id.desc()).limit(limit)
    if state == "open":
        query = query.where(alerts.c.state.in_(OPEN_STATES))
    elif state is not None:
        query = query.where(alerts.c.state == state)
    if account_id is not None:
        query = query.where(alerts.c.account_id == account_id)
    if group is not None:
        query = query.where(alerts.c.group == group)
    if kind is not None:
        query = query.where(alerts.c.kind == kind)
    if before_id is not None and before_id <= MAX_ID:
        query = query.where(alerts.c.id < before_id)
    with connect(bind) as conn:
        return [dict(r) for r in conn.execute(query).mappings().all()]


def get_alert(bind, *, alert_id: int) -> dict | None:
    """One alert, or None."""
    if not 0 < alert_id <= MAX_ID:
        return None
    with connect(bind) as conn:
        row = conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).mappings().first()
    return None if row is None else dict(row)


def read_alerts(bind, *, ids: Iterable[int]) -> list[dict]:
    """The alerts with the given ids (unknown ids are left out)."""
    out: list[dict] = []
    with connect(bind) as conn:
        for chunk in _chunks(sorted({int(i) for i in ids})):
            query = sa.select(alerts).where(alerts.c.id.in_(chunk))
            out.extend(dict(r) for r in conn.execute(query).mappings().all())
    return out


def read_history(bind, *, alert_id: int) -> list[dict]:
    """An alert's state changes, oldest first."""
    query = (
        sa.select(alert_history)
        .where(alert_history.c.alert_id == alert_id)
        .order_by(alert_history.c.ts, alert_history.c.id)
    )
    with connect(bind) as conn:
        return [dict(r) for r in conn.execute(query).mappings().all()]


def _open_alert(conn: sa.Connection, alert_id: int, verb: str) -> dict:
    row = get_alert(conn, alert_id=alert_id)
    if row is None:
        raise NotFound(f"alert {alert_id} does not exist")
    if row["state"] == "resolved":
        raise Conflict(
            f"alert {alert_id} was already resolved by {row['resolved_by']}; "
            f"there is nothing to {verb}"
        )
    return row


def acknowledge_alert(
    conn: sa.Connection, *, alert_id: int, actor: str, note: str | None, now_ms: int
) -> dict:
    """Mark an open alert acknowledged (it stays open and keeps updating); audited.

    Acknowledging an acknowledged alert changes nothing. Raises NotFound / Conflict (resolved).
    """
    row = _open_alert(conn, alert_id, "acknowledge")
    if row["state"] == "acknowledged":
        return row
    conn.execute(
        alerts.update()
        .where(alerts.c.id == alert_id)
        .values(
            state="acknowledged", acknowledged_at=now_ms, acknowledged_by=actor, updated_at=now_ms
        )
    )
    _log_change(conn, row, "acknowledged", actor=actor, note=note, now_ms=now_ms)
    return get_alert(conn, alert_id=alert_id)


def resolve_alert(
    conn: sa.Connection, *, alert_id: int, actor: str, note: str | None, now_ms: int
) -> dict:
    """Resolve an open alert by hand; audited. Raises NotFound / Conflict (already resolved)."""
    row = _open_alert(conn, alert_id, "resolve")
    changed = close_alerts(conn, ids=[alert_id], now_ms=now_ms, actor=actor)
    if not changed:  # resolved by the tick between our read and our write
        raise Conflict(f"alert {alert_id} was resolved meanwhile; there is nothing to resolve")
    _log_change(conn, row, "resolved", actor=actor, note=note, now_ms=now_ms)
    return changed[0]


def _log_change(
    conn: sa.Connection, row: Mapping, to_state: str, *, actor: str, note: str | None, now_ms: int
) -> None:
    write_history(
        conn,
        rows=[
            {
                "alert_id": row["id"],
                "ts": now_ms,
                "from_state": row["state"],
                "to_state": to_state,
                "actor": actor,
                "note": note,
            }
        ],
    )
    audit.record(
        conn,
        actor=actor,
        action=f"alert.{'ack' if to_state == 'acknowledged' else 'resolve'}",
        entity_type="alert",
        entity_id=str(row["id"]),
        before={"state": row["state"]},
        after={"state": to_state},
        detail={"note": note, "account_id": row["account_id"], "kind": row["kind"]},
    )


# ---- silences ------------------------------------------------------------------------------


def create_silence(
    conn: sa.Connection,
    *,
    account_id: str | None,
    group: str | None,
    kind: str | None,
    starts_at: int,
    ends_at: int,
    comment: str | None,
    actor: str,
    now_ms: int,
) -> dict:
    """Add a silence; audited. The caller has checked the matchers and the time range."""
    values = {
        "account_id": account_id,
        "group": group,
        "kind": kind,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "comment": comment,
        "created_by": actor,
        "created_at": now_ms,
    }
    row = conn.execute(silences.insert().values(**values).returning(*silences.c)).mappings().one()
    row = dict(row)
    audit.record(
        conn,
        actor=actor,
        action="silence.create",
        entity_type="silence",
        entity_id=str(row["id"]),
        after={k: values[k] for k in ("account_id", "group", "kind", "starts_at", "ends_at")},
        detail={"comment": comment},
    )
    return row


def list_silences(
    bind, *, now_ms: int, include_expired: bool = False, limit: int = 1000
) -> list[dict]:
    """Silences newest first: current and future ones, or every one with ``include_expired``."""
    query = sa.select(silences).order_by(silences.c.id.desc()).limit(limit)
    if not include_expired:
        query = query.where(silences.c.deleted_at.is_(None), silences.c.ends_at > now_ms)
    with connect(bind) as conn:
        return [dict(r) for r in conn.execute(query).mappings().all()]


def delete_silence(conn: sa.Connection, *, silence_id: int, actor: str, now_ms: int) -> dict:
    """Expire a silence now (kept for the record); audited. NotFound / Conflict if deleted."""
    row = None
    if 0 < silence_id <= MAX_ID:
        row = (
            conn.execute(sa.select(silences).where(silences.c.id == silence_id)).mappings().first()
        )
    if row is None:
        raise NotFound(f"silence {silence_id} does not exist")
    if row["deleted_at"] is not None:
        raise Conflict(f"silence {silence_id} was already deleted")
    conn.execute(silences.update().where(silences.c.id == silence_id).values(deleted_at=now_ms))
    audit.record(
        conn,
        actor=actor,
        action="silence.delete",
        entity_type="silence",
        entity_id=str(silence_id),
        before={"deleted_at": None},
        after={"deleted_at": now_ms},
    )
    return {**dict(row), "deleted_at": now_ms}


# ---- the outbox ----------------------------------------------------------------------------


def pending_notifications(bind, *, limit: int = 500) -> list[dict]:
    """Pending notifications, oldest first, each with its alert's group."""
    query = (
        sa.select(
            notifications.c.id,
            notifications.c.alert_id,
            notifications.c.event,
            notifications.c.target,
            notifications.c.format,
            notifications.c.payload,
            notifications.c.attempts,
            alerts.c.group,
        )
        .select_from(notifications.outerjoin(alerts, alerts.c.id == notifications.c.alert_id))
        .where(notifications.c.state == "pending")
        .order_by(notifications.c.id)
        .limit(limit)
    )
    with connect(bind) as conn:
        return [dict(r) for r in conn.execute(query).mappings().all()]


def record_delivery(
    conn: sa.Connection,
    *,
    ids: Sequence[int],
    tries: int,
    delivered: bool,
    error: str | None,
    give_up: bool,
    retries: int,
    now_ms: int,
) -> None:
    """Count ``tries`` more attempts on the notifications ``ids`` and settle their state.

    Delivered rows are done; the others fail once their attempts exceed ``retries`` (or at
    once with ``give_up``) and otherwise stay pending for the next round.
    """
    attempts = notifications.c.attempts + tries
    if delivered:
        state: Any = "delivered"
    elif give_up:
        state = "failed"
    else:
        state = sa.case((attempts > retries, "failed"), else_="pending")
    for chunk in _chunks(ids):
        conn.execute(
            notifications.update()
            .where(notifications.c.id.in_(chunk))
            .values(
                attempts=attempts,
                state=state,
                last_error=error,
                delivered_at=now_ms if delivered else None,
            )
        )


def read_notifications(bind, *, alert_id: int | None = None) -> list[dict]:
    """Outbox rows (every state), oldest first; for one alert when ``alert_id`` is given."""
    query = sa.select(notifications).order_by(notifications.c.id)
    if alert_id is not None:
        query = query.where(notifications.c.alert_id == alert_id)
    with connect(bind) as conn:
        return [dict(r) for r in conn.execute(query).mappings().all()]


# ---- feedback ------------------------------------------------------------------------------

VERDICTS = ("real", "false_alarm")


def record_feedback(
    conn: sa.Connection, *, alert_id: int, verdict: str, actor: str, note: str | None, now_ms: int
) -> dict:
    """Record what ``actor`` says of an alert, in any state (a false alarm often resolves by
    itself before anyone looks); the latest word per alert counts. Audited. Raises NotFound."""
    if verdict not in VERDICTS:
        raise InvalidInput(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
    row = get_alert(conn, alert_id=alert_id)
    if row is None:
        raise NotFound(f"no alert with id {alert_id}")
    conn.execute(
        alert_feedback.insert().values(
            alert_id=alert_id, ts=now_ms, verdict=verdict, actor=actor, note=note
        )
    )
    audit.record(
        conn,
        actor=actor,
        action="alert.feedback",
        entity_type="alert",
        entity_id=str(alert_id),
        after={"verdict": verdict},
        detail={"note": note, "account_id": row["account_id"], "kind": row["kind"]},
    )
    return {"alert_id": alert_id, "verdict": verdict, "actor": actor, "ts": now_ms, "note": note}


def alert_precision(bind, *, start_ms: int | None = None, end_ms: int | None = None) -> list[dict]:
    """Per alert kind, over the alerts opened in ``[start_ms, end_ms]``: how many ops judged
    real, how many false alarms (each alert's latest verdict), how many nobody judged, and the
    precision real / (real + false alarms)."""
    latest = (
        sa.select(alert_feedback.c.alert_id, sa.func.max(alert_feedback.c.id).label("last"))
        .group_by(alert_feedback.c.alert_id)
        .subquery()
    )
    verdict = (
        sa.select(alert_feedback.c.alert_id, alert_feedback.c.verdict)
        .join(latest, alert_feedback.c.id == latest.c.last)
        .subquery()
    )
    query = sa.select(alerts.c.kind, verdict.c.verdict, sa.func.count()).outerjoin(
        verdict, verdict.c.alert_id == alerts.c.id
    )
    if start_ms is not None:
        query = query.where(alerts.c.opened_at >= start_ms)
    if end_ms is not None:
        query = query.where(alerts.c.opened_at <= end_ms)
    query = query.group_by(alerts.c.kind, verdict.c.verdict)
    counts: dict[str, dict[str, int]] = {}
    with connect(bind) as conn:
        for kind, said, n in conn.execute(query).all():
            entry = counts.setdefault(kind, {"real": 0, "false_alarm": 0, "unjudged": 0})
            entry[said if said in VERDICTS else "unjudged"] += int(n)
    out = []
    for kind in sorted(counts):
        c = counts[kind]
        judged = c["real"] + c["false_alarm"]
        out.append({"kind": kind, **c, "precision": c["real"] / judged if judged else None})
    return out
