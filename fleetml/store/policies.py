"""Group policies: each group's decision settings (:class:`GroupPolicy`) as ops set them.

A group's row holds only the fields that differ from ``GroupPolicy()``, so a default that
changes in a later release reaches every group that never chose otherwise. ``mode`` is kept
whenever it was set: its default is a deployment setting (``FLEETML_DECISION_MODE``), and a
group pinned to shadow must stay there when the deployment default moves to auto.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from fleetml.decisions.contracts import POLICY_FIELDS, GroupPolicy, Mode
from fleetml.decisions.policy import horizon_ms
from fleetml.errors import InvalidInput
from fleetml.store import audit
from fleetml.store.audit import connect
from fleetml.store.decisions import dialect_insert
from fleetml.store.tables import group_policies

log = logging.getLogger("fleetml.store")

_DEFAULT = GroupPolicy()
_DAY_S = 86_400
#: Numeric settings: (low, high, low inclusive, high inclusive).
_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "risk_on": (0.0, 1.0, False, False),
    "risk_off": (0.0, 1.0, False, False),
    "weight_floor": (0.0, 1.0, True, True),
    "weight_cap": (0.0, 10.0, False, True),
    "smoothing": (0.0, 1.0, True, True),
    # zero ticks would fail over (or back) on every tick, whatever the risk
    "trigger_ticks": (1, 10_000, True, True),
    "clear_ticks": (1, 10_000, True, True),
    "cooldown_s": (0, 30 * _DAY_S, True, True),
    "probation_s": (0, 30 * _DAY_S, True, True),
}
_MAX_HORIZON_MS = 30 * _DAY_S * 1000


def _interval(bounds: tuple[float, float, bool, bool]) -> str:
    low, high, low_in, high_in = bounds
    return f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def check_setting(field: str, value: Any) -> Any:
    """``value`` for the policy field ``field`` as stored (enum values as plain strings).

    Raises InvalidInput naming the field and what it accepts.
    """
    kind = POLICY_FIELDS.get(field)
    if kind is None:
        raise InvalidInput(
            f"{field!r} is not a group policy setting; settings are: {', '.join(POLICY_FIELDS)}"
        )
    if issubclass(kind, StrEnum):
        allowed = [m.value for m in kind]
        if not isinstance(value, str) or value not in allowed:
            raise InvalidInput(f"{field} must be one of {', '.join(allowed)}; got {value!r}")
        return str(kind(value).value)
    if field == "risk_horizon":
        return _check_horizon(value)
    if kind is str:  # a text setting this version has no rule for
        if not isinstance(value, str) or not 0 < len(value) <= 64 or not value.isprintable():
            raise InvalidInput(f"{field} must be text of 1 to 64 characters; got {value!r}")
        return value
    bounds = _RANGES.get(field, (-math.inf, math.inf, True, True))
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(
                f"{field} must be a whole number in {_interval(bounds)}; got {value!r}"
            )
    elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{field} must be a number in {_interval(bounds)}; got {value!r}")
    low, high, low_in, high_in = bounds
    inside = (low <= value if low_in else low < value) and (
        value <= high if high_in else value < high
    )
    if not inside:
        raise InvalidInput(f"{field} must be in {_interval(bounds)}; got {value!r}")
    return int(value) if kind is int else float(value)


def _check_horizon(value: Any) -> str:
    hint = "a duration the risk model serves, like 1h, 6h or 24h"
    if not isinstance(value, str) or not 0 < len(value) <= 16 or not value.isprintable():
        raise InvalidInput(f"risk_horizon must be {hint}; got {value!r}")
    try:
        ms = horizon_ms(value)  # the parser the policy itself uses
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"risk_horizon must be {hint}; got {value!r}") from None
    if not 0 < ms <= _MAX_HORIZON_MS:
        raise InvalidInput(f"risk_horizon must be a positive duration up to 30 days; got {value!r}")
    return value


def _check_policy(policy: GroupPolicy) -> None:
    """Settings that only make sense together."""
    if not policy.risk_off < policy.risk_on:
        raise InvalidInput(
            f"risk_off ({policy.risk_off:g}) must be below risk_on ({policy.risk_on:g}): "
            "failback needs risk to fall clearly below the level that failed the account over"
        )
    if policy.weight_floor > policy.weight_cap:
        raise InvalidInput(
            f"weight_floor ({policy.weight_floor:g}) must not exceed weight_cap "
            f"({policy.weight_cap:g})"
        )


def _policy(settings: Mapping[str, Any], default_mode: str | Mode | None) -> GroupPolicy:
    values: dict[str, Any] = {}
    if default_mode is not None:
        values["mode"] = Mode(default_mode)
    for field, value in settings.items():
        kind = POLICY_FIELDS[field]
        values[field] = kind(value) if issubclass(kind, StrEnum) else value
    return _DEFAULT.replace(**values)


def _stored(settings: Any, group: str) -> dict[str, Any]:
    """The valid fields of a stored row; a field this version no longer knows is skipped."""
    out: dict[str, Any] = {}
    for field, value in dict(settings or {}).items():
        try:
            out[field] = check_setting(field, value)
        except InvalidInput as exc:
            log.warning("group %r: ignoring stored policy setting: %s", group, exc)
    return out


def _diff(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that differ from ``GroupPolicy()``; ``mode`` is kept whenever set."""
    out = {}
    for field, value in settings.items():
        default = getattr(_DEFAULT, field)
        default = default.value if isinstance(default, StrEnum) else default
        if field == "mode" or value != default:
            out[field] = value
    return out


def read_group_policies(bind, *, default_mode: str | Mode | None = None) -> dict[str, GroupPolicy]:
    """Every group with settings of its own, merged over the defaults.

    A group's mode, when it set none, is ``default_mode`` (default: ``GroupPolicy().mode``).
    Groups without a row are not in the answer: they follow the defaults.
    """
    with connect(bind) as conn:
        rows = conn.execute(sa.select(group_policies.c.group, group_policies.c.settings)).all()
    return {g: _policy(_stored(s, g), default_mode) for g, s in rows}


def read_group_policy(bind, *, group: str, default_mode: str | Mode | None = None) -> dict:
    """The effective policy of one group: ``policy`` (a GroupPolicy), ``customized`` (the fields
    set for this group), ``updated_at`` and ``updated_by`` (None when never set)."""
    query = sa.select(group_policies).where(group_policies.c.group == group)
    with connect(bind) as conn:
        row = conn.execute(query).mappings().first()
    stored = _stored(row["settings"], group) if row is not None else {}
    return {
        "policy": _policy(stored, default_mode),
        "customized": sorted(stored),
        "updated_at": None if row is None else row["updated_at"],
        "updated_by": None if row is None else row["updated_by"],
    }


def set_group_policy(
    conn: sa.Connection,
    *,
    group: str,
    changes: Mapping[str, Any],
    actor: str,
    now_ms: int,
    default_mode: str | Mode | None = None,
    detail: Mapping[str, Any] | None = None,
) -> GroupPolicy:
    """Change some of a group's settings; audited with the values before and after.

    A value of None puts the field back to its default. Every field is checked (name, type,
    range) and so is the resulting policy (risk_off below risk_on, weight_floor up to
    weight_cap); InvalidInput names the field and why. ``detail`` goes into the audit entry
    (an accepted recommendation names itself there). Returns the effective policy.
    """
    if not isinstance(group, str) or not 0 < len(group) <= 128:
        raise InvalidInput(f"group must be a name of 1 to 128 characters; got {group!r}")
    checked = {f: None if v is None else check_setting(f, v) for f, v in changes.items()}
    if not checked:
        return read_group_policy(conn, group=group, default_mode=default_mode)["policy"]
    # The row exists before it is read, locked (PostgreSQL), so two concurrent changes of
    # different fields both land instead of one overwriting the other.
    conn.execute(
        dialect_insert(conn)(group_policies)
        .values(group=group, settings={}, updated_at=now_ms, updated_by=actor)
        .on_conflict_do_nothing(index_elements=["group"])
    )
    query = sa.select(group_policies.c.settings).where(group_policies.c.group == group)
    stored = _stored(conn.execute(query.with_for_update()).scalar_one(), group)
    settings = {**stored, **{f: v for f, v in checked.items() if v is not None}}
    for field in (f for f, v in checked.items() if v is None):
        settings.pop(field, None)
    before, after = _policy(stored, default_mode), _policy(settings, default_mode)
    _check_policy(after)
    conn.execute(
        group_policies.update()
        .where(group_policies.c.group == group)
        .values(settings=_diff(settings), updated_at=now_ms, updated_by=actor)
    )
    audit.record(
        conn,
        actor=actor,
        action="group_policy.update",
        entity_type="group_policy",
        entity_id=group,
        before={f: _plain(getattr(before, f)) for f in checked},
        after={f: _plain(getattr(after, f)) for f in checked},
        detail=dict(detail) if detail else None,
    )
    return after


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, StrEnum) else value
