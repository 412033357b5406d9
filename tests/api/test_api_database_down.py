"""When the database stops answering: every call gets 503 with Retry-After in the error shape,
/readyz says why, nothing half-written remains, and the API recovers when the database does."""

from __future__ import annotations

import sqlalchemy as sa


def _swap_engine(app, engine) -> None:
    state = app.state.fleetml
    state.engine = engine
    state.ingestor.engine = engine
    state.ingestor.writer.engine = engine


def _db_errors(api) -> float:
    text = api.get("/metrics", as_=None).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("fleetml_database_errors_total")
    )


def test_a_database_outage_is_503_with_retry_after_and_nothing_is_stored(sqlite_api, tmp_path):
    api = sqlite_api
    app = api.client.app
    api.register("acc1")
    assert api.get("/v1/accounts", as_="ops").status_code == 200  # keys now cached
    good = app.state.fleetml.engine
    # a file where the database's folder should be: every connection fails to open
    (tmp_path / "gone").write_text("not a folder")
    gone = sa.create_engine(f"sqlite:///{tmp_path}/gone/fleetml.db")
    errors_before = _db_errors(api)
    _swap_engine(app, gone)
    try:
        sample = {"samples": [{"account_id": "acc1", "ts": 1_769_000_000, "values": {"cpu": 1}}]}
        for method, path, kw in [
            ("GET", "/v1/accounts", {}),
            ("POST", "/v1/metrics", {"json": sample}),
            ("POST", "/v1/accounts", {"json": {"account_id": "acc2"}}),
        ]:
            resp = api.request(method, path, as_="admin", **kw)
            assert resp.status_code == 503, (path, resp.text)
            assert resp.headers["retry-after"] == "1"
            body = resp.json()
            assert "unavailable" in body["detail"] and body["errors"] == []
        ready = api.get("/readyz", as_=None)
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"
        assert "database unreachable" in ready.json()["detail"]
        assert _db_errors(api) >= errors_before + 4  # counted for Prometheus alerting
    finally:
        _swap_engine(app, good)
    # back: nothing of the refused calls was stored, and the API answers again
    with good.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM samples")).scalar() == 0
    assert api.get("/v1/accounts/acc2").status_code == 404
    assert api.get("/readyz", as_=None).status_code == 200
    assert api.post("/v1/metrics", json=sample).status_code == 200


def test_any_other_database_error_is_a_500_in_the_error_shape(sqlite_api, monkeypatch):
    """Not an outage (a bug, a constraint the API should have checked): 500, JSON, no detail
    that quotes data, and a message that does not claim a read stored nothing."""
    from fastapi.testclient import TestClient

    import fleetml.store.accounts as accounts

    def broken(*a, **k):
        raise sa.exc.IntegrityError("INSERT ...", {"secret": "x"}, Exception("boom"))

    monkeypatch.setattr(accounts, "list_accounts", broken)
    client = TestClient(sqlite_api.client.app, raise_server_exceptions=False)
    resp = client.get("/v1/accounts", headers=sqlite_api.headers("admin"))
    assert resp.status_code == 500
    body = resp.json()
    assert body["errors"] == [] and "IntegrityError" in body["detail"]
    assert "secret" not in resp.text
