"""Metrics and events ingest over HTTP: idempotence, all-or-nothing, error reports, reads."""

from __future__ import annotations

import csv
import io

import orjson
import pytest

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z

JSON = {"Content-Type": "application/json"}


def _samples(n: int, *, accounts=("wa-1", "wa-2"), metrics=("cpu_pct", "queue_depth"), t0=T0):
    return [
        {
            "account_id": accounts[i % len(accounts)],
            "ts": t0 + (i // len(accounts)) * 10,
            "values": {m: float(i * (j + 1)) for j, m in enumerate(metrics)},
        }
        for i in range(n)
    ]


def _read(api, **params) -> list[dict]:
    resp = api.get("/v1/metrics", as_="ops", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()["samples"]


def test_replayed_batch_stores_nothing_twice(api):
    api.register("wa-1", "wa-2")
    body = {"samples": _samples(40)}
    first = api.post("/v1/metrics", as_="runtime", json=body)
    assert first.status_code == 200, first.text
    assert first.json()["rows"] == 40
    stored = _read(api)
    again = api.post("/v1/metrics", as_="runtime", json=body)
    assert again.status_code == 200
    assert _read(api) == stored
    assert len(stored) == 40
    # A replay carrying a new metric for the same (account, ts) adds only that metric.
    extra = {"samples": [{"account_id": "wa-1", "ts": T0, "values": {"rtt_ms": 12.5}}]}
    assert api.post("/v1/metrics", as_="runtime", json=extra).status_code == 200
    rows = _read(api, account_id="wa-1", to=str(T0))
    assert rows == [
        {
            "account_id": "wa-1",
            "ts": "2026-01-01T00:00:00.000Z",
            "values": {"cpu_pct": 0.0, "queue_depth": 0.0, "rtt_ms": 12.5},
        }
    ]


def test_batch_with_one_nan_is_rejected_whole_and_names_the_sample(api):
    api.register("wa-1", "wa-2")
    samples = _samples(20)
    samples[7]["values"]["cpu_pct"] = 123456.0
    # Standard JSON has no NaN; clients send the bare literal anyway.
    raw = orjson.dumps({"samples": samples}).replace(b"123456.0", b"NaN")
    resp = api.post(
        "/v1/metrics", as_="runtime", content=raw, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["errors"] == [
        {"index": 7, "field": "values.cpu_pct", "reason": "NaN is not a finite number"}
    ]
    assert "nothing was stored" in body["detail"]
    assert _read(api) == []


def test_non_finite_strings_and_literals_are_each_reported(api):
    api.register("wa-1")
    raw = (
        b'{"samples": ['
        b'{"account_id": "wa-1", "ts": 1767225600, "values": {"a": "NaN"}},'
        b'{"account_id": "wa-1", "ts": 1767225610, "values": {"a": Infinity}},'
        b'{"account_id": "wa-1", "ts": 1767225620, "values": {"a": -Infinity}},'
        b'{"account_id": "wa-1", "ts": 1767225630, "values": {"a": "12"}},'
        b'{"account_id": "wa-1", "ts": 1767225640, "values": {"a": true}}'
        b"]}"
    )
    resp = api.post("/v1/metrics", as_="runtime", content=raw, headers=JSON)
    assert resp.status_code == 422
    reasons = {e["index"]: e["reason"] for e in resp.json()["errors"]}
    assert reasons == {
        0: "'NaN' is not a finite number",
        1: "Infinity is not a finite number",
        2: "-Infinity is not a finite number",
        3: "must be a number or null, got a string",
        4: "must be a number or null, got a boolean",
    }


def test_every_bad_item_is_listed_by_index_field_and_reason(api):
    api.register("wa-1")
    samples = _samples(8, accounts=("wa-1",))
    samples[1]["ts"] = "yesterday"
    samples[2]["ts"] = T0 * 1000  # epoch milliseconds instead of seconds: far future
    samples[3]["values"] = {"9lives": 1.0}
    samples[4]["account_id"] = "has space"
    samples[5]["values"] = [1, 2]
    samples[6]["account_id"] = "wa-unknown"
    resp = api.post("/v1/metrics", as_="runtime", json={"samples": samples})
    assert resp.status_code == 422
    errors = resp.json()["errors"]
    found = {(e["index"], e["field"]) for e in errors}
    assert found == {
        (1, "ts"),
        (2, "ts"),
        (3, "values.9lives"),
        (4, "account_id"),
        (5, "values"),
    }
    by_index = {e["index"]: e["reason"] for e in errors}
    assert "epoch milliseconds" in by_index[2]
    assert "future" in by_index[2]
    # Content errors come first; once the content is fixed the unknown account is named.
    fixed = _samples(8, accounts=("wa-1",))
    fixed[6]["account_id"] = "wa-unknown"
    resp = api.post("/v1/metrics", as_="runtime", json={"samples": fixed})
    assert resp.status_code == 422
    assert resp.json()["errors"] == [
        {
            "index": 6,
            "field": "account_id",
            "reason": "unknown account 'wa-unknown'; register it with POST /v1/accounts "
            "or send ?register=true",
        }
    ]
    assert _read(api) == []


def test_register_true_creates_unknown_accounts_and_audits_them(api):
    resp = api.post(
        "/v1/metrics?register=true",
        as_="runtime",
        json={"samples": _samples(4, accounts=("wa-new-1", "wa-new-2"))},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["registered"] == ["wa-new-1", "wa-new-2"]
    account = api.get("/v1/accounts/wa-new-1", as_="ops").json()
    assert account["role"] == "master" and account["state"] == "active"
    audit = api.get("/v1/audit", as_="ops", params={"entity_id": "wa-new-1"}).json()["entries"]
    assert [(e["action"], e["actor"]) for e in audit] == [("account.register", "test-runtime")]


def test_null_values_are_not_stored(api):
    api.register("wa-1")
    sample = {"account_id": "wa-1", "ts": "2026-01-01T00:00:00Z", "values": {"a": 1, "b": None}}
    resp = api.post("/v1/metrics", as_="runtime", json={"samples": [sample]})
    assert resp.status_code == 200
    assert resp.json()["values"] == 1
    assert _read(api) == [
        {"account_id": "wa-1", "ts": "2026-01-01T00:00:00.000Z", "values": {"a": 1.0}}
    ]


def test_timestamp_forms_agree(api):
    api.register("wa-1")
    forms = ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "2026-01-01T01:00:00+01:00", T0]
    for i, ts in enumerate(forms):
        sample = {"account_id": "wa-1", "ts": ts, "values": {f"m{i}": i}}
        assert api.post("/v1/metrics", as_="runtime", json={"samples": [sample]}).status_code == 200
    assert _read(api) == [
        {
            "account_id": "wa-1",
            "ts": "2026-01-01T00:00:00.000Z",
            "values": {"m0": 0.0, "m1": 1.0, "m2": 2.0, "m3": 3.0},
        }
    ]


def test_ten_thousand_samples_in_one_request(api):
    accounts = tuple(f"wa-{i}" for i in range(10))
    samples = _samples(10_000, accounts=accounts)
    resp = api.post("/v1/metrics?register=true", as_="runtime", json={"samples": samples})
    assert resp.status_code == 200, resp.text
    assert resp.json()["rows"] == 10_000
    assert len(_read(api, account_id="wa-3")) == 1_000


def test_batch_over_the_limit_is_refused_with_413(api):
    limit = api.settings.max_batch_samples
    samples = [{"account_id": "wa-1", "ts": T0, "values": {}}] * (limit + 1)
    resp = api.post("/v1/metrics", as_="runtime", json={"samples": samples})
    assert resp.status_code == 413
    assert str(limit) in resp.json()["detail"]


def test_body_that_is_not_json_is_a_400(api):
    resp = api.post("/v1/metrics", as_="runtime", content=b"{not json", headers=JSON)
    assert resp.status_code == 400
    assert "not valid JSON" in resp.json()["detail"]


def test_metric_kinds_default_by_name_and_declared(api):
    api.register("wa-1")
    sample = {
        "account_id": "wa-1",
        "ts": T0,
        "values": {"sent_total": 5, "cpu_pct": 3, "restarts": 1},
    }
    assert api.post("/v1/metrics", as_="runtime", json={"samples": [sample]}).status_code == 200
    kinds = api.get("/v1/metric-kinds", as_="runtime").json()["kinds"]
    assert kinds == {"cpu_pct": "gauge", "restarts": "gauge", "sent_total": "counter"}
    resp = api.put("/v1/metric-kinds", as_="admin", json={"kinds": {"restarts": "counter"}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["kinds"]["restarts"] == "counter"
    bad = api.put("/v1/metric-kinds", as_="admin", json={"kinds": {"x": "histogram"}})
    assert bad.status_code == 422


def test_csv_range_read_is_wide_and_filtered(api):
    api.register("wa-1", "wa-2")
    assert api.post("/v1/metrics", as_="runtime", json={"samples": _samples(20)}).status_code == 200
    params = {"from": "2026-01-01T00:00:10Z", "to": str(T0 + 30), "metric": "cpu_pct"}
    resp = api.get(
        "/v1/metrics",
        as_="ops",
        params={**params, "account_id": ["wa-1", "wa-2"]},
        headers={"Accept": "text/csv"},
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert list(rows[0]) == ["ts", "account_id", "cpu_pct"]
    assert [(r["account_id"], r["ts"]) for r in rows] == [
        ("wa-1", "2026-01-01T00:00:10.000Z"),
        ("wa-1", "2026-01-01T00:00:20.000Z"),
        ("wa-1", "2026-01-01T00:00:30.000Z"),
        ("wa-2", "2026-01-01T00:00:10.000Z"),
        ("wa-2", "2026-01-01T00:00:20.000Z"),
        ("wa-2", "2026-01-01T00:00:30.000Z"),
    ]
    assert float(rows[0]["cpu_pct"]) == 2.0  # sample index 2: wa-1 at T0 + 10
    same = api.get("/v1/metrics", as_="ops", params={**params, "format": "csv"})
    assert same.text.count("\n") == 7  # header + 6 rows


def test_read_with_bad_parameters_is_a_clear_422(api):
    resp = api.get("/v1/metrics", as_="ops", params={"from": "last tuesday"})
    assert resp.status_code == 422
    assert "'from'" in resp.json()["detail"]
    resp = api.get("/v1/metrics", as_="ops", params={"metric": "nope"})
    assert resp.status_code == 422
    assert "nope" in resp.json()["detail"]


def test_events_ingest_read_and_vocabulary(api):
    api.register("wa-1")
    events = [
        {"account_id": "wa-1", "ts": T0, "kind": "disconnect", "detail": "socket closed"},
        {"account_id": "wa-1", "ts": T0 + 60, "kind": "banned", "detail": {"reason": "spam"}},
    ]
    resp = api.post("/v1/events", as_="runtime", json={"events": events})
    assert resp.status_code == 200, resp.text
    assert api.post("/v1/events", as_="runtime", json={"events": events}).status_code == 200
    got = api.get("/v1/events", as_="ops", params={"account_id": "wa-1"}).json()
    assert got["count"] == 2
    assert [(e["kind"], e["ts"]) for e in got["events"]] == [
        ("disconnect", "2026-01-01T00:00:00.000Z"),
        ("banned", "2026-01-01T00:01:00.000Z"),
    ]
    assert orjson.loads(got["events"][1]["detail"]) == {"reason": "spam"}
    only = api.get("/v1/events", as_="ops", params={"kind": "banned"}).json()
    assert only["count"] == 1
    bad = [{"account_id": "wa-1", "ts": T0, "kind": "exploded"}, events[0]]
    resp = api.post("/v1/events", as_="runtime", json={"events": bad})
    assert resp.status_code == 422
    assert [(e["index"], e["field"]) for e in resp.json()["errors"]] == [(0, "kind")]
    kinds = api.get("/v1/event-kinds", as_="runtime").json()["kinds"]
    categories = {k["kind"]: k["category"] for k in kinds}
    assert categories["banned"] == "enforcement"
    assert categories["crash"] == "fault"
    assert categories["failover"] == "operation"


@pytest.mark.parametrize("register_flag", [False, True])
def test_events_for_unknown_accounts(api, register_flag):
    events = [{"account_id": "wa-x", "ts": T0, "kind": "crash"}]
    url = "/v1/events?register=true" if register_flag else "/v1/events"
    resp = api.post(url, as_="runtime", json={"events": events})
    if register_flag:
        assert resp.status_code == 200 and resp.json()["registered"] == ["wa-x"]
    else:
        assert resp.status_code == 422
        assert resp.json()["errors"][0]["field"] == "account_id"
