"""Access control: bearer keys, roles, key administration over HTTP."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("path", ["/v1/accounts", "/v1/metrics", "/v1/keys", "/v1/audit"])
def test_missing_key_is_401_with_a_challenge(sqlite_api, path):
    resp = sqlite_api.get(path, as_=None)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer KEY" in resp.json()["detail"]


def test_wrong_or_malformed_key_is_401(sqlite_api):
    wrong = sqlite_api.get("/v1/accounts", as_=None, headers={"Authorization": "Bearer fml_nope"})
    assert wrong.status_code == 401
    assert "not valid" in wrong.json()["detail"]
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    basic = sqlite_api.get("/v1/accounts", as_=None, headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/keys", {"name": "x", "role": "admin"}),
        ("DELETE", "/v1/keys/1", None),
        ("POST", "/v1/accounts", {"account_id": "wa-1"}),
        ("PATCH", "/v1/accounts/wa-1", {"group": "g"}),
        ("DELETE", "/v1/accounts/wa-1", None),
    ],
)
def test_runtime_key_cannot_administer(sqlite_api, method, path, body):
    resp = sqlite_api.request(method, path, as_="runtime", json=body)
    assert resp.status_code == 403
    detail = resp.json()["detail"]
    assert "role admin" in detail and "test-runtime" in detail and "runtime" in detail


def test_role_matrix(sqlite_api):
    api = sqlite_api
    sample = {"samples": [{"account_id": "wa-1", "ts": 1767225600, "values": {"a": 1}}]}
    # ops reads everything but does not ingest
    assert api.post("/v1/metrics?register=true", as_="ops", json=sample).status_code == 403
    assert api.get("/v1/metrics", as_="ops").status_code == 200
    assert api.get("/v1/keys", as_="ops").status_code == 200
    # runtime ingests, but neither reads the store nor changes metric kinds (configuration)
    assert api.post("/v1/metrics?register=true", as_="runtime", json=sample).status_code == 200
    for role in ("runtime", "ops"):
        kinds = api.put("/v1/metric-kinds", as_=role, json={"kinds": {"a": "gauge"}})
        assert kinds.status_code == 403, (role, kinds.text)
    denied = api.get("/v1/metrics", as_="runtime")
    assert denied.status_code == 403
    assert "ops or admin" in denied.json()["detail"]
    # admin may do everything
    assert api.post("/v1/metrics", as_="admin", json=sample).status_code == 200
    assert api.get("/v1/audit", as_="admin").status_code == 200


def test_key_lifecycle_over_http(sqlite_api):
    api = sqlite_api
    created = api.post("/v1/keys", as_="admin", json={"name": "bot-runtime-7", "role": "runtime"})
    assert created.status_code == 201, created.text
    secret = created.json()["key"]
    key_id = created.json()["id"]
    bearer = {"Authorization": f"Bearer {secret}"}
    assert api.get("/v1/event-kinds", as_=None, headers=bearer).status_code == 200
    listed = api.get("/v1/keys", as_="admin").json()["keys"]
    assert "bot-runtime-7" in [k["name"] for k in listed]
    assert all("key" not in k and "key_hash" not in k for k in listed)
    assert secret not in api.get("/v1/keys", as_="admin").text
    revoked = api.delete(f"/v1/keys/{key_id}", as_="admin")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    # revocation forgets the cache at once
    assert api.get("/v1/event-kinds", as_=None, headers=bearer).status_code == 401
    audit = api.get("/v1/audit", as_="ops", params={"entity_type": "api_key"}).json()["entries"]
    assert [e["action"] for e in audit][:2] == ["key.revoke", "key.create"]
    assert api.delete("/v1/keys/9999", as_="admin").status_code == 404


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"])
def test_open_endpoints_need_no_key(sqlite_api, path):
    assert sqlite_api.get(path, as_=None).status_code == 200
