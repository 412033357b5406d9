"""Actions for the runtime: created by the tick, approved or rejected by operators, acknowledged
by the runtime, expired when nobody acted in time.

Every state change is a conditional UPDATE on the state it leaves, so two API replicas racing to
approve the same action cannot both succeed; each writes an audit entry and updates the linked
decision's status in the caller's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from fleetml.decisions.contracts import ActionKind
from fleetml.errors import Conflict, InvalidInput, NotFound
from fleetml.store import audit
from fleetml.store.alerts import MAX_ID
from fleetml.store.audit import connect
from fleetml.store.decisions import (
    check_keys,
    insert_deduplicated,
    json_safe,
    link_actions,
    set_status,
)
from fleetml.store.tables import actions

ACTION_STATES = (
    "awaiting_approval",
    "pending",
    "acknowledged",
    "failed",
    "expired",
    "rejected",
    "superseded",
)
#: States an action is created in, and the ones it can still leave.
OPEN_STATES = ("awaiting_approval", "pending")
ACK_OUTCOMES = {"ok": "acknowledged", "failed": "failed"}
_KINDS = frozenset(k.value for k in ActionKind)
_CHUNK = 2000
_SYSTEM = "fleetml"


def create_actions(
    conn: sa.Connection, rows: Sequence[Mapping[str, Any]], *, now_ms: int, ttl_ms: int
) -> list[int]:
    """Create actions; returns their ids in order. Idempotent by dedup key.

    ``rows`` carry decision_id, account_id, group, kind, params, state (``pending`` or
    ``awaiting_approval``) and dedup_key. Each expires ``ttl_ms`` after ``now_ms`` unless acted
    on. A row repeating an open action (same account, kind, state and params: a policy in approve
    mode decides the same failover every tick until someone approves it) joins that action and
    renews its expiry, so the approval queue keeps one entry with a stable id. A row that differs
    supersedes the account's open actions of the same kind: only the newest instruction counts.
    Every decision is linked to the action it ended up in.
    """
    if not rows:
        return []
    for r in rows:
        if r["state"] not in OPEN_STATES:
            raise ValueError(f"an action starts pending or awaiting_approval, not {r['state']!r}")
        if r["kind"] not in _KINDS:
            raise ValueError(f"{r['kind']!r} is not an action kind ({', '.join(sorted(_KINDS))})")
    check_keys(r.get("dedup_key") for r in rows)
    payload = [
        {
            "decision_id": None if r.get("decision_id") is None else int(r["decision_id"]),
            "account_id": str(r["account_id"]),
            "group": r.get("group"),
            "kind": str(r["kind"]),
            "params": json_safe(r.get("params") or {}),
            "state": r["state"],
            "created_at": int(now_ms),
            "expires_at": int(now_ms) + int(ttl_ms),
            "dedup_key": r.get("dedup_key"),
        }
        for r in rows
    ]
    ids: list[int | None] = list(_stored_keys(conn, payload))
    same = _open_actions(conn, [p for p, i in zip(payload, ids, strict=True) if i is None])
    joined: dict[int, int] = {}  # action id -> the expiry it is renewed to
    new: list[int] = []  # payload positions to insert
    first_of: dict[int, int] = {}  # payload position -> earlier position it repeats
    batch: dict[tuple, int] = {}
    for pos, p in enumerate(payload):
        if ids[pos] is not None:
            continue
        key = (p["account_id"], p["kind"], p["state"], _canonical(p["params"]))
        if key in same:
            ids[pos] = same[key]
            joined[same[key]] = p["expires_at"]
        elif key in batch:
            first_of[pos] = batch[key]
        else:
            batch[key] = pos
            new.append(pos)
    created: set[int] = set()
    if new:
        new_ids, created = insert_deduplicated(conn, actions, [payload[i] for i in new])
        for pos, action_id in zip(new, new_ids, strict=True):
            ids[pos] = action_id
    for pos, first in first_of.items():
        ids[pos] = ids[first]
    if joined:
        larger = sa.func.max if conn.dialect.name == "sqlite" else sa.func.greatest
        conn.execute(
            actions.update()
            .where(actions.c.id == sa.bindparam("b_id"))
            .values(expires_at=larger(actions.c.expires_at, sa.bindparam("b_expires"))),
            [{"b_id": i, "b_expires": e} for i, e in joined.items()],
        )
    _supersede(conn, [(payload[pos], ids[pos]) for pos in new if ids[pos] in created])
    link_actions(
        conn,
        links={p["decision_id"]: i for p, i in zip(payload, ids, strict=True) if p["decision_id"]},
    )
    return [int(i) for i in ids if i is not None]


def _canonical(params: Any) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def _stored_keys(conn: sa.Connection, payload: Sequence[dict]) -> list[int | None]:
    """The stored action id of each row's dedup key (None: not stored, or no key)."""
    keys = sorted({p["dedup_key"] for p in payload if p["dedup_key"] is not None})
    found: dict[str, int] = {}
    for start in range(0, len(keys), _CHUNK):
        query = sa.select(actions.c.dedup_key, actions.c.id).where(
            actions.c.dedup_key.in_(keys[start : start + _CHUNK])
        )
        found.update((k, int(i)) for k, i in conn.execute(query).all())
    return [found.get(p["dedup_key"]) if p["dedup_key"] is not None else None for p in payload]


def _open_actions(conn: sa.Connection, payload: Sequence[dict]) -> dict[tuple, int]:
    """Open actions of the accounts in ``payload``, by (account, kind, state, params): the
    newest id of each."""
    accounts = sorted({p["account_id"] for p in payload})
    out: dict[tuple, int] = {}
    for start in range(0, len(accounts), _CHUNK):
        query = (
            sa.select(actions.c.id, actions.c.account_id, actions.c.kind)
            .add_columns(actions.c.state, actions.c.params)
            .where(
                actions.c.account_id.in_(accounts[start : start + _CHUNK]),
                actions.c.state.in_(OPEN_STATES),
            )
            .order_by(actions.c.id)
        )
        for r in conn.execute(query).all():
            out[(r.account_id, r.kind, r.state, _canonical(r.params))] = int(r.id)
    return out


def _supersede(conn: sa.Connection, fresh: list[tuple[dict, int]]) -> None:
    newest: dict[tuple[str, str], int] = {}
    for p, i in fresh:
        key = (p["account_id"], p["kind"])
        newest[key] = max(i, newest.get(key, 0))
    older: list[dict] = []
    for (account_id, kind), newest_id in newest.items():
        stmt = (
            actions.update()
            .where(
                actions.c.account_id == account_id,
                actions.c.kind == kind,
                actions.c.state.in_(OPEN_STATES),
                actions.c.id < newest_id,
            )
            .values(state="superseded", detail=f"superseded by action {newest_id}")
            .returning(actions.c.id)
        )
        older.extend({"id": int(i), "by": newest_id} for i in conn.execute(stmt).scalars())
    if not older:
        return
    set_status(conn, action_ids=[r["id"] for r in older], status="superseded")
    audit.record_many(
        conn,
        [
            {
                "actor": _SYSTEM,
                "action": "action.supersede",
                "entity_type": "action",
                "entity_id": str(r["id"]),
                "after": {"state": "superseded"},
                "detail": {"superseded_by": r["by"]},
            }
            for r in older
        ],
    )


def list_actions(
    bind,
    *,
    state: str | None = None,
    account_id: str | None = None,
    group: str | None = None,
    limit: int = 100,
    after_id: int | None = None,
) -> list[dict]:
    """Actions newest first, filtered. ``after_id`` pages: only actions with a smaller id."""
    query = sa.select(actions).order_by(actions.c.id.desc()).limit(limit)
    if state is not None:
        query = query.where(actions.c.state == state)
    if account_id is not None:
        query = query.where(actions.c.account_id == account_id)
    if group is not None:
        query = query.where(actions.c.group == group)
    if after_id is not None and after_id <= MAX_ID:
        query = query.where(actions.c.id < after_id)
    with connect(bind) as conn:
        return [dict(r) for r in conn.execute(query).mappings().all()]


def get_action(bind, *, action_id: int) -> dict | None:
    """One action, or None."""
    if not 0 < action_id <= MAX_ID:
        return None
    with connect(bind) as conn:
        row = conn.execute(sa.select(actions).where(actions.c.id == action_id)).mappings().first()
    return None if row is None else dict(row)


def _action(conn: sa.Connection, action_id: int) -> dict:
    row = get_action(conn, action_id=action_id)
    if row is None:
        raise NotFound(f"action {action_id} does not exist")
    return row


def _why_not(row: Mapping[str, Any], verb: str) -> str:
    """Why an action in ``row``'s state cannot be ``verb``-ed, in the operator's words."""
    head = f"action {row['id']} ({row['kind']} of {row['account_id']}) is {row['state']}"
    state = row["state"]
    if state == "pending":
        by = f" by {row['approved_by']}" if row["approved_by"] else " (auto mode)"
        return f"{head}: it was already approved{by}; there is nothing to {verb}"
    if state == "rejected":
        return f"{head}: {row['approved_by']} rejected it; there is nothing to {verb}"
    if state in ("acknowledged", "failed"):
        return f"{head}: the runtime ({row['acked_by']}) already reported it; nothing to {verb}"
    if state == "expired":
        return f"{head}: nobody acted on it before it expired; the next tick decides again"
    if state == "superseded":
        return f"{head}: {row['detail'] or 'a newer action replaced it'}"
    return f"{head}; cannot {verb} it"


def _settle_waiting(
    conn: sa.Connection,
    *,
    action_id: int,
    to_state: str,
    actor: str,
    comment: str | None,
    now_ms: int,
) -> dict:
    verb = "approve" if to_state == "pending" else "reject"
    row = _action(conn, action_id)
    if row["state"] != "awaiting_approval":
        raise Conflict(_why_not(row, verb))
    if row["expires_at"] <= now_ms:
        raise Conflict(
            f"action {action_id} waited past its expiry and is no longer valid; "
            "the next tick decides again on fresh data"
        )
    values: dict[str, Any] = {"state": to_state, "approved_by": actor, "approved_at": now_ms}
    if to_state == "pending":
        # The runtime gets a full time-to-live from the approval, not what was left of it.
        values["expires_at"] = now_ms + (row["expires_at"] - row["created_at"])
    else:
        values["detail"] = comment
    result = conn.execute(
        actions.update()
        .where(actions.c.id == action_id, actions.c.state == "awaiting_approval")
        .values(**values)
    )
    if result.rowcount != 1:  # another replica settled it between our read and our write
        raise Conflict(_why_not(_action(conn, action_id), verb))
    set_status(
        conn, action_ids=[action_id], status="executed" if to_state == "pending" else "rejected"
    )
    audit.record(
        conn,
        actor=actor,
        action=f"action.{verb}",
        entity_type="action",
        entity_id=str(action_id),
        before={"state": row["state"]},
        after={"state": to_state},
        detail={"comment": comment, "account_id": row["account_id"], "kind": row["kind"]},
    )
    return _action(conn, action_id)


def approve_action(
    conn: sa.Connection, *, action_id: int, actor: str, now_ms: int, comment: str | None = None
) -> dict:
    """awaiting_approval -> pending, exactly once; audited. NotFound / Conflict otherwise."""
    return _settle_waiting(
        conn, action_id=action_id, to_state="pending", actor=actor, comment=comment, now_ms=now_ms
    )


def reject_action(
    conn: sa.Connection, *, action_id: int, actor: str, now_ms: int, comment: str | None = None
) -> dict:
    """awaiting_approval -> rejected; audited. NotFound / Conflict otherwise."""
    return _settle_waiting(
        conn, action_id=action_id, to_state="rejected", actor=actor, comment=comment, now_ms=now_ms
    )


def ack_action(
    conn: sa.Connection,
    *,
    action_id: int,
    outcome: str,
    detail: str | None,
    actor: str,
    now_ms: int,
) -> dict:
    """The runtime reports a pending action done (``ok``) or not (``failed``); audited.

    Repeating the same report returns the action unchanged (a retried request); a different
    report, or an action that is not pending, is a Conflict.
    """
    to_state = ACK_OUTCOMES.get(outcome)
    if to_state is None:
        raise InvalidInput(f"outcome must be 'ok' or 'failed', not {outcome!r}")
    row = _action(conn, action_id)
    if row["state"] == "pending":
        result = conn.execute(
            actions.update()
            .where(actions.c.id == action_id, actions.c.state == "pending")
            .values(state=to_state, acked_at=now_ms, acked_by=actor, detail=detail)
        )
        if result.rowcount == 1:
            if to_state == "failed":
                set_status(conn, action_ids=[action_id], status="failed")
            audit.record(
                conn,
                actor=actor,
                action="action.ack",
                entity_type="action",
                entity_id=str(action_id),
                before={"state": "pending"},
                after={"state": to_state},
                detail={"outcome": outcome, "detail": detail, "account_id": row["account_id"]},
            )
            return _action(conn, action_id)
        row = _action(conn, action_id)  # reported meanwhile: judge the stored report
    if row["state"] == to_state:
        return row
    if row["state"] in ACK_OUTCOMES.values():
        reported = "ok" if row["state"] == "acknowledged" else "failed"
        raise Conflict(
            f"action {action_id} was already reported {reported!r} by {row['acked_by']}; "
            f"it cannot also be {outcome!r}"
        )
    if row["state"] == "awaiting_approval":
        raise Conflict(
            f"action {action_id} is awaiting approval: it was not published to the runtime; "
            "do not carry it out until it is pending"
        )
    raise Conflict(_why_not(row, "acknowledge"))


def expire_actions(conn: sa.Connection, *, now_ms: int) -> int:
    """Pending or waiting actions past their expiry become ``expired``; returns how many."""
    stmt = (
        actions.update()
        .where(actions.c.state.in_(OPEN_STATES), actions.c.expires_at <= now_ms)
        .values(state="expired")
        .returning(actions.c.id)
    )
    rows = conn.execute(stmt).mappings().all()
    if not rows:
        return 0
    set_status(conn, action_ids=[r["id"] for r in rows], status="expired")
    audit.record_many(
        conn,
        [
            {
                "actor": _SYSTEM,
                "action": "action.expire",
                "entity_type": "action",
                "entity_id": str(r["id"]),
                "after": {"state": "expired"},
            }
            for r in rows
        ],
    )
    return len(rows)
