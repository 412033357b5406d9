"""The prediction API for the runtime: cached reads, filters, paging, on-demand scoring, roles."""

from __future__ import annotations

import pandas as pd
import pytest

from fleetml.services.tick import LiveLoop
from fleetml.serving.models import ModelSet, ServedAnomaly


def _fleet():
    from tests.serving.conftest import fit_anomaly, small_fleet

    frame = small_fleet(n_accounts=4, hours=20)
    return frame, fit_anomaly(frame)


def _fleet_store(api, bundle):
    """Register the 4 accounts (two groups) and serve ``bundle`` as the anomaly champion in
    the API process; returns the engine, the models and a function storing samples."""
    from fleetml.ingest.files import import_metrics_frame
    from fleetml.store.engine import get_engine

    engine = get_engine(api.settings)
    for k in range(4):
        api.register(f"acc-{k}", group="g-even" if k % 2 == 0 else "g-odd")

    def store(part):
        with engine.begin() as conn:
            import_metrics_frame(conn, part, register=False, actor="test")

    models = ModelSet(
        api.settings,
        champion_version=lambda f: 1 if f == "anomaly" else None,
        load=lambda f, v: ServedAnomaly(bundle, v),
    )
    state = api.client.app.state.fleetml
    state.predictions.check_s = 0.0
    state.models = state.ondemand.models = models
    return engine, models, store


@pytest.fixture
def ticked(api):
    """The API after one tick over a stored 4-account fleet (two groups)."""
    frame, bundle = _fleet()
    engine, models, store = _fleet_store(api, bundle)
    store(frame)
    now = int(frame["ts"].max().value // 1_000_000)
    LiveLoop(engine, api.settings, models=models).run(now_ms=now)
    return api, frame, now


def test_every_role_reads_predictions_and_no_key_is_refused(ticked):
    api, _, _ = ticked
    for role in ("runtime", "ops", "admin"):
        assert api.get("/v1/predictions", as_=role).status_code == 200
    resp = api.get("/v1/predictions", as_=None)
    assert resp.status_code == 401 and resp.json()["detail"]


def test_list_has_every_account_with_versions_and_staleness(ticked):
    api, frame, now = ticked
    body = api.get("/v1/predictions", as_="runtime").json()
    assert [p["account_id"] for p in body["predictions"]] == [f"acc-{k}" for k in range(4)]
    assert body["models"] == {"anomaly": 1, "risk": None}
    first = body["predictions"][0]
    assert first["group"] == "g-even"
    assert first["anomaly"]["model_version"] == 1
    assert 0.0 <= first["anomaly"]["score"] <= 1.0
    assert [r["horizon"] for r in first["risk"]] == ["1h", "6h", "24h"]
    assert all(r["model_version"] is None for r in first["risk"])
    assert first["fallback"] is True  # the risk heuristic answered
    assert first["stale"] is False
    assert pd.Timestamp(first["data_until"]) == pd.Timestamp(now, unit="ms", tz="UTC")


def test_filters_and_cursor_paging(ticked):
    api, _, _ = ticked
    odd = api.get("/v1/predictions?group=g-odd", as_="runtime").json()["predictions"]
    assert [p["account_id"] for p in odd] == ["acc-1", "acc-3"]
    two = api.get("/v1/predictions?account_id=acc-2&account_id=acc-0", as_="runtime").json()
    assert [p["account_id"] for p in two["predictions"]] == ["acc-0", "acc-2"]
    flagged = api.get("/v1/predictions?is_anomaly=true", as_="runtime").json()["predictions"]
    assert all(p["anomaly"]["is_anomaly"] for p in flagged)
    calm = api.get("/v1/predictions?at_risk=false", as_="runtime").json()["predictions"]
    assert len(calm) == 4
    seen, cursor = [], None
    while True:
        url = "/v1/predictions?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = api.get(url, as_="runtime").json()
        seen += [p["account_id"] for p in page["predictions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"acc-{k}" for k in range(4)]
    bad = api.get("/v1/predictions?cursor=!!not-a-cursor", as_="runtime")
    assert bad.status_code == 422 and "cursor" in bad.json()["detail"]
    assert api.get("/v1/predictions?limit=0", as_="runtime").status_code == 422


def test_one_account_and_unknown_account(ticked):
    api, _, _ = ticked
    resp = api.get("/v1/predictions/acc-1", as_="runtime")
    assert resp.status_code == 200
    body = resp.json()
    assert body["account_id"] == "acc-1" and body["models"]["anomaly"] == 1
    missing = api.get("/v1/predictions/nobody", as_="runtime")
    assert missing.status_code == 404 and "nobody" in missing.json()["detail"]


def test_the_anomaly_verdict_carries_the_score_its_rule_compares(ticked):
    """The tick stored the calibrated score beside the habituated one: both are served, and the
    habituated one is never above it."""
    from fleetml.store.engine import get_engine
    from fleetml.store.predictions import read_latest

    api, _, _ = ticked
    latest = read_latest(get_engine(api.settings), families=["anomaly"]).set_index("account_id")
    for acc in ("acc-0", "acc-1", "acc-2", "acc-3"):
        got = api.get(f"/v1/predictions/{acc}", as_="runtime").json()["anomaly"]
        assert got["calibrated_score"] == latest.loc[acc, "detail"]["calibrated_score"]
        assert got["score"] <= got["calibrated_score"] + 1e-12


def test_a_new_tick_is_served_without_restart(ticked):
    api, frame, now = ticked
    from fleetml.ingest.files import import_metrics_frame
    from fleetml.store.engine import get_engine

    nxt = frame[frame["ts"] == frame["ts"].max()].copy()
    nxt["ts"] = nxt["ts"] + pd.Timedelta("5min")
    engine = get_engine(api.settings)
    with engine.begin() as conn:
        import_metrics_frame(conn, nxt, register=False, actor="test")
    models = api.client.app.state.fleetml.models
    LiveLoop(engine, api.settings, models=models).run(now_ms=now + 300_000)
    body = api.get("/v1/predictions/acc-0", as_="runtime").json()
    assert pd.Timestamp(body["data_until"]) == pd.Timestamp(now + 300_000, unit="ms", tz="UTC")


def test_score_on_demand_with_and_without_posted_samples(ticked):
    api, frame, now = ticked
    plain = api.post("/v1/predictions/acc-1/score", as_="runtime")
    assert plain.status_code == 200, plain.text
    body = plain.json()
    from fleetml.schemas.predictions import PredictionOut

    PredictionOut.model_validate(body)  # the documented shape, though not re-validated on send
    assert body["on_demand"] is True and body["anomaly"]["model_version"] == 1
    assert pd.Timestamp(body["data_until"]) == pd.Timestamp(now, unit="ms", tz="UTC")
    ts = pd.Timestamp(now + 60_000, unit="ms", tz="UTC").isoformat()
    sample = {"account_id": "acc-1", "ts": ts, "values": {"reply_latency_ms": 5000.0}}
    hot = api.post("/v1/predictions/acc-1/score", as_="runtime", json={"samples": [sample]})
    assert hot.status_code == 200, hot.text
    hot = hot.json()
    assert pd.Timestamp(hot["data_until"]) == pd.Timestamp(ts)
    assert hot["anomaly"]["score"] >= body["anomaly"]["score"]
    # nothing posted was stored
    stored = api.get("/v1/metrics?account_id=acc-1&from=" + ts, as_="ops").json()
    assert not stored.get("samples") and not stored.get("rows")


def test_on_demand_scores_continue_the_ticks_state(api):
    """On-demand scoring continues what the tick stored for the account (calibration context,
    habituation, the rule's run): with nothing new it answers what the tick answered, and over
    a sample the tick has not scored yet it answers what the next tick then stores. Before, it
    calibrated the newest row alone and reported the calibrated score as the score, which could
    be several times the tick's."""
    from fleetml.store.predictions import read_latest

    frame, bundle = _fleet()
    ts = pd.DatetimeIndex(frame["ts"].unique()).sort_values()
    engine, models, store = _fleet_store(api, bundle)
    api.client.app.state.fleetml.ondemand.refresh_s = 0.0
    store(frame[frame["ts"] <= ts[-4]])
    loop = LiveLoop(engine, api.settings, models=models)
    for t in ts[-12:-3]:
        loop.run(now_ms=int(t.value // 1_000_000))

    def stored(account):
        row = read_latest(engine, accounts=[account], families=["anomaly"]).iloc[0]
        return float(row["score"]), row["detail"]["calibrated_score"], bool(row["flag"])

    def on_demand(account):
        resp = api.post(f"/v1/predictions/{account}/score", as_="runtime")
        assert resp.status_code == 200, resp.text
        got = resp.json()["anomaly"]
        return got["score"], got["calibrated_score"], got["is_anomaly"]

    accounts = ["acc-0", "acc-1", "acc-2", "acc-3"]
    for account in accounts:  # nothing new since the tick: the tick's answer
        assert on_demand(account) == pytest.approx(stored(account), rel=1e-9)
    store(frame[frame["ts"] == ts[-3]])
    ahead = {account: on_demand(account) for account in accounts}
    loop.run(now_ms=int(ts[-3].value // 1_000_000))
    for account in accounts:  # a sample the tick had not scored: the tick's next answer
        assert ahead[account] == pytest.approx(stored(account), rel=1e-9)
    assert any(ahead[a][0] < ahead[a][1] - 1e-6 for a in accounts)  # some score habituated


def test_on_demand_scores_an_account_never_ticked_with_its_calibration_context(api):
    """No tick has scored the account: its newest row is calibrated over the rows before it,
    as a batch score of its history calibrates it (before, the row was calibrated alone)."""
    frame, bundle = _fleet()
    _, _, store = _fleet_store(api, bundle)
    store(frame)
    batch = bundle.predict(frame).groupby("account_id").tail(1).set_index("account_id")
    for account in ("acc-0", "acc-1"):
        resp = api.post(f"/v1/predictions/{account}/score", as_="runtime")
        assert resp.status_code == 200, resp.text
        got = resp.json()["anomaly"]["calibrated_score"]
        assert got == pytest.approx(batch.loc[account, "calibrated_score"], rel=1e-9)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"samples": [{"account_id": "acc-2", "ts": 1, "values": {"x": 1}}]}', 422, "acc-2"),
        (b'{"samples": [{"account_id": "acc-1", "ts": 1, "values": {"x": NaN}}]}', 422, "NaN"),
        (b"[1, 2]", 422, "samples"),
    ],
)
def test_score_refuses_bad_bodies_with_4xx(ticked, body, status, words):
    api, _, _ = ticked
    resp = api.post(
        "/v1/predictions/acc-1/score",
        as_="runtime",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == status, resp.text
    text = resp.text
    assert words in text


def test_score_unknown_account_is_404(ticked):
    api, _, _ = ticked
    from fleetml.store.engine import get_engine

    with get_engine(api.settings).begin() as conn:
        conn.exec_driver_sql("DELETE FROM samples")
    resp = api.post("/v1/predictions/ghost/score", as_="runtime")
    assert resp.status_code == 404, resp.text


@pytest.mark.parametrize("account", ["a%00b", "x" * 300, "%F0%9F%92%A5", "..", "a b"])
def test_hostile_account_ids_get_4xx(ticked, account):
    api, _, _ = ticked
    for method, url in (("GET", f"/v1/predictions/{account}"),
                        ("POST", f"/v1/predictions/{account}/score")):  # fmt: skip
        resp = api.request(method, url, as_="runtime")
        assert 400 <= resp.status_code < 500, (method, account, resp.status_code, resp.text)
        assert resp.json()["detail"]
