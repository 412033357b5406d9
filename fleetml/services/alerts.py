"""Predictive alerts for the live loop: the one call the scoring tick makes, and what operators do.

:func:`evaluate_alerts` reads the open alerts, silences, maintenance windows and recent
resolutions, lets :mod:`fleetml.alerts.rules` decide, and writes the alerts, their history and
the notification outbox in one transaction. A rerun with the same predictions and ``now_ms``
(after a crash mid-tick) duplicates nothing: a key with an open alert is never opened again
(the partial unique index ``uq_alerts_open`` backs this), and an (alert, event, target) is queued
once (``uq_notifications_alert_event``). Sending is :class:`fleetml.services.notify.Notifier`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from fleetml.alerts import rules
from fleetml.config import Settings
from fleetml.services import notify
from fleetml.store import alerts as store
from fleetml.store.audit import now_ms as clock_ms


@dataclass
class AlertCounts:
    """What one :func:`evaluate_alerts` call changed; ``notified`` counts outbox rows written."""

    opened: int
    resolved: int
    notified: int


def evaluate_alerts(
    engine: Engine,
    settings: Settings,
    predictions: pd.DataFrame,
    *,
    now_ms: int,
    groups: Mapping[str, str],
    degraded: Mapping[str, str] | None = None,
) -> AlertCounts:
    """Open, refresh and resolve alerts from one tick's predictions.

    ``predictions``: one row per (account, family, horizon) scored in the tick (columns in
    :data:`fleetml.alerts.rules.PREDICTION_COLUMNS`). ``groups`` maps account ids to groups.
    ``degraded`` maps a model family answered by a fallback to the reason (``None``: none is).
    """
    rules.check_predictions(predictions)
    with engine.begin() as conn:
        open_alerts = store.read_open_alerts(conn)
        parts = [
            rules.tick_conditions(
                predictions, open_alerts=open_alerts, min_duration=settings.alert_min_duration
            ),
            rules.degraded_conditions(degraded, open_alerts=open_alerts),
        ]
        parts = [p for p in parts if not p.empty]
        if not parts:
            return AlertCounts(opened=0, resolved=0, notified=0)
        conditions = pd.concat(parts, ignore_index=True)
        plan = _plan(conn, settings, conditions, open_alerts, groups=groups, now_ms=now_ms)
        if plan.empty:
            return AlertCounts(opened=0, resolved=0, notified=0)
        return _apply(conn, settings, plan, open_alerts, now_ms=now_ms)


def _plan(
    conn: sa.Connection,
    settings: Settings,
    conditions: pd.DataFrame,
    open_alerts: pd.DataFrame,
    *,
    groups: Mapping[str, str],
    now_ms: int,
) -> rules.AlertPlan:
    """Read what the rules need about the keys that might open, then ask the rules."""
    may_open = rules.open_candidates(conditions, open_alerts=open_alerts)
    suppression_ms = int(round(settings.alert_suppression_s * 1000))
    windows = last_resolved = pd.DataFrame(columns=["account_id"])
    if not may_open.empty:
        windows = store.read_maintenance_windows(
            conn, account_ids=may_open[may_open != rules.FLEET_ACCOUNT], now_ms=now_ms
        )
        if suppression_ms > 0:
            last_resolved = store.read_last_resolved(
                conn, account_ids=may_open, since_ms=now_ms - suppression_ms
            )
    return rules.plan_alerts(
        conditions,
        open_alerts=open_alerts,
        groups=groups,
        silences=store.read_silences(conn, now_ms=now_ms),
        in_maintenance=rules.under_maintenance(windows),
        last_resolved=last_resolved,
        suppression_ms=suppression_ms,
        now_ms=now_ms,
    )


def _apply(
    conn: sa.Connection,
    settings: Settings,
    plan: rules.AlertPlan,
    open_alerts: pd.DataFrame,
    *,
    now_ms: int,
) -> AlertCounts:
    """Write the plan: alerts, history and outbox rows, on the caller's transaction."""
    receivers = notify.targets(settings)
    outbox: list[dict] = []

    opened = store.insert_alerts(
        conn, rows=[{**r, "opened_at": now_ms} for r in plan.open.to_dict("records")]
    )
    history = [_change(a["id"], None, "firing", now_ms) for a in opened]
    outbox += notify.outbox_rows(
        [a for a in opened if not a["silenced"]], event="firing", receivers=receivers, now_ms=now_ms
    )

    store.touch_alerts(conn, rows=plan.update.to_dict("records"), now_ms=now_ms)
    unsilenced = plan.update.loc[plan.update["notify_firing"].astype(bool), "id"]
    if not unsilenced.empty:
        outbox += notify.outbox_rows(
            store.read_alerts(conn, ids=unsilenced),
            event="firing",
            receivers=receivers,
            now_ms=now_ms,
        )

    closed = store.close_alerts(conn, ids=plan.resolve["id"], now_ms=now_ms, actor=rules.RESOLVER)
    was = dict(zip(open_alerts["id"], open_alerts["state"], strict=True))
    history += [_change(a["id"], was.get(a["id"]), "resolved", now_ms) for a in closed]
    outbox += _resolved_outbox(conn, closed, now_ms=now_ms)

    store.write_history(conn, rows=history)
    notified = store.write_notifications(conn, rows=outbox)
    return AlertCounts(opened=len(opened), resolved=len(closed), notified=notified)


def _change(alert_id: int, from_state: str | None, to_state: str, now_ms: int) -> dict:
    return {
        "alert_id": alert_id,
        "ts": now_ms,
        "from_state": from_state,
        "to_state": to_state,
        "actor": rules.RESOLVER,
        "note": None,
    }


def _resolved_outbox(conn: sa.Connection, closed: list[dict], *, now_ms: int) -> list[dict]:
    """Tell every receiver that heard an alert fire that it resolved (and nobody else)."""
    if not closed:
        return []
    heard: dict[int, list[tuple[str, str]]] = {}
    for row in store.notified_targets(conn, alert_ids=[a["id"] for a in closed]):
        heard.setdefault(row["alert_id"], []).append((row["target"], row["format"]))
    rows: list[dict] = []
    for alert in closed:
        receivers = heard.get(alert["id"])
        if receivers:
            rows += notify.outbox_rows(
                [alert], event="resolved", receivers=receivers, now_ms=now_ms
            )
    return rows


# ---- what operators do ---------------------------------------------------------------------


def acknowledge_alert(
    engine: Engine, *, alert_id: int, actor: str, note: str | None = None
) -> dict:
    """Acknowledge an open alert: it stays open, keeps updating and resolves by itself.

    Raises :class:`fleetml.errors.NotFound` or :class:`fleetml.errors.Conflict` (resolved).
    """
    with engine.begin() as conn:
        return store.acknowledge_alert(
            conn, alert_id=alert_id, actor=actor, note=note, now_ms=clock_ms()
        )


def resolve_alert(engine: Engine, *, alert_id: int, actor: str, note: str | None = None) -> dict:
    """Resolve an open alert by hand and tell the receivers that heard it fire.

    While its condition holds, no new alert of the key opens within ``alert_suppression_s``.
    Raises :class:`fleetml.errors.NotFound` or :class:`fleetml.errors.Conflict` (resolved).
    """
    now_ms = clock_ms()
    with engine.begin() as conn:
        alert = store.resolve_alert(conn, alert_id=alert_id, actor=actor, note=note, now_ms=now_ms)
        store.write_notifications(conn, rows=_resolved_outbox(conn, [alert], now_ms=now_ms))
    return alert
