"""The fleet registry over HTTP, and its audit trail."""

from __future__ import annotations


def test_registry_lifecycle_is_audited(api):
    assert api.post("/v1/accounts", json={"account_id": "m1", "group": "eu"}).status_code == 201
    servant = api.post(
        "/v1/accounts",
        json={"account_id": "s1", "role": "servant", "master_id": "m1", "group": "eu"},
    )
    assert servant.status_code == 201, servant.text
    assert servant.json()["state"] == "standby"
    patched = api.patch("/v1/accounts/m1", json={"capacity": 30, "state": "paused"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["capacity"] == 30 and patched.json()["state"] == "paused"
    assert api.delete("/v1/accounts/s1").json()["state"] == "disabled"

    entries = api.get("/v1/audit", as_="ops", params={"entity_type": "account"}).json()["entries"]
    assert [(e["action"], e["entity_id"]) for e in entries] == [
        ("account.retire", "s1"),
        ("account.update", "m1"),
        ("account.create", "s1"),
        ("account.create", "m1"),
    ]
    assert {e["actor"] for e in entries} == {"test-admin"}
    update = entries[1]
    assert update["before"]["state"] == "active" and update["after"]["state"] == "paused"
    assert update["before"]["capacity"] is None and update["after"]["capacity"] == 30


def test_listing_filters_and_retired_accounts(api):
    api.register("m1", "m2", group="eu")
    api.register("m3", group="us")
    api.register("s1", role="servant", master_id="m1", group="eu")
    ids = lambda resp: [a["account_id"] for a in resp.json()["accounts"]]  # noqa: E731
    assert ids(api.get("/v1/accounts", as_="ops", params={"group": "eu"})) == ["m1", "m2", "s1"]
    assert ids(api.get("/v1/accounts", as_="ops", params={"role": "servant"})) == ["s1"]
    assert ids(api.get("/v1/accounts", as_="ops", params={"master_id": "m1"})) == ["s1"]
    assert ids(api.get("/v1/accounts", as_="ops", params={"state": "standby"})) == ["s1"]
    assert api.delete("/v1/accounts/m2").status_code == 200
    assert "m2" not in ids(api.get("/v1/accounts", as_="ops"))
    assert "m2" in ids(api.get("/v1/accounts", as_="ops", params={"include_retired": "true"}))
    assert api.get("/v1/accounts/m2", as_="ops").json()["retired_at"]


def test_registry_refuses_inconsistent_changes(api):
    api.register("m1")
    no_master = api.post("/v1/accounts", json={"account_id": "s1", "role": "servant"})
    assert no_master.status_code == 422
    assert "master" in no_master.json()["detail"]
    ghost = api.post(
        "/v1/accounts", json={"account_id": "s1", "role": "servant", "master_id": "nobody"}
    )
    assert ghost.status_code == 422
    assert api.post("/v1/accounts", json={"account_id": "m1"}).status_code == 409
    assert api.post("/v1/accounts", json={"account_id": "bad id"}).status_code == 422
    bad_state = api.patch("/v1/accounts/m1", json={"state": "sleeping"})
    assert bad_state.status_code == 422
    assert bad_state.json()["errors"][0]["field"] == "body.state"
    assert api.patch("/v1/accounts/m1", json={"account_id": "m9"}).status_code == 422
    assert api.get("/v1/accounts/nobody", as_="ops").status_code == 404
    assert api.patch("/v1/accounts/nobody", json={"group": "x"}).status_code == 404
    api.register("s1", role="servant", master_id="m1")
    busy = api.delete("/v1/accounts/m1")
    assert busy.status_code == 409 and "s1" in busy.json()["detail"]
