"""The notification sender against a real HTTP receiver on 127.0.0.1: retries, Alertmanager's
format, one request per group, giving up, and the background thread."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from alertdata import NOW, anomaly, predictions

from fleetml.services.alerts import evaluate_alerts
from fleetml.services.notify import Notifier
from fleetml.store.tables import notifications


def outbox(engine):
    with engine.connect() as conn:
        query = sa.select(notifications).order_by(notifications.c.id)
        return [dict(r) for r in conn.execute(query).mappings()]


def configure(settings, **changes):
    return settings.model_copy(update={"alert_suppression_s": 0.0, **changes})


def notifier(engine, cfg, **kw):
    return Notifier(engine, cfg, backoff_s=0.001, backoff_max_s=0.01, timeout_s=2.0, **kw)


def test_webhook_failing_once_is_retried_and_delivered(engine, settings, fleet, receiver):
    hook = receiver([500])
    cfg = configure(settings, alert_webhooks=[hook.url + "/hook"])
    evaluate_alerts(engine, cfg, predictions(anomaly("a1")), now_ms=NOW, groups=fleet)

    sender = notifier(engine, cfg)
    try:
        assert sender.deliver_pending() == 1
    finally:
        sender.stop()

    assert len(hook.requests) == 2  # the 500, then the retry
    path, body = hook.requests[-1]
    assert path == "/hook" and body["source"] == "fleetml" and body["group"] == "eu"
    assert [(a["event"], a["account_id"]) for a in body["alerts"]] == [("firing", "a1")]
    [row] = outbox(engine)
    assert row["state"] == "delivered" and row["attempts"] == 2
    assert row["delivered_at"] is not None


def test_alertmanager_receives_its_own_alert_format(engine, settings, fleet, receiver):
    am = receiver()
    cfg = configure(settings, alertmanager_url=am.url + "/")
    sender = notifier(engine, cfg)
    try:
        evaluate_alerts(
            engine, cfg, predictions(anomaly("a1", score=0.97)), now_ms=NOW, groups=fleet
        )
        sender.deliver_pending()
        evaluate_alerts(
            engine, cfg, predictions(anomaly("a1", flag=False)), now_ms=NOW + 60_000, groups=fleet
        )
        sender.deliver_pending()
    finally:
        sender.stop()

    assert [path for path, _ in am.requests] == ["/api/v2/alerts", "/api/v2/alerts"]
    [firing], [resolved] = (body for _, body in am.requests)
    assert firing["labels"] == {
        "alertname": "fleetml_anomaly",
        "account_id": "a1",
        "group": "eu",
        "kind": "anomaly",
        "severity": "warning",
    }
    assert "0.97" in firing["annotations"]["summary"]
    assert "description" in firing["annotations"]
    assert firing["startsAt"] == "2026-01-01T00:00:00.000Z" and "endsAt" not in firing
    assert resolved["labels"] == firing["labels"]
    assert resolved["endsAt"] == "2026-01-01T00:01:00.000Z"


def test_one_request_per_group(engine, settings, fleet, receiver):
    hook = receiver()
    cfg = configure(settings, alert_webhooks=[hook.url])
    frame = predictions(anomaly("a1"), anomaly("a2"), anomaly("b1"))
    evaluate_alerts(engine, cfg, frame, now_ms=NOW, groups=fleet)
    sender = notifier(engine, cfg)
    try:
        assert sender.deliver_pending() == 3
    finally:
        sender.stop()

    by_group = {
        body["group"]: sorted(a["account_id"] for a in body["alerts"]) for _, body in hook.requests
    }
    assert by_group == {"eu": ["a1", "a2"], "us": ["b1"]}


def test_row_stays_pending_until_retries_are_spent_then_fails(engine, settings, fleet, receiver):
    hook = receiver([503] * 10)
    cfg = configure(settings, alert_webhooks=[hook.url], notify_retries=2)
    evaluate_alerts(engine, cfg, predictions(anomaly("a1")), now_ms=NOW, groups=fleet)
    sender = notifier(engine, cfg, tries_per_round=2)
    try:
        assert sender.deliver_pending() == 0
        [row] = outbox(engine)
        assert (row["state"], row["attempts"]) == ("pending", 2)
        assert "503" in row["last_error"]
        assert sender.deliver_pending() == 0  # one try left of 1 + 2 retries
    finally:
        sender.stop()
    [row] = outbox(engine)
    assert (row["state"], row["attempts"]) == ("failed", 3)
    assert len(hook.requests) == 3


def test_rejected_payload_fails_without_retrying(engine, settings, fleet, receiver):
    hook = receiver([400])
    cfg = configure(settings, alert_webhooks=[hook.url])
    evaluate_alerts(engine, cfg, predictions(anomaly("a1")), now_ms=NOW, groups=fleet)
    sender = notifier(engine, cfg)
    try:
        sender.deliver_pending()
    finally:
        sender.stop()
    [row] = outbox(engine)
    assert (row["state"], row["attempts"]) == ("failed", 1) and "400" in row["last_error"]


@pytest.mark.timeout(30)
def test_background_thread_delivers_when_woken(engine, settings, fleet, receiver):
    hook = receiver()
    cfg = configure(settings, alert_webhooks=[hook.url])
    sender = notifier(engine, cfg, poll_s=60.0).start()
    try:
        evaluate_alerts(engine, cfg, predictions(anomaly("b1")), now_ms=NOW, groups=fleet)
        sender.wake()
        deadline = time.monotonic() + 10
        while not hook.requests and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sender.stop()
    assert len(hook.requests) == 1


# ---- re-posting open alerts to Alertmanager ---------------------------------------------------


def silence(engine, account_id):
    from fleetml.store.alerts import create_silence

    with engine.begin() as conn:
        create_silence(
            conn,
            account_id=account_id,
            group=None,
            kind=None,
            starts_at=NOW - 60_000,
            ends_at=NOW + 3_600_000,
            comment="pytest",
            actor="pytest",
            now_ms=NOW,
        )


def test_resend_reposts_open_unsilenced_alerts_without_outbox_rows(
    engine, settings, fleet, receiver
):
    am, hook = receiver(), receiver()
    cfg = configure(settings, alertmanager_url=am.url, alert_webhooks=[hook.url])
    silence(engine, "b1")
    frame = predictions(anomaly("a1"), anomaly("a2"), anomaly("b1"))
    evaluate_alerts(engine, cfg, frame, now_ms=NOW, groups=fleet)
    evaluate_alerts(  # a2 resolves; a1 stays open and is refreshed a minute later
        engine,
        cfg,
        predictions(anomaly("a1"), anomaly("a2", flag=False)),
        now_ms=NOW + 60_000,
        groups=fleet,
    )
    rows_before = outbox(engine)
    sender = notifier(engine, cfg)
    try:
        assert sender.resend_open() == 1
        assert sender.resend_open() == 1
    finally:
        sender.stop()

    assert hook.requests == []  # only Alertmanager forgets unrepeated alerts
    assert [path for path, _ in am.requests] == ["/api/v2/alerts"] * 2
    for _, body in am.requests:
        [alert] = body
        assert alert["labels"]["account_id"] == "a1" and alert["labels"]["group"] == "eu"
        assert alert["startsAt"] == "2026-01-01T00:00:00.000Z"  # when it opened, unchanged
        assert "endsAt" not in alert
    assert outbox(engine) == rows_before


def test_failed_resend_is_logged_and_made_again_next_time(
    engine, settings, fleet, receiver, caplog
):
    am = receiver([503])
    cfg = configure(settings, alertmanager_url=am.url)
    evaluate_alerts(engine, cfg, predictions(anomaly("a1")), now_ms=NOW, groups=fleet)
    sender = notifier(engine, cfg)
    try:
        with caplog.at_level("WARNING", logger="fleetml.notify"):
            assert sender.resend_open() == 0
        assert "re-post 1 open alert" in caplog.text and "503" in caplog.text
        assert sender.resend_open() == 1
    finally:
        sender.stop()
    assert len(am.requests) == 2  # one try per re-post: the next one is the retry
    [row] = outbox(engine)
    assert (row["state"], row["attempts"]) == ("pending", 0)  # the outbox is not touched


def test_resend_without_alertmanager_posts_nothing(engine, settings, fleet, receiver):
    hook = receiver()
    cfg = configure(settings, alert_webhooks=[hook.url])
    evaluate_alerts(engine, cfg, predictions(anomaly("a1")), now_ms=NOW, groups=fleet)
    sender = notifier(engine, cfg)
    try:
        assert sender.resend_open() == 0
    finally:
        sender.stop()
    assert hook.requests == []


@pytest.mark.timeout(30)
def test_background_thread_reposts_every_resend_interval(engine, settings, fleet, receiver):
    am = receiver()
    cfg = configure(settings, alertmanager_url=am.url, alertmanager_resend_s=0.2)
    evaluate_alerts(engine, cfg, predictions(anomaly("a1")), now_ms=NOW, groups=fleet)
    sender = notifier(engine, cfg, poll_s=60.0).start()
    try:
        deadline = time.monotonic() + 10
        while len(am.requests) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sender.stop()
    # the outbox's firing row, then re-posts although nobody woke the thread for 60 s
    assert len(am.requests) >= 4
    assert all(body[0]["labels"]["account_id"] == "a1" for _, body in am.requests)
    [row] = outbox(engine)
    assert row["state"] == "delivered" and row["attempts"] == 1
