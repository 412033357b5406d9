"""Alert fixtures: registered accounts and a recording webhook receiver on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@pytest.fixture
def fleet(engine):
    """Three registered masters: a1 and a2 in group eu, b1 in group us."""
    from fleetml.store.accounts import create_account

    with engine.begin() as conn:
        for aid, group in (("a1", "eu"), ("a2", "eu"), ("b1", "us")):
            create_account(conn, account_id=aid, group=group, actor="pytest")
    return {"a1": "eu", "a2": "eu", "b1": "us"}


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers ``statuses`` in turn (then 200)."""

    def __init__(self, statuses: list[int]):
        self.statuses = list(statuses)
        self.requests: list[tuple[str, object]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"null")
                receiver.requests.append((self.path, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator:
    """Factory: ``receiver([500])`` starts a receiver failing once; all are closed at the end."""
    started: list[Receiver] = []

    def make(statuses: list[int] | None = None) -> Receiver:
        r = Receiver(statuses or [])
        started.append(r)
        return r

    yield make
    for r in started:
        r.close()
