"""Recommendations for people: raised by the tick, accepted or dismissed by operators.

At most one recommendation per dedup key is open (a partial unique index): raising it again
refreshes its evidence and counts an occurrence. Accepting one that carries a setting changes
the group's policy in the same transaction, so either both happen or neither does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from fleetml.decisions.contracts import Mode, Recommendation
from fleetml.errors import Conflict, InvalidInput, NotFound
from fleetml.store import audit
from fleetml.store.alerts import MAX_ID
from fleetml.store.audit import connect
from fleetml.store.decisions import check_keys, dialect_insert, json_safe
from fleetml.store.policies import set_group_policy
from fleetml.store.tables import recommendations

RECOMMENDATION_STATES = ("open", "accepted", "dismissed", "applied", "expired")
#: States a person chose: while such a recommendation would still be live, the same suggestion
#: is not raised again (a dismissal would mean nothing if the next tick reopened it).
_DECIDED = ("accepted", "dismissed", "applied")
# The partial unique index uq_recommendations_open, spelled as the ON CONFLICT target must.
_OPEN_PREDICATE = sa.text("state = 'open'")
_CHUNK = 2000
_SYSTEM = "fleetml"


def upsert_recommendations(
    conn: sa.Connection, recs: Sequence[Recommendation], *, now_ms: int
) -> dict[str, int]:
    """Open new recommendations and refresh open ones with the same dedup key.

    A refreshed one gets the new evidence, expected impact, confidence, setting and expiry, and
    one more occurrence. A rerun of the same tick (same ``now_ms``) counts nothing twice. A
    suggestion a person accepted or dismissed stays quiet until that one would have expired.
    Returns counts: opened, updated, suppressed.
    """
    if not recs:
        return {"opened": 0, "updated": 0, "suppressed": 0}
    check_keys(r.dedup_key for r in recs)
    latest: dict[str, Recommendation] = {}
    raised: dict[str, int] = {}
    for r in recs:  # the same key twice in one batch: one row, both occurrences counted
        latest[r.dedup_key] = r
        raised[r.dedup_key] = raised.get(r.dedup_key, 0) + 1
    quiet = _decided_keys(conn, list(latest), now_ms=now_ms)
    payload = [
        {
            "kind": str(r.kind),  # a StrEnum member: its value
            "group": r.group,
            "account_id": r.account_id,
            "state": "open",
            "title": r.title,
            "evidence": json_safe(r.evidence or {}),
            "expected_impact": json_safe(r.expected_impact or {}),
            "confidence": float(r.confidence),
            "setting": None if r.setting is None else json_safe(r.setting),
            "dedup_key": key,
            "occurrences": raised[key],
            "created_at": int(now_ms),
            "updated_at": int(now_ms),
            "expires_at": int(now_ms) + int(r.expires_after_s) * 1000,
        }
        for key, r in latest.items()
        if key not in quiet
    ]
    if not payload:
        return {"opened": 0, "updated": 0, "suppressed": len(quiet)}
    stmt = dialect_insert(conn)(recommendations)
    stmt = stmt.on_conflict_do_update(
        index_elements=["dedup_key"],
        index_where=_OPEN_PREDICATE,
        set_={
            "title": stmt.excluded.title,
            "evidence": stmt.excluded.evidence,
            "expected_impact": stmt.excluded.expected_impact,
            "confidence": stmt.excluded.confidence,
            "setting": stmt.excluded.setting,
            "occurrences": recommendations.c.occurrences + stmt.excluded.occurrences,
            "updated_at": stmt.excluded.updated_at,
            "expires_at": stmt.excluded.expires_at,
        },
        # the same tick again (a rerun after a crash) leaves the row as the first run left it
        where=recommendations.c.updated_at < stmt.excluded.updated_at,
    ).returning(recommendations.c.created_at)
    created = conn.execute(stmt, payload).scalars().all()
    opened = sum(1 for c in created if c == now_ms)
    return {"opened": opened, "updated": len(created) - opened, "suppressed": len(quiet)}


def _decided_keys(conn: sa.Connection, keys: list[str], *, now_ms: int) -> set[str]:
    out: set[str] = set()
    for start in range(0, len(keys), _CHUNK):
        query = sa.select(recommendations.c.dedup_key).where(
            recommendations.c.dedup_key.in_(keys[start : start + _CHUNK]),
            recommendations.c.state.in_(_DECIDED),
            recommendations.c.expires_at > now_ms,
        )
        out.update(conn.execute(query).scalars())
    return out


def expire_recommendations(conn: sa.Connection, *, now_ms: int) -> int:
    """Open recommendations past their expiry become ``expired``; returns how many."""
    stmt = (
        recommendations.update()
        .where(recommendations.c.state == "open", recommendations.c.expires_at <= now_ms)
        .values(state="expired", updated_at=now_ms)
        .returning(recommendations.c.id, recommendations.c.kind)
    )
    rows = conn.execute(stmt).all()
    audit.record_many(
        conn,
        [
            {
                "actor": _SYSTEM,
                "action": "recommendation.expire",
                "entity_type": "recommendation",
                "entity_id": str(r.id),
                "before": {"state": "open"},
                "after": {"state": "expired"},
                "detail": {"kind": r.kind},
            }
            for r in rows
        ],
    )
    return len(rows)


def list_recommendations(
    bind,
    *,
    state: str | None = None,
    group: str | None = None,
    kind: str | None = None,
    limit: int = 100,
    after_id: int | None = None,
) -> list[dict]:
    """Recommendations newest first, filtered. ``after_id`` pages: only smaller ids."""
    query = sa.select(recommendations).order_by(recommendations.c.id.desc()).limit(limit)
    if state is not None:
        query = query.where(recommendations.c.state == state)
    if group is not None:
        query = query.where(recommendations.c.group == group)
    if kind is not None:
        query = query.where(recommendations.c.kind == kind)
    if after_id is not None and after_id <= MAX_ID:
        query = query.where(recommendations.c.id < after_id)
    with connect(bind) as conn:
        return [dict(r) for r in conn.execute(query).mappings().all()]


def get_recommendation(bind, *, rec_id: int) -> dict | None:
    """One recommendation, or None."""
    if not 0 < rec_id <= MAX_ID:
        return None
    query = sa.select(recommendations).where(recommendations.c.id == rec_id)
    with connect(bind) as conn:
        row = conn.execute(query).mappings().first()
    return None if row is None else dict(row)


def _decide(
    conn: sa.Connection,
    *,
    rec_id: int,
    to_state: str,
    actor: str,
    comment: str | None,
    now_ms: int,
) -> dict:
    verb = "dismiss" if to_state == "dismissed" else "accept"
    row = get_recommendation(conn, rec_id=rec_id)
    if row is None:
        raise NotFound(f"recommendation {rec_id} does not exist")
    if row["state"] != "open":
        by = f" by {row['decided_by']}" if row["decided_by"] else ""
        raise Conflict(
            f"recommendation {rec_id} is already {row['state']}{by}; only an open one can be "
            f"{'dismissed' if verb == 'dismiss' else 'accepted'}"
        )
    result = conn.execute(
        recommendations.update()
        .where(recommendations.c.id == rec_id, recommendations.c.state == "open")
        .values(
            state=to_state, decided_by=actor, decided_at=now_ms, comment=comment, updated_at=now_ms
        )
    )
    if result.rowcount != 1:  # decided by someone else between our read and our write
        raise Conflict(f"recommendation {rec_id} was decided meanwhile; reload it")
    audit.record(
        conn,
        actor=actor,
        action=f"recommendation.{verb}",
        entity_type="recommendation",
        entity_id=str(rec_id),
        before={"state": "open"},
        after={"state": to_state},
        detail={
            "comment": comment,
            "kind": row["kind"],
            "group": row["group"],
            "setting": row["setting"],
        },
    )
    return {**row, "state": to_state, "decided_by": actor, "decided_at": now_ms,
            "comment": comment, "updated_at": now_ms}  # fmt: skip


def accept_recommendation(
    conn: sa.Connection,
    *,
    rec_id: int,
    actor: str,
    comment: str | None,
    now_ms: int,
    default_mode: str | Mode | None = None,
) -> dict:
    """Accept an open recommendation; audited. One with a setting is applied to its group's
    policy in this transaction (state ``applied``), one without is ``accepted``.

    NotFound, or Conflict when it is not open or its setting no longer fits the group's policy.
    """
    row = get_recommendation(conn, rec_id=rec_id)
    setting = None if row is None else row["setting"]
    out = _decide(
        conn,
        rec_id=rec_id,
        to_state="accepted" if setting is None else "applied",
        actor=actor,
        comment=comment,
        now_ms=now_ms,
    )
    if setting is not None:
        _apply(conn, rec_id, setting, actor=actor, now_ms=now_ms, default_mode=default_mode)
    return out


def _apply(
    conn: sa.Connection,
    rec_id: int,
    setting: Mapping[str, Any],
    *,
    actor: str,
    now_ms: int,
    default_mode: str | Mode | None,
) -> None:
    group, field = setting.get("group"), setting.get("field")
    if not isinstance(group, str) or not isinstance(field, str) or "value" not in setting:
        raise Conflict(
            f"recommendation {rec_id} carries a malformed setting {setting!r}; dismiss it"
        )
    try:
        set_group_policy(
            conn,
            group=group,
            changes={field: setting["value"]},
            actor=actor,
            now_ms=now_ms,
            default_mode=default_mode,
            detail={"recommendation_id": rec_id},
        )
    except InvalidInput as exc:  # the policy moved on since the recommendation was raised
        raise Conflict(
            f"recommendation {rec_id} cannot be applied to group {group!r}: {exc}; "
            "dismiss it, or change the policy by hand"
        ) from None


def dismiss_recommendation(
    conn: sa.Connection, *, rec_id: int, actor: str, comment: str | None, now_ms: int
) -> dict:
    """Dismiss an open recommendation; audited. It is not raised again until it would have
    expired. NotFound / Conflict (not open)."""
    return _decide(
        conn, rec_id=rec_id, to_state="dismissed", actor=actor, comment=comment, now_ms=now_ms
    )
