"""The Python client: paging, error mapping, request bodies, retries, and the real app."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from fleetml.client import Client, FleetmlError

URL = "http://fleet.test"


def _client(handler: Callable[[httpx.Request], httpx.Response], **kw) -> Client:
    return Client(URL, "k-123", transport=httpx.MockTransport(handler), **kw)


def _recording(answers: list[httpx.Response]):
    """A handler answering ``answers`` in order, and the requests it saw."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[len(seen) - 1]

    return handler, seen


def test_predictions_follows_every_page_with_the_filters():
    pages = [
        {"predictions": [{"account_id": "a"}, {"account_id": "b"}], "next_cursor": "c1"},
        {"predictions": [{"account_id": "c"}], "next_cursor": "c2"},
        {"predictions": [{"account_id": "d"}], "next_cursor": None, "models": {}},
    ]
    handler, seen = _recording([httpx.Response(200, json=p) for p in pages])
    with _client(handler) as fleet:
        got = fleet.predictions(group="g1", account_ids=["a", "b"], at_risk=True)
    assert [p["account_id"] for p in got] == ["a", "b", "c", "d"]
    first = seen[0].url.params
    assert seen[0].url.path == "/v1/predictions"
    assert first["group"] == "g1" and first["at_risk"] == "true"
    assert first.get_list("account_id") == ["a", "b"]
    assert "cursor" not in first and "is_anomaly" not in first and "limit" not in first
    assert [r.url.params.get("cursor") for r in seen[1:]] == ["c1", "c2"]
    assert all(r.url.params["group"] == "g1" for r in seen)
    assert seen[0].headers["authorization"] == "Bearer k-123"


def test_a_total_limit_stops_paging_and_asks_only_for_what_is_left():
    pages = [
        {"alerts": [{"id": 1}, {"id": 2}], "next_cursor": "x"},
        {"alerts": [{"id": 3}, {"id": 4}], "next_cursor": "y"},
    ]
    handler, seen = _recording([httpx.Response(200, json=p) for p in pages])
    with _client(handler, page_size=2) as fleet:
        got = fleet.alerts(state="firing", limit=3)
    assert [a["id"] for a in got] == [1, 2, 3]
    assert len(seen) == 2
    assert [r.url.params["limit"] for r in seen] == ["2", "1"]
    assert seen[1].url.params["state"] == "firing"


def test_an_error_answer_raises_with_status_detail_and_every_bad_item():
    body = {
        "detail": "2 of 3 samples are invalid; nothing was stored",
        "error_count": 2,
        "errors": [
            {"index": 0, "field": "ts", "reason": "not a timestamp"},
            {"index": 2, "field": "values.cpu_pct", "reason": "NaN is not a finite number"},
        ],
    }
    with _client(lambda r: httpx.Response(422, json=body)) as fleet:
        with pytest.raises(FleetmlError) as caught:
            fleet.ingest([{"account_id": "a", "ts": 0, "values": {}}])
    err = caught.value
    assert err.status == 422
    assert err.detail == body["detail"]
    assert [e["index"] for e in err.errors] == [0, 2]
    assert "422" in str(err) and "nothing was stored" in str(err)


def test_a_non_json_error_still_says_what_came_back():
    with _client(lambda r: httpx.Response(502, text="<h1>Bad gateway</h1>")) as fleet:
        with pytest.raises(FleetmlError) as caught:
            fleet.models()
    assert caught.value.status == 502
    assert "Bad gateway" in caught.value.detail
    assert caught.value.errors == []


def test_write_bodies_and_paths():
    answers = [httpx.Response(200, json={"ok": True}) for _ in range(6)] + [httpx.Response(204)]
    handler, seen = _recording(answers)
    when = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    with _client(handler) as fleet:
        fleet.ingest([{"account_id": "wa-1", "ts": when, "values": {"cpu_pct": 1.5}}], True)
        fleet.events([{"account_id": "wa-1", "ts": 0, "kind": "crash"}])
        fleet.score("wa/1 x")
        fleet.ack_alert(7, note="on it")
        fleet.resolve_alert(7)
        fleet.create_silence(group="g1", comment="deploy")
        assert fleet.delete_silence(3) is None
    bodies = [json.loads(r.content) if r.content else None for r in seen]
    assert (seen[0].method, seen[0].url.path, seen[0].url.params["register"]) == (
        "POST",
        "/v1/metrics",
        "true",
    )
    assert bodies[0] == {
        "samples": [
            {"account_id": "wa-1", "ts": "2026-01-01T12:00:00+00:00", "values": {"cpu_pct": 1.5}}
        ]
    }
    assert seen[0].headers["content-type"] == "application/json"
    assert seen[1].url.path == "/v1/events" and "register" in seen[1].url.params
    assert bodies[1] == {"events": [{"account_id": "wa-1", "ts": 0, "kind": "crash"}]}
    assert seen[2].url.raw_path == b"/v1/predictions/wa%2F1%20x/score"
    assert bodies[2] == {"samples": []}
    assert (seen[3].url.path, bodies[3]) == ("/v1/alerts/7/ack", {"note": "on it"})
    assert (seen[4].url.path, bodies[4]) == ("/v1/alerts/7/resolve", {})
    assert bodies[5] == {"group": "g1", "comment": "deploy"}
    assert (seen[6].method, seen[6].url.path) == ("DELETE", "/v1/silences/3")


def test_reads_send_their_parameters():
    handler, seen = _recording([httpx.Response(200, json={"x": 1}) for _ in range(3)])
    with _client(handler) as fleet:
        fleet.forecasts("messages_sent", group="g1", horizon=24)
        fleet.prediction("wa-9")
        fleet.models()
    assert seen[0].url.path == "/v1/forecasts"
    assert dict(seen[0].url.params) == {"metric": "messages_sent", "group": "g1", "horizon": "24"}
    assert [r.url.path for r in seen[1:]] == ["/v1/predictions/wa-9", "/v1/models"]


def _flaky(failures: int) -> tuple[Callable, list]:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) <= failures:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"runs": [], "next_cursor": None})

    return handler, calls


def test_gets_are_retried_after_connection_errors(monkeypatch):
    monkeypatch.setattr("fleetml.client.time.sleep", lambda s: None)
    handler, calls = _flaky(2)
    with _client(handler) as fleet:
        assert fleet.jobs() == []
    assert calls == ["GET"] * 3

    handler, calls = _flaky(3)
    with _client(handler) as fleet, pytest.raises(httpx.ConnectError):
        fleet.jobs()
    assert len(calls) == 3


def test_writes_are_not_retried(monkeypatch):
    monkeypatch.setattr("fleetml.client.time.sleep", lambda s: None)
    handler, calls = _flaky(1)
    with _client(handler) as fleet, pytest.raises(httpx.ConnectError):
        fleet.ingest([])
    assert calls == ["POST"]


# -- against the real app -------------------------------------------------------------------


class _AppTransport(httpx.BaseTransport):
    """Sends the client's requests through a TestClient, so the real app answers them."""

    def __init__(self, app_client) -> None:
        self.app_client = app_client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.app_client.request(
            request.method, str(request.url), headers=request.headers, content=request.read()
        )
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


@pytest.fixture
def live(sqlite_settings) -> Iterator[Callable[[str], Client]]:
    """Clients talking to the real app: ``live("runtime")``, ``live("ops")`` or ``live(key)``."""
    from fastapi.testclient import TestClient

    from fleetml.api import create_app
    from fleetml.store.engine import dispose_engines, get_engine
    from fleetml.store.keys import create_key
    from fleetml.store.migrate import upgrade

    engine = get_engine(sqlite_settings)
    upgrade(engine)
    keys = {}
    with engine.begin() as conn:
        for role in ("runtime", "ops"):
            keys[role], _ = create_key(conn, role=role, name=f"test-{role}", actor="pytest")
    clients: list[Client] = []
    with TestClient(create_app(sqlite_settings)) as app_client:
        transport = _AppTransport(app_client)

        def make(role_or_key: str) -> Client:
            key = keys.get(role_or_key, role_or_key)
            clients.append(Client("http://testserver", key, transport=transport))
            return clients[-1]

        yield make
        for client in clients:
            client.close()
    dispose_engines()


def test_live_ingest_events_and_their_errors(live):
    bot, oncall = live("runtime"), live("ops")
    samples = [
        {"account_id": "wa-1", "ts": 1_767_225_600 + i, "values": {"cpu_pct": float(i)}}
        for i in range(3)
    ]
    stored = bot.ingest(samples, register=True)
    assert stored["samples"] == 3 and stored["registered"] == ["wa-1"]
    assert bot.ingest(samples)["samples"] == 3  # a replay is safe

    events = [{"account_id": "wa-1", "ts": 1_767_225_601, "kind": "disconnect", "detail": "x"}]
    assert bot.events(events)["events"] == 1

    with pytest.raises(FleetmlError) as caught:
        bot.events([{"account_id": "wa-1", "ts": 1_767_225_601, "kind": "nonsense"}])
    assert caught.value.status == 422
    assert caught.value.errors[0]["field"] == "kind"

    with pytest.raises(FleetmlError) as caught:
        oncall.ingest(samples)  # ops may read, not ingest
    assert caught.value.status == 403
    assert "runtime" in caught.value.detail

    assert oncall.jobs(limit=5) == []  # paged read against the real route: no runs yet

    with pytest.raises(FleetmlError) as caught:
        live("not-a-key").ingest(samples)
    assert caught.value.status == 401
    assert "Authorization: Bearer" in caught.value.detail


def test_live_routing_and_actions_for_the_runtime(live, sqlite_settings):
    """The runtime's side of decisions through the client: weights, route, pending actions and
    their acknowledgement, against the real app over a decided fleet."""
    from fleetml.store.accounts import create_account
    from fleetml.store.engine import get_engine
    from tests.api.test_api_decisions import seed

    bot, oncall = live("runtime"), live("ops")
    engine = get_engine(sqlite_settings)
    with engine.begin() as conn:
        for account, group in (("m1", "eu"), ("m2", "us")):
            create_account(conn, account_id=account, group=group, actor="test")
        create_account(conn, account_id="s1", role="servant", master_id="m1", group="eu", actor="t")
    seed(engine)
    weights = bot.weights("eu")
    assert {w["account_id"] for w in weights["accounts"]} == {"m1", "s1"}
    pending = bot.actions()
    assert [(a["account_id"], a["kind"]) for a in pending] == [("m2", "drain")]
    done = bot.ack_action(pending[0]["id"], "failed", detail="runtime busy")
    assert (done["state"], done["detail"]) == ("failed", "runtime busy")
    assert bot.actions() == []
    assert {a["kind"] for a in oncall.actions(state=None)} == {"drain", "failover"}
    picked = bot.route("eu", report=[{"account_id": "m1", "latency_ms": 80.0, "ok": True}])
    assert picked["group"] == "eu"
    with pytest.raises(FleetmlError) as caught:
        bot.route("nowhere")
    assert caught.value.status == 404 and "has no accounts" in caught.value.detail
