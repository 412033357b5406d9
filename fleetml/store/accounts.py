"""The fleet registry: masters, their servants, groups, states and capacity."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
import sqlalchemy as sa

from fleetml.errors import Conflict, InvalidInput, NotFound
from fleetml.store import audit
from fleetml.store.audit import connect, now_ms
from fleetml.store.tables import accounts
from fleetml.vocab import (
    ACCOUNT_ID_RE,
    NAME_MAX,
    AccountState,
    Role,
    json_problem,
    text_problem,
)

#: Fields a caller may set. ``account_id`` is immutable once created.
EDITABLE = ("role", "master_id", "group", "state", "capacity", "attributes")
_PUBLIC = ("account_id", "role", "master_id", "group", "state", "capacity", "attributes")


def _public(row: Mapping[str, Any]) -> dict:
    out = {key: row[key] for key in _PUBLIC}
    out["attributes"] = dict(out["attributes"] or {})
    out["created_at"] = _iso(row["created_at"])
    out["updated_at"] = _iso(row["updated_at"])
    out["retired_at"] = _iso(row["retired_at"])
    return out


def _iso(ms: int | None) -> str | None:
    return None if ms is None else pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()


def _check_fields(values: Mapping[str, Any]) -> None:
    if "role" in values and values["role"] not in {r.value for r in Role}:
        raise InvalidInput(f"role must be 'master' or 'servant', not {values['role']!r}")
    if "state" in values and values["state"] not in {s.value for s in AccountState}:
        allowed = ", ".join(s.value for s in AccountState)
        raise InvalidInput(f"state must be one of {allowed}, not {values['state']!r}")
    cap = values.get("capacity")
    if cap is not None and (
        not isinstance(cap, int | float) or isinstance(cap, bool) or not 0 < cap < math.inf
    ):
        raise InvalidInput(
            f"capacity must be a positive, finite number of messages a minute, not {cap!r}",
            field="capacity",
        )
    group = values.get("group")
    if group is not None:
        reason = "must be a string" if not isinstance(group, str) else None
        reason = reason or text_problem(group, max_length=NAME_MAX)
        if reason is not None:
            raise InvalidInput(f"group {ascii(group)[:60]} {reason}", field="group")
    attrs = values.get("attributes")
    if attrs is not None and not isinstance(attrs, Mapping):
        raise InvalidInput("attributes must be an object of free-form key/value pairs")
    problem = json_problem(attrs) if attrs else None
    if problem is not None:
        where = f"attributes.{problem[0]}" if problem[0] else "attributes"
        raise InvalidInput(f"{where}: {problem[1]}", field=where)


def _check_role_master(conn: sa.Connection, account_id: str, role: str, master_id: str | None):
    if role == Role.MASTER:
        if master_id:
            raise InvalidInput(f"{account_id}: a master has no master_id (got {master_id!r})")
        return
    if not master_id:
        raise InvalidInput(f"{account_id}: a servant needs master_id, the master it backs up")
    if master_id == account_id:
        raise InvalidInput(f"{account_id}: an account cannot be its own master")
    master = _row(conn, master_id)
    if master is None:
        raise InvalidInput(f"{account_id}: master {master_id!r} is not registered")
    if master["role"] != Role.MASTER:
        raise InvalidInput(f"{account_id}: {master_id!r} is a servant, not a master")


def _row(conn: sa.Connection, account_id: str):
    return (
        conn.execute(sa.select(accounts).where(accounts.c.account_id == account_id))
        .mappings()
        .first()
    )


def create_account(
    conn: sa.Connection,
    *,
    account_id: str,
    role: str = "master",
    master_id: str | None = None,
    group: str | None = None,
    state: str | None = None,
    capacity: float | None = None,
    attributes: Mapping[str, Any] | None = None,
    actor: str,
) -> dict:
    """Register an account. A servant's ``master_id`` must name a registered master.

    Masters start ``active`` and servants ``standby`` unless ``state`` says otherwise.
    """
    if not ACCOUNT_ID_RE.match(account_id or ""):
        raise InvalidInput(
            f"account_id {account_id!r} is invalid: 1-128 letters, digits or . _ : @ + -"
        )
    role = role or "master"
    state = state or (AccountState.ACTIVE if role == Role.MASTER else AccountState.STANDBY)
    values = {"role": role, "state": state, "capacity": capacity, "attributes": attributes}
    _check_fields(values)
    if _row(conn, account_id) is not None:
        raise Conflict(f"account {account_id!r} already exists; update it instead")
    _check_role_master(conn, account_id, role, master_id)
    ts = now_ms()
    conn.execute(
        accounts.insert().values(
            account_id=account_id,
            role=str(role),
            master_id=master_id or None,
            group=group or None,
            state=str(state),
            capacity=capacity,
            attributes=dict(attributes or {}),
            created_at=ts,
            updated_at=ts,
            retired_at=None,
        )
    )
    created = _public(_row(conn, account_id))
    audit.record(
        conn,
        actor=actor,
        action="account.create",
        entity_type="account",
        entity_id=account_id,
        after=created,
    )
    return created


def get_account(bind, account_id: str) -> dict | None:
    with connect(bind) as conn:
        row = _row(conn, account_id)
    return None if row is None else _public(row)


def update_account(
    conn: sa.Connection, account_id: str, *, changes: Mapping[str, Any], actor: str
) -> dict:
    """Change some fields of an account; unknown fields are refused, no-op changes not audited."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise InvalidInput(
            f"cannot change {', '.join(sorted(unknown))}; editable fields: {', '.join(EDITABLE)}"
        )
    row = _row(conn, account_id)
    if row is None:
        raise NotFound(f"account {account_id!r} is not registered")
    _check_fields(changes)
    before = _public(row)
    merged = {**before, **changes}
    if changes.get("role") == Role.MASTER and "master_id" not in changes:
        merged["master_id"] = None
    _check_role_master(conn, account_id, merged["role"], merged["master_id"])
    if merged["role"] == Role.SERVANT and before["role"] == Role.MASTER:
        has_servants = conn.execute(
            sa.select(sa.func.count())
            .select_from(accounts)
            .where(accounts.c.master_id == account_id, accounts.c.retired_at.is_(None))
        ).scalar()
        if has_servants:
            raise Conflict(f"{account_id} still has {has_servants} servant(s); move them first")
    new = {key: merged[key] for key in EDITABLE}
    if all(new[key] == before[key] for key in EDITABLE):
        return before
    new["attributes"] = dict(new["attributes"] or {})
    retired_at = row["retired_at"]
    if new["state"] != AccountState.DISABLED and retired_at is not None:
        retired_at = None  # re-activating a retired account brings it back
    conn.execute(
        accounts.update()
        .where(accounts.c.account_id == account_id)
        .values(**new, updated_at=now_ms(), retired_at=retired_at)
    )
    after = _public(_row(conn, account_id))
    audit.record(
        conn,
        actor=actor,
        action="account.update",
        entity_type="account",
        entity_id=account_id,
        before=before,
        after=after,
    )
    return after


def retire_account(conn: sa.Connection, account_id: str, *, actor: str) -> dict:
    """Retire an account: state ``disabled``, kept (with its history) but out of listings."""
    row = _row(conn, account_id)
    if row is None:
        raise NotFound(f"account {account_id!r} is not registered")
    if row["role"] == Role.MASTER:
        live = (
            conn.execute(
                sa.select(accounts.c.account_id).where(
                    accounts.c.master_id == account_id, accounts.c.retired_at.is_(None)
                )
            )
            .scalars()
            .all()
        )
        if live:
            raise Conflict(
                f"master {account_id} still has servants {', '.join(live)}; "
                "retire or move them first"
            )
    before = _public(row)
    if row["retired_at"] is not None:
        return before
    ts = now_ms()
    conn.execute(
        accounts.update()
        .where(accounts.c.account_id == account_id)
        .values(state=AccountState.DISABLED.value, retired_at=ts, updated_at=ts)
    )
    after = _public(_row(conn, account_id))
    audit.record(
        conn,
        actor=actor,
        action="account.retire",
        entity_type="account",
        entity_id=account_id,
        before=before,
        after=after,
    )
    return after


def list_accounts(
    bind,
    *,
    group: str | None = None,
    role: str | None = None,
    state: str | None = None,
    master_id: str | None = None,
    include_retired: bool = False,
) -> list[dict]:
    query = sa.select(accounts).order_by(accounts.c.account_id)
    if group is not None:
        query = query.where(accounts.c.group == group)
    if role is not None:
        query = query.where(accounts.c.role == role)
    if state is not None:
        query = query.where(accounts.c.state == state)
    if master_id is not None:
        query = query.where(accounts.c.master_id == master_id)
    if not include_retired:
        query = query.where(accounts.c.retired_at.is_(None))
    with connect(bind) as conn:
        return [_public(row) for row in conn.execute(query).mappings()]


def accounts_frame(bind, *, include_retired: bool = False) -> pd.DataFrame:
    """The registry as a frame: account_id, role, master_id, group, state, capacity, attributes."""
    rows = list_accounts(bind, include_retired=include_retired)
    columns = list(_PUBLIC)
    if not rows:
        return pd.DataFrame(
            {col: pd.Series(dtype="float64" if col == "capacity" else "object") for col in columns}
        )
    frame = pd.DataFrame(rows)[columns]
    frame["capacity"] = frame["capacity"].astype("float64")
    return frame


def account_pks(bind, account_ids: Iterable[str] | None = None) -> dict[str, int]:
    """Map external account ids to their internal keys (all accounts when ids is None)."""
    query = sa.select(accounts.c.account_id, accounts.c.id)
    ids = None if account_ids is None else list(dict.fromkeys(account_ids))
    with connect(bind) as conn:
        if ids is None:
            return dict(conn.execute(query).all())
        out: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            out.update(conn.execute(query.where(accounts.c.account_id.in_(chunk))).all())
        return out


def register_unknown(
    conn: sa.Connection, account_ids: Iterable[str], *, actor: str, source: str
) -> dict[str, int]:
    """Register every id not yet known as a master in state ``active`` (ingest's ``register``).

    Returns the internal keys of all the given ids. Invalid ids raise :class:`InvalidInput`.
    """
    ids = list(dict.fromkeys(account_ids))
    known = account_pks(conn, ids)
    missing = [a for a in ids if a not in known]
    bad = [a for a in missing if not isinstance(a, str) or not ACCOUNT_ID_RE.match(a)]
    if bad:
        raise InvalidInput(f"invalid account ids: {', '.join(map(repr, bad[:10]))}")
    if missing:
        ts = now_ms()
        rows = [
            {
                "account_id": a,
                "role": Role.MASTER.value,
                "master_id": None,
                "group": None,
                "state": AccountState.ACTIVE.value,
                "capacity": None,
                "attributes": {"registered_by": source},
                "created_at": ts,
                "updated_at": ts,
                "retired_at": None,
            }
            for a in missing
        ]
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            conn.execute(pg_insert(accounts).on_conflict_do_nothing(), rows)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            conn.execute(sqlite_insert(accounts).on_conflict_do_nothing(), rows)
        audit.record_many(
            conn,
            [
                {
                    "actor": actor,
                    "action": "account.register",
                    "entity_type": "account",
                    "entity_id": a,
                    "after": {"account_id": a, "role": "master", "state": "active"},
                    "detail": {"source": source},
                }
                for a in missing
            ],
        )
        known.update(account_pks(conn, missing))
    return known
