"""Alert notifications: what the outbox holds for each receiver, and the thread that sends it.

The tick never sends anything: it writes outbox rows (``notifications``) in the transaction that
changes the alert, and may :meth:`Notifier.wake` the sender. The sender posts the pending rows
grouped per (target, group), one request per group, retrying with exponential backoff
(tenacity); a row that still fails stays pending for the next round until its attempts exceed
``notify_retries``, then it is marked failed.

Two formats: ``json`` (``alert_webhooks``): ``{"source": "fleetml", "group": ..., "alerts": [...]}``
with every alert's fields; ``alertmanager`` (``alertmanager_url``): Alertmanager's own list of
alerts, POSTed to ``<url>/api/v2/alerts``.

Alertmanager resolves an alert that nobody re-posts within its ``resolve_timeout`` (5 min by
default), so the sender also re-posts every open, unsilenced alert there every
``alertmanager_resend_s`` (:meth:`Notifier.resend_open`): same labels and ``startsAt``, no
``endsAt``. Re-posts are idempotent on Alertmanager's side and write no outbox rows; one that
fails is logged and simply happens again next time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import pandas as pd
from sqlalchemy.engine import Engine

from fleetml.config import Settings
from fleetml.services._sender import BackgroundSender
from fleetml.store import alerts as store
from fleetml.store.audit import now_ms as clock_ms

log = logging.getLogger("fleetml.notify")

JSON = "json"
ALERTMANAGER = "alertmanager"
#: Answers worth retrying: the receiver is overloaded or down, not rejecting the payload.


# ---- payloads ------------------------------------------------------------------------------


def targets(settings: Settings) -> list[tuple[str, str]]:
    """Every configured receiver as (target URL, format)."""
    out = [(url, JSON) for url in settings.alert_webhooks if url]
    if settings.alertmanager_url:
        out.append((alertmanager_target(settings.alertmanager_url), ALERTMANAGER))
    return list(dict.fromkeys(out))


def alertmanager_target(url: str) -> str:
    """Where alerts are POSTed for an Alertmanager base URL."""
    return url.rstrip("/") + "/api/v2/alerts"


def rfc3339(ms: int | None) -> str | None:
    """Epoch milliseconds as an RFC 3339 UTC timestamp with milliseconds (``...T12:00:00.000Z``)."""
    if ms is None:
        return None
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%f")[:23] + "Z"


def alertname(kind: str) -> str:
    """Alertmanager's alertname for a kind: ``fleetml_failure_risk``, ``fleetml_model_degraded``."""
    return "fleetml_" + kind.split(":", 1)[0]


def json_alert(alert: Mapping[str, Any], *, event: str) -> dict:
    """One alert in the generic JSON format."""
    return {
        "event": event,
        "id": alert["id"],
        "account_id": alert["account_id"],
        "group": alert["group"],
        "kind": alert["kind"],
        "severity": alert["severity"],
        "state": alert["state"],
        "summary": alert["summary"],
        "detail": alert["detail"],
        "opened_at": rfc3339(alert["opened_at"]),
        "resolved_at": rfc3339(alert["resolved_at"]),
        "resolved_by": alert["resolved_by"],
    }


def alertmanager_alert(alert: Mapping[str, Any], *, event: str) -> dict:
    """One alert in Alertmanager's v2 format (``endsAt`` set only when resolved)."""
    out = {
        "labels": {
            "alertname": alertname(alert["kind"]),
            "account_id": alert["account_id"],
            "group": alert["group"] or "",
            "kind": alert["kind"],
            "severity": alert["severity"],
        },
        "annotations": {
            "summary": alert["summary"],
            "description": _description(alert["detail"]),
        },
        "startsAt": rfc3339(alert["opened_at"]),
    }
    if event == "resolved":
        out["endsAt"] = rfc3339(alert["resolved_at"])
    return out


def outbox_rows(
    alerts: Iterable[Mapping[str, Any]],
    *,
    event: str,
    receivers: Iterable[tuple[str, str]],
    now_ms: int,
) -> list[dict]:
    """Outbox rows telling every receiver (target, format) about ``event`` of each alert."""
    receivers = list(receivers)
    rows = []
    for alert in alerts:
        for target, fmt in receivers:
            build = alertmanager_alert if fmt == ALERTMANAGER else json_alert
            rows.append(
                {
                    "alert_id": alert["id"],
                    "event": event,
                    "target": target,
                    "format": fmt,
                    "payload": build(alert, event=event),
                    "created_at": now_ms,
                }
            )
    return rows


def request_body(fmt: str, group: str | None, payloads: list[Any]) -> Any:
    """The body of one request carrying a group's alerts."""
    if fmt == ALERTMANAGER:
        return list(payloads)
    return {"source": "fleetml", "group": group, "alerts": list(payloads)}


def _description(detail: Any) -> str:
    if not isinstance(detail, Mapping):
        return "" if detail is None else str(detail)
    parts = []
    for key, value in detail.items():
        if isinstance(value, Mapping):
            value = ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        parts.append(f"{key}: {_fmt(value)}")
    return "; ".join(parts)


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# ---- the sender ----------------------------------------------------------------------------


class Notifier(BackgroundSender):
    """Delivers the notification outbox: a daemon thread, or :meth:`deliver_pending` by hand.

    ``backoff_s`` and ``backoff_max_s`` shape the exponential wait between tries of one request
    (tests make them tiny); ``tries_per_round`` bounds the tries of one round, so one dead
    receiver delays the others by at most a few waits; ``poll_s`` is the pause between rounds
    when nobody calls :meth:`wake`. The thread also calls :meth:`resend_open` on its first
    round and then every ``settings.alertmanager_resend_s``.
    """

    thread_name = "fleetml-notifier"
    user_agent = "fleetml-notifier"
    logger = log
    round_failed = "notification round failed; next round in %.0f s"

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        timeout_s: float = 5.0,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        tries_per_round: int = 3,
        poll_s: float = 15.0,
        batch_size: int = 500,
        client: httpx.Client | None = None,
    ):
        self.batch_size = batch_size
        super().__init__(
            engine,
            settings,
            poll_s=poll_s,
            timeout_s=timeout_s,
            backoff_s=backoff_s,
            backoff_max_s=backoff_max_s,
            tries_per_round=tries_per_round,
            client=client,
        )
        self._resend_due = 0.0  # time.monotonic() of the next re-post to Alertmanager

    # -- the thread's loop

    def _round(self) -> int:
        return self.deliver_pending()

    def _after_round(self) -> float:
        """Re-post open alerts to Alertmanager when due; wait until the next round or re-post."""
        if time.monotonic() >= self._resend_due:
            self._resend_due = time.monotonic() + self.settings.alertmanager_resend_s
            try:
                self.resend_open()
            except Exception:
                log.exception(
                    "re-posting open alerts to Alertmanager failed; again in %.0f s",
                    self.settings.alertmanager_resend_s,
                )
        return min(self.poll_s, self._resend_due - time.monotonic())

    # -- delivery

    def deliver_pending(self, now_ms: int | None = None) -> int:
        """Send pending notifications, one request per (target, group); returns rows delivered."""
        rows = store.pending_notifications(self.engine, limit=self.batch_size)
        batches: dict[tuple[str, str, str | None], list[dict]] = {}
        for row in rows:
            batches.setdefault((row["target"], row["format"], row["group"]), []).append(row)
        delivered = 0
        for (target, fmt, group), batch in batches.items():
            if self._stopping.is_set():
                break
            left = self.settings.notify_retries + 1 - max(r["attempts"] for r in batch)
            body = request_body(fmt, group, [r["payload"] for r in batch])
            tries, error, give_up = self._send(
                target, body, max(1, min(self.tries_per_round, left))
            )
            with self.engine.begin() as conn:
                store.record_delivery(
                    conn,
                    ids=[r["id"] for r in batch],
                    tries=tries,
                    delivered=error is None,
                    error=error,
                    give_up=give_up,
                    retries=self.settings.notify_retries,
                    now_ms=clock_ms() if now_ms is None else now_ms,
                )
            if error is None:
                delivered += len(batch)
            else:
                log.warning(
                    "could not notify %s of %d alert event(s) after %d tries: %s",
                    target,
                    len(batch),
                    tries,
                    error,
                )
        return delivered

    def resend_open(self) -> int:
        """Re-post every open, unsilenced alert to Alertmanager (when one is configured), one
        request per group, one try each; returns the alerts Alertmanager accepted.

        The payload is the alert as it stands (``startsAt`` its opening, no ``endsAt``), so
        Alertmanager keeps it firing past its ``resolve_timeout``. Nothing is written to the
        outbox; a failed request is logged and the next re-post repeats it.
        """
        if not self.settings.alertmanager_url:
            return 0
        target = alertmanager_target(self.settings.alertmanager_url)
        by_group: dict[str | None, list[dict]] = {}
        for alert in self._open_alerts():
            if not alert["silenced"]:
                by_group.setdefault(alert["group"], []).append(
                    alertmanager_alert(alert, event="firing")
                )
        accepted = 0
        for group, payloads in by_group.items():
            for start in range(0, len(payloads), self.batch_size):
                if self._stopping.is_set():
                    return accepted
                batch = payloads[start : start + self.batch_size]
                _, error, _ = self._send(target, request_body(ALERTMANAGER, group, batch), 1)
                if error is None:
                    accepted += len(batch)
                else:
                    log.warning(
                        "could not re-post %d open alert(s) of group %s to %s (next try in "
                        "%.0f s): %s",
                        len(batch),
                        group,
                        target,
                        self.settings.alertmanager_resend_s,
                        error,
                    )
        return accepted

    def _open_alerts(self) -> list[dict]:
        """Every open alert, read a page at a time."""
        out: list[dict] = []
        before: int | None = None
        while True:
            page = store.list_alerts(
                self.engine, state="open", limit=self.batch_size, before_id=before
            )
            out += page
            if len(page) < self.batch_size:
                return out
            before = page[-1]["id"]
