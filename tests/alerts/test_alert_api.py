"""The alerts API: list, page, read, acknowledge, resolve, silences; roles and hostile input."""

from __future__ import annotations

import pytest
from alertdata import NOW, anomaly, predictions, risk

from fleetml.services.alerts import evaluate_alerts
from fleetml.store.audit import now_ms, read_audit


@pytest.fixture
def opened(client, engine, settings, fleet):
    """Three firing alerts: anomaly on a1, a2 and b1 (opened in that order)."""
    frame = predictions(anomaly("a1"), anomaly("a2"), anomaly("b1"), risk("b1", "6h", run=1))
    evaluate_alerts(engine, settings, frame, now_ms=NOW, groups=fleet)
    alerts = client.get("/v1/alerts").json()["alerts"]
    return {a["account_id"]: a["id"] for a in alerts}


def test_list_filters_and_pages_newest_first(client, opened):
    first = client.get("/v1/alerts", params={"limit": 2}).json()
    assert [a["account_id"] for a in first["alerts"]] == ["b1", "a2"]
    rest = client.get("/v1/alerts", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [a["account_id"] for a in rest["alerts"]] == ["a1"] and rest["next_cursor"] is None

    eu = client.get("/v1/alerts", params={"group": "eu", "state": "open"}).json()["alerts"]
    assert {a["account_id"] for a in eu} == {"a1", "a2"}
    assert client.get("/v1/alerts", params={"state": "resolved"}).json()["alerts"] == []
    one = client.get("/v1/alerts", params={"account_id": "a1", "kind": "anomaly"}).json()
    assert [a["opened_at"] for a in one["alerts"]] == ["2026-01-01T00:00:00.000Z"]


def test_ack_then_resolve_round_trip_is_recorded_and_audited(client, opened):
    alert_id = opened["a1"]
    acked = client.post(f"/v1/alerts/{alert_id}/ack", json={"note": "on it"})
    assert acked.status_code == 200, acked.text
    assert acked.json()["state"] == "acknowledged"
    assert acked.json()["acknowledged_by"] == "test-ops"

    resolved = client.post(f"/v1/alerts/{alert_id}/resolve", as_="admin")  # no body
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["resolved_by"] == "test-admin"

    again = client.post(f"/v1/alerts/{alert_id}/resolve", json={"note": "twice"})
    assert again.status_code == 409 and "already resolved" in again.json()["detail"]
    assert client.post(f"/v1/alerts/{alert_id}/ack").status_code == 409

    detail = client.get(f"/v1/alerts/{alert_id}").json()
    assert [(h["to_state"], h["actor"], h["note"]) for h in detail["history"]] == [
        ("firing", "fleetml", None),
        ("acknowledged", "test-ops", "on it"),
        ("resolved", "test-admin", None),
    ]
    actions = [e["action"] for e in read_audit(client.client.app.state.fleetml.engine)]
    assert actions[:2] == ["alert.resolve", "alert.ack"]


def test_silence_round_trip(client, engine, settings, fleet):
    body = {"group": "us", "ends_at": (NOW / 1000) + 3600 * 24 * 365 * 5, "comment": "migration"}
    created = client.post("/v1/silences", json=body)
    assert created.status_code == 201, created.text
    silence = created.json()
    assert silence["active"] and silence["created_by"] == "test-ops" and silence["group"] == "us"

    listed = client.get("/v1/silences").json()
    assert [s["id"] for s in listed["silences"]] == [silence["id"]]

    # The silence starts at the server's clock, so the tick runs on it too.
    later = now_ms() + 1000
    evaluate_alerts(engine, settings, predictions(anomaly("b1")), now_ms=later, groups=fleet)
    [alert] = client.get("/v1/alerts").json()["alerts"]
    assert alert["silenced"] is True

    deleted = client.delete(f"/v1/silences/{silence['id']}")
    assert deleted.status_code == 200 and deleted.json()["active"] is False
    assert client.delete(f"/v1/silences/{silence['id']}").status_code == 409
    assert client.get("/v1/silences").json()["silences"] == []
    kept = client.get("/v1/silences", params={"include_expired": True}).json()["silences"]
    assert kept[0]["deleted_at"] is not None


def test_runtime_keys_are_refused(client, opened):
    alert_id = opened["a1"]
    for method, url in (
        ("GET", "/v1/alerts"),
        ("GET", f"/v1/alerts/{alert_id}"),
        ("POST", f"/v1/alerts/{alert_id}/ack"),
        ("POST", f"/v1/alerts/{alert_id}/resolve"),
        ("GET", "/v1/silences"),
        ("POST", "/v1/silences"),
        ("DELETE", "/v1/silences/1"),
    ):
        assert client.request(method, url, as_="runtime").status_code == 403, (method, url)


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/v1/alerts/999999", 404),
        ("/v1/alerts/2147483647", 404),
        ("/v1/alerts/2147483648", 422),  # past PostgreSQL's INTEGER: no row can have it
        ("/v1/alerts/9223372036854775807", 422),
    ],
)
def test_unknown_ids_are_404(client, url, status):
    assert client.get(url).status_code == status
    assert client.post(url + "/ack").status_code == status
    silence = url.replace("/alerts/", "/silences/")
    assert client.delete(silence).status_code == status
    assert client.get("/v1/alerts", params={"cursor": url.rsplit("/", 1)[1]}).status_code == 200


@pytest.mark.parametrize(
    ("method", "url", "kw"),
    [
        ("GET", "/v1/alerts/99999999999999999999999", {}),
        ("GET", "/v1/alerts/-1", {}),
        ("GET", "/v1/alerts/abc", {}),
        ("POST", "/v1/alerts/1/ack", {"json": {"note": "x" * 5000}}),
        ("POST", "/v1/alerts/1/ack", {"json": {"nope": 1}}),
        (
            "POST",
            "/v1/alerts/1/ack",
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        ),
        ("GET", "/v1/alerts?state=broken", {}),
        ("GET", "/v1/alerts?cursor=abc", {}),
        ("GET", "/v1/alerts?cursor=99999999999999999999999", {}),
        ("GET", "/v1/alerts?cursor=%C2%B2", {}),
        ("GET", "/v1/alerts?limit=0", {}),
        ("DELETE", "/v1/silences/99999999999999999999999", {}),
        ("POST", "/v1/silences", {"json": {"ends_at": "2099-01-01T00:00:00Z"}}),
        ("POST", "/v1/silences", {"json": {"kind": "anomaly"}}),
        ("POST", "/v1/silences", {"json": {"kind": "anomaly", "ends_at": "tomorrow"}}),
        ("POST", "/v1/silences", {"json": {"kind": "anomaly", "ends_at": 1e300}}),
        ("POST", "/v1/silences", {"json": {"kind": "anomaly", "ends_at": 10**40}}),
        ("POST", "/v1/silences", {"json": {"kind": "anomaly", "ends_at": True}}),
        ("POST", "/v1/silences", {"json": {"kind": "anomaly", "ends_at": 1000}}),  # past
        (
            "POST",
            "/v1/silences",
            {"json": {"kind": "anomaly", "starts_at": 4102444800, "ends_at": 4102444000}},
        ),
        ("POST", "/v1/silences", {"json": {"account_id": "has space", "ends_at": 4102444800}}),
        ("POST", "/v1/silences", {"json": {"group": "x" * 500, "ends_at": 4102444800}}),
        ("POST", "/v1/silences", {"json": ["not", "an", "object"]}),
    ],
)
def test_hostile_input_gets_a_clear_4xx(client, method, url, kw):
    response = client.request(method, url, **kw)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.json()["detail"]


def test_silence_accepts_iso_and_epoch_seconds(client):
    iso = client.post(
        "/v1/silences",
        json={"account_id": "a1", "starts_at": "2099-01-01T00:00:00", "ends_at": 4102531200},
    )
    assert iso.status_code == 201, iso.text
    out = iso.json()
    assert out["starts_at"] == "2099-01-01T00:00:00.000Z"
    assert out["ends_at"] == "2100-01-02T00:00:00.000Z"
    assert out["active"] is False  # not begun yet
