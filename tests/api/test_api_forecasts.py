"""GET /v1/forecasts: served from the cache, computed on demand, at the data's own step."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

GROUPS = {"a0": "eu", "a1": "eu", "b0": "us"}


def load_frame(step: str = "1h", days: float = 3, accounts=("a0", "a1")) -> pd.DataFrame:
    """A daily-cycle gauge ``cpu`` and a counter ``msgs_sent`` growing 60 an hour per account."""
    n = int(pd.Timedelta(f"{days}D") / pd.Timedelta(step))
    ts = pd.date_range("2026-02-01", periods=n, freq=step, tz="UTC").astype("datetime64[ms, UTC]")
    per_day = pd.Timedelta("1D") / pd.Timedelta(step)
    per_step = 60 * pd.Timedelta(step) / pd.Timedelta("1h")
    cpu = 40 + 10 * np.sin(2 * np.pi * np.arange(n) / per_day)
    return pd.concat(
        [
            pd.DataFrame(
                {"ts": ts, "account_id": a, "cpu": cpu + i, "msgs_sent": per_step * np.arange(n)}
            )
            for i, a in enumerate(accounts)
        ],
        ignore_index=True,
    )


def store(engine, frame: pd.DataFrame, groups: dict[str, str]) -> None:
    """Register the accounts in their groups, declare msgs_sent a counter, import the frame."""
    from fleetml.ingest.files import import_metrics_frame
    from fleetml.store.accounts import create_account
    from fleetml.store.metrics import declare_metric_kinds, ensure_metric_kinds

    with engine.begin() as conn:
        for account, group in groups.items():
            create_account(conn, account_id=account, group=group, actor="test")
        ensure_metric_kinds(conn, ["msgs_sent"], {"msgs_sent": "counter"})
        declare_metric_kinds(conn, {"msgs_sent": "counter"}, actor="test")
        import_metrics_frame(conn, frame, register=False, actor="test")


@pytest.fixture
def hourly(api, engine):
    store(engine, load_frame("1h", days=3, accounts=tuple(GROUPS)), GROUPS)
    return api


def _get(api, as_="ops", **params):
    return api.get("/v1/forecasts", as_=as_, params=params)


def test_group_forecast_comes_from_the_hourly_refresh(hourly, engine, settings):
    from fleetml.services.forecasting import refresh_forecasts

    refresh_forecasts(engine, settings, now_ms=1_900_000_000_000)
    resp = _get(hourly, group="eu")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["cached"] is True
    assert body["computed_at"].startswith("2030-03-17")  # the refresh's clock, not a new run
    assert (body["metric"], body["scope"], body["target"]) == ("msgs_sent", "group", "eu")
    assert body["horizon"] == settings.forecast_horizon == len(body["points"])
    assert body["model_version"] is None and body["fallback"] is True
    assert body["values"] == "rate_per_minute"
    assert body["points"][0]["yhat"] == pytest.approx(2.0)  # two accounts, 1 message a minute


def test_cache_hit_serves_the_stored_row(hourly, engine):
    from fleetml.store.audit import now_ms
    from fleetml.store.forecasts import write_forecasts

    point = {"ts": "2026-02-04T00:00:00.000Z", "yhat": 123.0}
    bounds = {"lo80": 120.0, "hi80": 126.0, "lo95": 118.0, "hi95": 128.0}
    with engine.begin() as conn:
        write_forecasts(
            conn,
            [
                {
                    "scope": "account",
                    "target": "a0",
                    "metric": "cpu",
                    "horizon": 1,
                    "computed_at": now_ms(),
                    "model_version": 9,
                    "payload": {
                        "step_seconds": 3600.0,
                        "fallback": False,
                        "points": [{**point, **bounds}],
                        "peaks": [point],
                    },
                }
            ],
        )
    body = _get(hourly, account_id="a0", metric="cpu", horizon=1).json()
    assert body["cached"] is True and body["model_version"] == 9
    assert body["points"][0]["yhat"] == 123.0 and body["peaks"][0]["yhat"] == 123.0


def test_a_missing_forecast_is_computed_then_cached(hourly, engine):
    from fleetml.store.forecasts import read_forecast

    first = _get(hourly, account_id="a1", metric="cpu", horizon=5)
    assert first.status_code == 200, first.text
    assert first.json()["cached"] is False
    assert read_forecast(engine, scope="account", target="a1", metric="cpu", horizon=5)
    second = _get(hourly, account_id="a1", metric="cpu", horizon=5).json()
    assert second["cached"] is True
    assert second["points"] == first.json()["points"]


@pytest.mark.parametrize("step", ["1h", "5min"])
def test_step_is_the_data_step_and_the_horizon_is_honoured(api, engine, step):
    # two days of 5-minute samples (576 points) would be coarsened by the CLI's 400-point rule
    frame = load_frame(step, days=2, accounts=("a0", "a1"))
    store(engine, frame, {"a0": "eu", "a1": "eu"})
    resp = _get(api, account_id="a0", metric="cpu", horizon=7)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    seconds = pd.Timedelta(step).total_seconds()
    assert body["step_seconds"] == seconds and body["horizon"] == 7
    stamps = pd.to_datetime([p["ts"] for p in body["points"]], utc=True)
    assert len(stamps) == 7
    assert set(stamps.to_series().diff().dropna().dt.total_seconds()) == {seconds}
    assert stamps[0] == frame["ts"].max() + pd.Timedelta(step)
    assert not body["history_cut"]
    group = _get(api, group="eu", metric="cpu", horizon=3).json()
    assert group["step_seconds"] == seconds and len(group["points"]) == 3


@pytest.mark.parametrize("role", ["runtime", "ops", "admin"])
def test_every_role_may_read(hourly, role):
    assert _get(hourly, as_=role, group="us").status_code == 200


def test_a_key_is_required(hourly):
    assert _get(hourly, as_=None, group="us").status_code == 401


def test_clear_errors(hourly):
    both = _get(hourly, group="eu", account_id="a0")
    neither = _get(hourly)
    for resp in (both, neither):
        assert resp.status_code == 422
        assert "exactly one of 'group'" in resp.json()["detail"]
    unknown_group = _get(hourly, group="mars")
    assert unknown_group.status_code == 404
    assert "'mars'" in unknown_group.json()["detail"] and "eu" in unknown_group.json()["detail"]
    assert _get(hourly, account_id="nobody").status_code == 404
    metric = _get(hourly, group="eu", metric="temperature")
    assert metric.status_code == 422
    assert "'temperature'" in metric.json()["detail"] and "cpu" in metric.json()["detail"]
    for horizon in ("0", "1001", "-3", "ten", "1.5"):
        assert _get(hourly, group="eu", horizon=horizon).status_code == 422, horizon


def test_no_history_is_a_404_not_a_500(api, engine):
    api.register("lonely", group="solo")
    store(engine, load_frame(accounts=("a0",)), {"a0": "eu"})
    resp = _get(api, account_id="lonely", metric="cpu")
    assert resp.status_code == 404
    assert "lonely" in resp.json()["detail"]


@pytest.mark.parametrize(
    "params",
    [
        {"group": "x" * 129},
        {"account_id": "' OR 1=1 --"},
        {"group": "eu", "metric": "m" * 65},
        {"group": "eu", "metric": "cpu'; DROP TABLE samples; --"},
        {"group": "\u202e\U0001f4a5"},
        {"account_id": "a0", "horizon": "99999999999999999999"},
        {"group": "%00"},
    ],
)
def test_hostile_input_is_never_a_5xx(hourly, params):
    resp = _get(hourly, **params)
    assert 400 <= resp.status_code < 500, resp.text


def test_accuracy_compares_past_forecasts_with_what_happened(hourly, engine, settings):
    from fleetml.services.forecasting import refresh_forecasts

    start = pd.Timestamp("2026-02-01", tz="UTC")
    for hours in (24, 36, 48):  # three hourly jobs, each 24 steps ahead; the data runs to 72 h
        refresh_forecasts(
            engine, settings, now_ms=int((start + pd.Timedelta(hours=hours)).value // 1e6)
        )
    body = hourly.get("/v1/forecasts/accuracy", params={"group": "eu", "days": 30}).json()
    assert (body["group"], body["metric"], body["step_seconds"]) == ("eu", "msgs_sent", 3600.0)
    runs = body["runs"]
    assert [r["computed_at"][:13] for r in runs] == [
        "2026-02-02T00",
        "2026-02-02T12",
        "2026-02-03T00",
    ]
    assert [r["n"] for r in runs] == [24, 24, 23]  # the last one's 72 h point has not come yet
    # two accounts sending one message a minute each: the fallback forecasts 2.0 exactly
    assert all(r["smape"] == pytest.approx(0.0, abs=1e-6) for r in runs)
    assert runs[0]["coverage95"] == 1.0
    overlay = body["overlay"]
    assert overlay["computed_at"].startswith("2026-02-02T12")  # the newest that fully came true
    assert all(p["actual"] == pytest.approx(2.0) for p in overlay["points"])
    missing = hourly.get("/v1/forecasts/accuracy", params={"group": "nowhere"})
    assert missing.status_code == 200 and missing.json()["runs"] == []
