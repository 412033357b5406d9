"""Action webhooks against real HTTP receivers on 127.0.0.1: each new pending action reaches
every URL once, with retries; actions pending before the start are not resent; approvals are
sent when they happen; the background thread delivers after a wake."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fleetml.services.action_hooks import ActionPublisher, Senders, with_action_hooks

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
TTL = 900_000


class Receiver:
    """A webhook receiver that answers ``statuses`` in turn (then 200) and records requests."""

    def __init__(self, statuses: list[int], port: int = 0):
        self.statuses = list(statuses)
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", 0))
                receiver.requests.append(
                    {
                        "path": self.path,
                        "action_id": self.headers.get("X-Fleetml-Action-Id"),
                        "body": json.loads(self.rfile.read(length) or b"null"),
                    }
                )
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def ids(self) -> list[int]:
        return [r["body"]["id"] for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator:
    started: list[Receiver] = []

    def make(statuses: list[int] | None = None) -> Receiver:
        r = Receiver(statuses or [])
        started.append(r)
        return r

    yield make
    for r in started:
        r.close()


def dead_url() -> str:
    """A URL nobody listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def create(engine, *accounts: str, state: str = "pending", kind: str = "restart_session", at=NOW):
    from fleetml.store.actions import create_actions

    rows = [
        {
            "decision_id": None,
            "account_id": a,
            "group": "eu",
            "kind": kind,
            "params": {"reason": "test"},
            "state": state,
            "dedup_key": f"{at}:{kind}:{a}:{state}",
        }
        for a in accounts
    ]
    with engine.begin() as conn:
        return create_actions(conn, rows, now_ms=at, ttl_ms=TTL)


def publisher(engine, settings, urls, **kw) -> ActionPublisher:
    cfg = settings.model_copy(update={"action_webhooks": list(urls), **kw.pop("cfg", {})})
    return ActionPublisher(engine, cfg, backoff_s=0.001, backoff_max_s=0.01, timeout_s=2.0, **kw)


def test_each_new_action_reaches_every_url_once(engine, settings, receiver):
    one, two = receiver(), receiver()
    sender = publisher(engine, settings, [one.url, two.url])
    try:
        sender.mark_baseline()
        [a1, a2] = create(engine, "a1", "a2", kind="failover")
        assert sender.publish_pending() == 4
        assert sender.publish_pending() == 0  # nothing new: nothing resent
        [a3] = create(engine, "a3", at=NOW + 60_000)
        assert sender.publish_pending() == 2
    finally:
        sender.stop()
    assert one.ids() == two.ids() == [a1, a2, a3]
    first = one.requests[0]
    assert first["path"] == "/hook" and first["action_id"] == str(a1)
    assert first["body"] == {
        "source": "fleetml",
        "id": a1,
        "kind": "failover",
        "account_id": "a1",
        "group": "eu",
        "params": {"reason": "test"},
        "created_at": "2026-01-01T00:00:00.000Z",
        "expires_at": "2026-01-01T00:15:00.000Z",
        "decision_id": None,
    }


def test_actions_pending_before_the_start_are_not_resent(engine, settings, receiver):
    hook = receiver()
    create(engine, "old-1", "old-2")  # the previous process already offered these
    sender = publisher(engine, settings, [hook.url])
    try:
        assert sender.mark_baseline() == 2
        [new] = create(engine, "new", at=NOW + 60_000)
        assert sender.publish_pending() == 1
    finally:
        sender.stop()
    assert hook.ids() == [new]


def test_an_action_waiting_for_approval_is_sent_once_approved(engine, settings, receiver):
    from fleetml.store.actions import approve_action

    hook = receiver()
    [waiting] = create(engine, "a1", state="awaiting_approval", kind="failover")
    sender = publisher(engine, settings, [hook.url])
    try:
        sender.mark_baseline()
        [auto] = create(engine, "a2", at=NOW + 60_000)
        assert sender.publish_pending() == 1
        with engine.begin() as conn:
            approve_action(conn, action_id=waiting, actor="oncall", now_ms=NOW + 120_000)
        assert sender.publish_pending() == 1  # an older id, pending only now: still sent
    finally:
        sender.stop()
    assert hook.ids() == [auto, waiting]


def test_an_action_acknowledged_before_delivery_is_not_sent(engine, settings, receiver):
    from fleetml.store.actions import ack_action

    hook = receiver()
    sender = publisher(engine, settings, [hook.url])
    try:
        sender.mark_baseline()
        [done, todo] = create(engine, "a1", "a2")
        with engine.begin() as conn:
            ack_action(
                conn, action_id=done, outcome="ok", detail=None, actor="runtime", now_ms=NOW + 1
            )
        assert sender.publish_pending() == 1
    finally:
        sender.stop()
    assert hook.ids() == [todo]


def test_a_failing_receiver_is_retried_and_others_are_not_affected(engine, settings, receiver):
    flaky, steady = receiver([500, 503]), receiver()
    sender = publisher(engine, settings, [flaky.url, steady.url])
    try:
        sender.mark_baseline()
        [action] = create(engine, "a1")
        assert sender.publish_pending() == 2
    finally:
        sender.stop()
    assert flaky.ids() == [action] * 3  # 500, 503, then 200
    assert steady.ids() == [action]


def test_a_rejected_payload_is_not_retried(engine, settings, receiver):
    hook = receiver([400])
    sender = publisher(engine, settings, [hook.url])
    try:
        sender.mark_baseline()
        [bad, good] = create(engine, "a1", "a2")
        assert sender.publish_pending() == 1
        assert sender.publish_pending() == 0  # given up on the rejected one
    finally:
        sender.stop()
    assert hook.ids() == [bad, good]


def test_a_dead_receiver_gets_the_action_once_it_is_back(engine, settings):
    url = dead_url()
    sender = publisher(engine, settings, [url], tries_per_round=2)
    try:
        sender.mark_baseline()
        [action] = create(engine, "a1")
        assert sender.publish_pending() == 0
        assert sender.publish_pending() == 0  # still down: tried again, not given up
        hook = Receiver([], port=int(url.split(":")[2].split("/")[0]))  # back up
        try:
            assert sender.publish_pending() == 1
        finally:
            hook.close()
    finally:
        sender.stop()
    assert hook.ids() == [action]


def test_tries_are_bounded_by_notify_retries(engine, settings, receiver):
    hook = receiver([503] * 20)
    sender = publisher(engine, settings, [hook.url], tries_per_round=2, cfg={"notify_retries": 2})
    try:
        sender.mark_baseline()
        create(engine, "a1")
        for _ in range(4):
            assert sender.publish_pending() == 0
    finally:
        sender.stop()
    assert len(hook.requests) == 3  # 1 try + 2 retries, then given up


def test_the_thread_delivers_after_a_wake(engine, settings, receiver):
    hook = receiver()
    sender = publisher(engine, settings, [hook.url], poll_s=60.0).start()
    try:
        [action] = create(engine, "a1")
        sender.wake()  # what the tick does after creating actions
        deadline = time.monotonic() + 10
        while not hook.requests and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sender.stop()
    assert hook.ids() == [action]


def test_no_urls_publish_nothing(engine, settings):
    sender = publisher(engine, settings, [])
    try:
        create(engine, "a1")
        assert sender.publish_pending() == 0
    finally:
        sender.stop()


class _Fake:
    def __init__(self):
        self.calls: list[str] = []

    def start(self):
        self.calls.append("start")

    def wake(self):
        self.calls.append("wake")

    def stop(self):
        self.calls.append("stop")


def test_with_action_hooks_adds_a_publisher_only_when_configured(engine, settings):
    fake = _Fake()
    assert with_action_hooks(None, settings, engine) is None
    factory = lambda: fake  # noqa: E731
    assert with_action_hooks(factory, settings, engine) is factory

    cfg = settings.model_copy(update={"action_webhooks": [dead_url()]})
    assert isinstance(with_action_hooks(None, cfg, engine)(), ActionPublisher)
    both = with_action_hooks(factory, cfg, engine)()
    assert isinstance(both, Senders)
    both.start()
    both.wake()
    both.stop()
    assert fake.calls == ["start", "wake", "stop"]


def test_action_webhooks_are_read_from_the_environment_as_a_json_list(monkeypatch):
    from fleetml.config import Settings

    monkeypatch.setenv("FLEETML_ACTION_WEBHOOKS", '["http://runtime:8080/actions"]')
    assert Settings().action_webhooks == ["http://runtime:8080/actions"]
    assert Settings(_env_file=None).route_refresh_s == 2.0
