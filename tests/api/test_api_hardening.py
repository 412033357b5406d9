"""The hardening findings, one test each: hostile or careless inputs get a clear 4xx in the one
error shape, on SQLite and on PostgreSQL, and nothing is stored by a refused request."""

from __future__ import annotations

import pytest

TS = 1_769_000_000  # 2026-01-21, well inside the accepted range


def _error(resp, status: int, field: str | None = None) -> dict:
    """``resp`` is the one error shape with ``status``; ``field`` is named in ``errors``."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body["detail"], str) and body["detail"], body
    assert isinstance(body["errors"], list), body
    if field is not None:
        fields = [e["field"] for e in body["errors"]]
        assert any(field in f for f in fields), (field, body)
    return body


def _samples(api) -> int:
    resp = api.get("/v1/metrics", params={"account_id": "acc1", "from": "2000-01-01"})
    return len(resp.json()["samples"]) if resp.status_code == 200 else 0


# --- 1, 2: one timestamp parser with one range ----------------------------------------------


@pytest.mark.parametrize("ts", [1e306, "1e306", -1e306, 1e20, "9999-12-31T00:00:00Z"])
def test_huge_timestamps_are_refused_by_name(api, ts):
    api.register("acc1")
    resp = api.post(
        "/v1/metrics", json={"samples": [{"account_id": "acc1", "ts": ts, "values": {"cpu": 1}}]}
    )
    _error(resp, 422, "ts")
    resp = api.post(
        "/v1/events", json={"events": [{"account_id": "acc1", "ts": ts, "kind": "crash"}]}
    )
    _error(resp, 422, "ts")
    assert _samples(api) == 0


@pytest.mark.parametrize(
    "path,param,value",
    [
        ("/v1/metrics", "from", "2300-01-01"),
        ("/v1/metrics", "from", "9999-01-01"),
        ("/v1/metrics", "to", "0001-01-01"),
        ("/v1/metrics", "from", "-3.4e117"),
        ("/v1/events", "from", "-3.4e117"),
        ("/v1/events", "to", "9999-01-01"),
        ("/v1/audit", "to", "1e306"),
        ("/v1/audit", "from", "1e300"),
        ("/v1/events", "from", "1e300"),
    ],
)
def test_read_ranges_outside_the_range_are_refused_by_name(api, path, param, value):
    api.register("acc1")
    params = {param: value}
    if path == "/v1/metrics":
        params["account_id"] = "acc1"
    body = _error(api.get(path, params=params), 422, param)
    assert "1970" in body["detail"], body  # the message states the accepted range


# --- 3, 4: strings that cannot be stored, bodies that cannot be parsed -----------------------


def test_lone_surrogate_in_a_metric_name_is_a_422(api):
    api.register("acc1")
    body = b'{"samples":[{"account_id":"acc1","ts":1769000000,"values":{"\\ud800":1}}]}'
    resp = api.post("/v1/metrics", content=body, headers={"Content-Type": "application/json"})
    _error(resp, 422, "values")
    assert _samples(api) == 0


def test_lone_surrogate_in_a_json_body_is_a_422(api):
    body = b'{"account_id":"acc1","group":"g\\udc00"}'
    resp = api.post("/v1/accounts", content=body, headers={"Content-Type": "application/json"})
    _error(resp, 422, "group")
    assert api.get("/v1/accounts/acc1").status_code == 404


@pytest.mark.parametrize("path", ["/v1/metrics", "/v1/events", "/v1/accounts"])
def test_deeply_nested_json_is_a_400(api, path):
    body = b"[" * 2000 + b"]" * 2000
    resp = api.post(path, content=body, headers={"Content-Type": "application/json"})
    _error(resp, 400)


# --- 5: ids out of range ----------------------------------------------------------------------


@pytest.mark.parametrize("key_id", ["9223372036854775808", "2147483648", "-1", "0"])
def test_key_ids_out_of_range_are_refused(api, key_id):
    resp = api.delete(f"/v1/keys/{key_id}")
    assert resp.status_code in (404, 422), resp.text
    _error(resp, resp.status_code)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/alerts/2147483648/ack",
        "/v1/actions/9223372036854775808/ack",
        "/v1/recommendations/2147483648/dismiss",
    ],
)
def test_row_ids_out_of_range_are_refused(api, path):
    resp = api.post(path, json={})
    assert resp.status_code in (404, 422), resp.text
    _error(resp, resp.status_code)


# --- 6: the same string rules on both stores ---------------------------------------------------


@pytest.mark.parametrize(
    "fields,where",
    [
        ({"group": "a\u0000b"}, "group"),
        ({"group": "g" * 129}, "group"),
        ({"attributes": {"note": "a\u0000b"}}, "attributes"),
        ({"attributes": {"a\u0000b": 1}}, "attributes"),
    ],
)
def test_account_strings_the_store_cannot_hold_are_refused(api, fields, where):
    resp = api.post("/v1/accounts", json={"account_id": "acc1", **fields})
    _error(resp, 422, where)
    assert api.get("/v1/accounts/acc1").status_code == 404
    api.register("acc2")
    resp = api.patch("/v1/accounts/acc2", json=fields)
    _error(resp, 422, where)


def test_key_name_with_nul_is_refused(api):
    resp = api.post("/v1/keys", json={"role": "ops", "name": "a\u0000b"})
    _error(resp, 422, "name")


def test_event_detail_with_nul_is_refused(api):
    api.register("acc1")
    for detail in ("a\u0000b", {"why": "a\u0000b"}):
        resp = api.post(
            "/v1/events",
            json={"events": [{"account_id": "acc1", "ts": TS, "kind": "crash", "detail": detail}]},
        )
        _error(resp, 422, "detail")
    assert api.get("/v1/events", params={"from": "2000-01-01"}).json()["events"] == []


@pytest.mark.parametrize(
    "url,param",
    [
        ("/v1/accounts?group=%00", "group"),
        ("/v1/accounts/a%00b", "account_id"),
        ("/v1/audit?actor=a%00b", "actor"),
        ("/v1/metrics?account_id=a%00b", "account_id"),
        ("/v1/events?account_id=a%00b", "account_id"),
        ("/v1/alerts?group=a%00b", "group"),
        ("/v1/weights?group=a%00b", "group"),
    ],
)
def test_reads_with_nul_are_refused_by_name(api, url, param):
    _error(api.get(url), 422, param)


# --- 7: the OpenAPI document describes the answers ---------------------------------------------


def test_openapi_describes_422_as_the_error_shape(api):
    doc = api.get("/openapi.json").json()
    ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            answer = op.get("responses", {}).get("422")
            if answer is not None:
                assert answer["content"]["application/json"]["schema"] == ref, (method, path)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    resp = api.get("/v1/keys", params={"include_revoked": "null"})
    _error(resp, 422, "include_revoked")


def test_an_unhandled_error_answers_the_json_error_shape(api, monkeypatch):
    from fastapi.testclient import TestClient

    import fleetml.store.accounts as accounts

    def boom(*a, **k):
        raise RuntimeError("secret detail that must not leak")

    monkeypatch.setattr(accounts, "list_accounts", boom)
    client = TestClient(api.client.app, raise_server_exceptions=False)
    resp = client.get("/v1/accounts", headers=api.headers("admin"))
    body = _error(resp, 500)
    assert "secret" not in resp.text and "RuntimeError" in body["detail"]


# --- 8: non-finite numbers ---------------------------------------------------------------------


@pytest.mark.parametrize("literal", [b"Infinity", b"-Infinity", b"NaN", b"1e999"])
def test_non_finite_capacity_is_refused(api, literal):
    head = {"Content-Type": "application/json"}
    body = b'{"account_id":"acc1","capacity":' + literal + b"}"
    _error(api.post("/v1/accounts", content=body, headers=head), 422, "capacity")
    api.register("acc2")
    body = b'{"capacity":' + literal + b"}"
    _error(api.patch("/v1/accounts/acc2", content=body, headers=head), 422, "capacity")
    assert api.get("/v1/accounts/acc2").json()["capacity"] != float("inf")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity"])
def test_non_finite_numbers_in_json_objects_are_refused(api, literal):
    head = {"Content-Type": "application/json"}
    body = b'{"account_id":"acc1","attributes":{"x":' + literal + b"}}"
    _error(api.post("/v1/accounts", content=body, headers=head), 422, "attributes")
    body = (
        b'{"events":[{"account_id":"acc1","ts":1769000000,"kind":"crash","detail":{"x":'
        + literal
        + b"}}]}"
    )
    _error(api.post("/v1/events?register=true", content=body, headers=head), 422, "detail")


# --- 10: the last admin key ---------------------------------------------------------------------


def test_the_last_admin_key_cannot_be_revoked(api):
    keys = api.get("/v1/keys").json()["keys"]
    admin = [k for k in keys if k["role"] == "admin" and not k.get("revoked_at")]
    assert len(admin) == 1
    _error(api.delete(f"/v1/keys/{admin[0]['id']}"), 409)
    assert api.get("/v1/keys").status_code == 200  # still let in
    # with a second admin key, the first may go (key rotation)
    created = api.post("/v1/keys", json={"role": "admin", "name": "second"}).json()
    assert api.delete(f"/v1/keys/{admin[0]['id']}").status_code == 200
    second = {"Authorization": f"Bearer {created['key']}"}
    resp = api.client.delete(f"/v1/keys/{created['id']}", headers=second)
    _error(resp, 409)


# --- 11: body size and content type -------------------------------------------------------------


def test_a_body_over_the_size_limit_is_refused_before_parsing(api):
    limit = api.settings.max_body_bytes
    body = b'{"samples":[],"junk":"' + b"x" * limit + b'"}'
    resp = api.post("/v1/metrics", content=body, headers={"Content-Type": "application/json"})
    body = _error(resp, 413)
    assert str(limit) in body["detail"]
    resp = api.post(
        "/v1/accounts",
        content=b"{" + b" " * limit + b"}",
        headers={"Content-Type": "application/json"},
    )
    _error(resp, 413)


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_json_is_a_415(api, ctype):
    api.register("acc1")
    body = b'{"samples":[{"account_id":"acc1","ts":1769000000,"values":{"cpu":1}}]}'
    headers = {} if ctype is None else {"Content-Type": ctype}
    resp = api.post("/v1/metrics", content=body, headers=headers)
    if ctype is None:
        headers = {"Content-Type": ""}
        resp = api.post("/v1/metrics", content=body, headers=headers)
    _error(resp, 415)
    assert _samples(api) == 0
    resp = api.post("/v1/accounts", content=b'{"account_id":"acc9"}', headers=headers)
    _error(resp, 415)


def test_json_with_a_charset_and_suffix_types_are_accepted(api):
    api.register("acc1")
    body = b'{"samples":[{"account_id":"acc1","ts":1769000000,"values":{"cpu":1}}]}'
    for ctype in ("application/json; charset=utf-8", "application/vnd.fleetml+json"):
        resp = api.post("/v1/metrics", content=body, headers={"Content-Type": ctype})
        assert resp.status_code == 200, resp.text


# --- 12: metric kinds are configuration --------------------------------------------------------


def test_metric_kinds_are_an_admin_setting(api):
    body = {"kinds": {"sent_total": "counter"}}
    assert api.put("/v1/metric-kinds", json=body, as_="runtime").status_code == 403
    assert api.put("/v1/metric-kinds", json=body, as_="ops").status_code == 403
    assert api.put("/v1/metric-kinds", json=body, as_="admin").status_code == 200
    assert api.get("/v1/metric-kinds", as_="runtime").status_code == 200


@pytest.mark.parametrize("path", ["/v1/metrics", "/v1/accounts"])
def test_deep_nesting_is_refused_whatever_the_recursion_limit(api, path):
    """A library may raise the interpreter's recursion limit (hypothesis does, in tests); a
    body nested deeper than 1,024 levels is still refused with the same 400."""
    import sys

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20_000))
    try:
        body = b"[" * 2000 + b"]" * 2000
        resp = api.post(path, content=body, headers={"Content-Type": "application/json"})
    finally:
        sys.setrecursionlimit(old)
    _error(resp, 400)
    assert "nested deeper than 1024 levels" in resp.json()["detail"]


def test_the_bulk_parser_refuses_what_orjson_cannot_nest():
    """Ingest's own parser (behind the guard) does not fall back to json for depth either."""
    import sys

    from fleetml.ingest.batch import BatchRejected, parse_body

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20_000))
    try:
        with pytest.raises(BatchRejected, match="depth limit") as info:
            parse_body(b"[" * 2000 + b"]" * 2000)
    finally:
        sys.setrecursionlimit(old)
    assert info.value.status_code == 400
