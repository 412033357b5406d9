"""GET /v1/predictions/{id}/history: what the tick predicted for one account over time."""

from __future__ import annotations

import pytest


@pytest.fixture
def ticked(api, engine):
    from fleetml.ingest.files import import_metrics_frame
    from fleetml.services.tick import LiveLoop
    from tests.serving.conftest import small_fleet

    frame = small_fleet(n_accounts=2, hours=6)
    with engine.begin() as conn:
        import_metrics_frame(conn, frame, register=True, actor="test")
    loop = LiveLoop(engine, api.settings)
    last = int(frame["ts"].max().value // 1_000_000)
    for back in (10, 5, 0):  # three ticks, five minutes apart
        loop.run(now_ms=last - back * 60_000)
    return api, last


def test_history_lists_each_tick_per_family_and_horizon_oldest_first(ticked):
    api, last = ticked
    body = api.get("/v1/predictions/acc-1/history", as_="runtime").json()
    assert body["account_id"] == "acc-1"
    points = body["points"]
    anomaly = [p for p in points if p["family"] == "anomaly"]
    risk_1h = [p for p in points if p["family"] == "risk" and p["horizon"] == "1h"]
    assert len(anomaly) == 3 and len(risk_1h) == 3
    stamps = [p["ts"] for p in anomaly]
    assert stamps == sorted(stamps) and stamps[-1].startswith("2026-03-01T05:55")
    assert all(0 <= p["score"] <= 1 for p in risk_1h)
    # the served model's (here the fallback's) thresholds, one per horizon it predicts
    assert set(body["thresholds"]) == {p["horizon"] for p in points if p["family"] == "risk"}
    assert all(0 < t < 1 for t in body["thresholds"].values())


def test_history_filters_by_range_family_and_limit(ticked):
    api, last = ticked
    only = api.get(
        "/v1/predictions/acc-1/history",
        params={"family": "anomaly", "from": (last - 6 * 60_000) / 1000},
    ).json()["points"]
    assert [p["family"] for p in only] == ["anomaly", "anomaly"]
    newest = api.get("/v1/predictions/acc-1/history", params={"limit": 1}).json()["points"]
    assert len(newest) == 1 and newest[0]["ts"].startswith("2026-03-01T05:55")
    assert api.get("/v1/predictions/nobody/history").json()["points"] == []
    bad = api.get("/v1/predictions/acc-1/history", params={"family": "forecast"})
    assert bad.status_code == 422
