"""--live: streaming to the HTTP API (mocked transports and the real app, loopback only)."""

from __future__ import annotations

import json

import httpx
import pytest

from fleetml.simulate import COUNTERS, FleetSimulator, ReactiveBaselinePolicy, SimConfig
from fleetml.simulate.live import LiveStreamer, LiveStreamError, live_start, stream_live

URL = "http://127.0.0.1:8000"
CONFIG = SimConfig(masters=1, servants=1, days=0.01)  # 14 one-minute steps


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.slept = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def test_stream_declares_counters_then_posts_samples_and_events():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    fake = FakeClock()
    stats = stream_live(
        CONFIG,
        1,
        url=URL,
        api_key="k1",
        speed=60.0,
        transport=httpx.MockTransport(handler),
        sleep=fake.sleep,
        clock=fake.clock,
    )
    assert stats.steps == CONFIG.n_steps
    check, first = seen[0], seen[1]  # read the kinds, then declare the missing counters
    assert (check.method, check.url.path) == ("GET", "/v1/metric-kinds")
    assert (first.method, first.url.path) == ("PUT", "/v1/metric-kinds")
    assert json.loads(first.content) == {"kinds": {c: "counter" for c in COUNTERS}}
    posts = [r for r in seen if r.url.path == "/v1/metrics"]
    assert posts and all(r.url.params["register"] == "true" for r in posts)
    assert all(r.headers["Authorization"] == "Bearer k1" for r in seen)
    sample = json.loads(posts[0].content)["samples"][0]
    assert set(sample) == {"account_id", "ts", "values"} and sample["ts"].endswith("Z")
    assert stats.samples_sent == sum(len(json.loads(r.content)["samples"]) for r in posts)
    # paced at one simulated minute per wall second
    assert sum(fake.slept) == pytest.approx(CONFIG.n_steps * 60 / 60.0)


def test_connection_errors_are_retried_a_bounded_number_of_times():
    calls = []

    def handler(request):
        calls.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    fake = FakeClock()
    with pytest.raises(LiveStreamError, match="failed 4 times"):
        stream_live(
            CONFIG,
            1,
            url=URL,
            api_key=None,
            speed=60.0,
            transport=httpx.MockTransport(handler),
            sleep=fake.sleep,
            clock=fake.clock,
            max_retries=3,
            backoff_s=0.5,
        )
    assert len(calls) == 4
    assert fake.slept == [0.5, 1.0, 2.0]


def test_a_refused_batch_stops_the_stream_with_the_server_message():
    def handler(request):
        return httpx.Response(401, json={"detail": "invalid API key"})

    with pytest.raises(LiveStreamError, match="HTTP 401.*invalid API key"):
        stream_live(
            CONFIG,
            1,
            url=URL,
            api_key="bad",
            speed=1e9,
            transport=httpx.MockTransport(handler),
            sleep=lambda s: None,
        )


def test_live_start_keeps_samples_out_of_the_future():
    import pandas as pd

    now = pd.Timestamp("2026-03-01T12:00:00Z")
    start = live_start(days=1.0, speed=60.0, now=now)
    # the run ends when the wall clock reaches `now + 1 day / 60`
    assert start + pd.Timedelta(days=1) == now + pd.Timedelta(days=1) / 60


def test_streams_into_the_real_api(sqlite_settings):
    from fastapi.testclient import TestClient

    from fleetml.api import create_app
    from fleetml.store.engine import get_engine
    from fleetml.store.events import read_events
    from fleetml.store.keys import create_key
    from fleetml.store.metrics import metric_kinds, read_metrics
    from fleetml.store.migrate import upgrade

    engine = get_engine(sqlite_settings)
    upgrade(engine)
    with engine.begin() as conn:
        key, _ = create_key(conn, role="runtime", name="sim", actor="pytest")
        admin, _ = create_key(conn, role="admin", name="ops-lead", actor="pytest")
    config = SimConfig(
        masters=1,
        servants=1,
        days=0.02,
        start=live_start(0.02, 1e6).isoformat(),
        fault_rate_per_day=0.0,
    )
    sim = FleetSimulator(config, seed=2, record=False)
    with TestClient(create_app(sqlite_settings)) as client:
        # a runtime key may not declare metric kinds: the stream stops before sending anything
        streamer = LiveStreamer(client, api_key=key, speed=1e6, sleep=lambda s: None)
        with pytest.raises(LiveStreamError, match="fleetml metrics kinds --counter"):
            streamer.run(sim, ReactiveBaselinePolicy())
        assert read_metrics(engine).empty
        LiveStreamer(client, api_key=admin, speed=1e6).declare_counters()  # what an admin does
        streamer = LiveStreamer(client, api_key=key, speed=1e6, sleep=lambda s: None)
        stats = streamer.run(FleetSimulator(config, seed=2, record=False), ReactiveBaselinePolicy())
    assert stats.samples_sent > 0
    assert len(read_metrics(engine)) == stats.samples_sent
    assert metric_kinds(engine)["user_blocks"] == "counter"
    assert len(read_events(engine)) == stats.events_sent
