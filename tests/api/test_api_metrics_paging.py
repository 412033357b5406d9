"""GET /v1/metrics pages: keyset on (ts, account), stable while ingest continues."""

from __future__ import annotations

import base64
import csv
import io

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
ACCOUNTS = ("wa-1", "wa-2", "wa-3")


def _samples(first_step: int, steps: int, accounts=ACCOUNTS) -> list[dict]:
    return [
        {"account_id": a, "ts": T0 + 10 * k, "values": {"cpu_pct": float(k), "queue": float(i)}}
        for k in range(first_step, first_step + steps)
        for i, a in enumerate(accounts)
    ]


def _ingest(api, samples) -> None:
    resp = api.post("/v1/metrics", as_="runtime", json={"samples": samples})
    assert resp.status_code == 200, resp.text


def _page(api, **params) -> dict:
    resp = api.get("/v1/metrics", as_="ops", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _keys(samples) -> list[tuple[str, str]]:
    return [(s["ts"], s["account_id"]) for s in samples]


def _all_pages(api, **params) -> list[dict]:
    pages, cursor = [], None
    while True:
        page = _page(api, **params, **({"cursor": cursor} if cursor else {}))
        pages.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return pages


def test_pages_cover_every_row_once_in_ts_order(api):
    api.register(*ACCOUNTS)
    _ingest(api, _samples(0, 20))  # 60 rows
    pages = _all_pages(api, limit=7)
    assert [p["count"] for p in pages] == [7] * 8 + [4]
    rows = [s for p in pages for s in p["samples"]]
    keys = _keys(rows)
    assert len(keys) == len(set(keys)) == 60
    assert keys == sorted(keys)  # ts first; ids sort like their registration here
    whole = _page(api)
    assert whole["count"] == 60 and whole["next_cursor"] is None
    assert sorted(keys) == sorted(_keys(whole["samples"]))


def test_an_exact_last_page_has_no_next_cursor(api):
    api.register(*ACCOUNTS)
    _ingest(api, _samples(0, 4))  # 12 rows
    pages = _all_pages(api, limit=6)
    assert [p["count"] for p in pages] == [6, 6]


def test_paging_is_stable_while_newer_rows_arrive(api):
    api.register(*ACCOUNTS)
    _ingest(api, _samples(0, 10))  # 30 rows present at the first page
    seen = []
    page = _page(api, limit=8)
    seen += page["samples"]
    _ingest(api, _samples(10, 5))  # 15 newer rows while the reader pages
    while page["next_cursor"]:
        page = _page(api, limit=8, cursor=page["next_cursor"])
        seen += page["samples"]
        if len(seen) == 16:
            _ingest(api, _samples(15, 2))  # and 6 more mid-way
    keys = _keys(seen)
    assert len(keys) == len(set(keys)), "a row was returned twice"
    original = set(_keys(_page(api, to=str(T0 + 90))["samples"]))
    assert len(original) == 30 and original <= set(keys), "a row was skipped"
    assert len(keys) == 30 + 15 + 6  # newer rows arrive on later pages
    assert keys == sorted(keys)


def test_cursor_pages_honour_the_filters(api):
    api.register(*ACCOUNTS)
    _ingest(api, _samples(0, 10))
    params = {"account_id": ["wa-1", "wa-3"], "metric": "cpu_pct", "from": str(T0 + 20)}
    rows = [s for p in _all_pages(api, limit=3, **params) for s in p["samples"]]
    assert len(rows) == 2 * 8
    assert {s["account_id"] for s in rows} == {"wa-1", "wa-3"}
    assert all(set(s["values"]) == {"cpu_pct"} for s in rows)


def test_paged_csv_carries_the_cursor_in_a_header_and_plain_csv_is_whole(api):
    api.register(*ACCOUNTS)
    _ingest(api, _samples(0, 5))  # 15 rows
    first = api.get("/v1/metrics", as_="ops", params={"format": "csv", "limit": 10})
    assert first.status_code == 200
    assert first.text.count("\n") == 1 + 10
    cursor = first.headers["X-Next-Cursor"]
    rest = api.get("/v1/metrics", as_="ops", params={"format": "csv", "cursor": cursor})
    assert rest.text.count("\n") == 1 + 5 and "X-Next-Cursor" not in rest.headers
    rows = list(csv.DictReader(io.StringIO(first.text))) + list(
        csv.DictReader(io.StringIO(rest.text))
    )
    assert len({(r["ts"], r["account_id"]) for r in rows}) == 15
    whole = api.get("/v1/metrics", as_="ops", headers={"Accept": "text/csv"})
    assert whole.text.count("\n") == 1 + 15 and "X-Next-Cursor" not in whole.headers
    ids = [r["account_id"] for r in csv.DictReader(io.StringIO(whole.text))]
    assert ids == sorted(ids)  # unpaged CSV keeps its (account_id, ts) order


def _forged(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_bad_limits_and_cursors_are_clear_422s(api):
    api.register(*ACCOUNTS)
    _ingest(api, _samples(0, 2))
    for limit in ("0", "100001", "-1", "many"):
        assert api.get("/v1/metrics", as_="ops", params={"limit": limit}).status_code == 422
    forged = [
        _forged("m2:1:1"),  # another tag
        _forged("m1:x:y"),
        _forged("m1:1:1:1"),
        _forged("m1:" + "9" * 30 + ":1"),  # would overflow a BIGINT
        "garbage!",
        "",
        "\u00e9",
        "x" * 201,
    ]
    for cursor in forged:
        resp = api.get("/v1/metrics", as_="ops", params={"cursor": cursor})
        assert resp.status_code == 422, (cursor, resp.text)
        assert "cursor" in resp.json()["detail"]
