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


class Client:
    """A TestClient with one key per role: ``client.get(url, as_="ops")``."""

    def __init__(self, client, keys: dict[str, str]):
        self.client = client
        self.keys = keys

    def request(self, method: str, url: str, *, as_: str = "ops", headers=None, **kw):
        headers = {"Authorization": f"Bearer {self.keys[as_]}", **(headers or {})}
        return self.client.request(method, url, headers=headers, **kw)

    def get(self, url, **kw):
        return self.request("GET", url, **kw)

    def post(self, url, **kw):
        return self.request("POST", url, **kw)

    def delete(self, url, **kw):
        return self.request("DELETE", url, **kw)


@pytest.fixture
def client(settings, engine, fleet) -> Iterator[Client]:
    """The API over the parametrised store, with the ``fleet`` registered."""
    from fastapi.testclient import TestClient

    from fleetml.api import create_app
    from fleetml.store.keys import create_key

    with engine.begin() as conn:
        keys = {
            role: create_key(conn, role=role, name=f"test-{role}", actor="pytest")[0]
            for role in ("runtime", "ops", "admin")
        }
    with TestClient(create_app(settings, engine=engine)) as test_client:
        yield Client(test_client, keys)
