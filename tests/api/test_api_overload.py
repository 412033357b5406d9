"""Saturated ingest: when the store cannot keep up, the API answers 503 with Retry-After at once
instead of queueing request bodies in memory without bound; what it accepted is stored whole,
and it takes batches again as soon as the backlog drains."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

T0 = 1_769_000_000


def _body(batch: int, n: int = 400) -> bytes:
    samples = [
        {"account_id": "acc1", "ts": T0 + batch * n + i, "values": {"cpu": 0.5, "mem": 0.25}}
        for i in range(n)
    ]
    return orjson.dumps({"samples": samples})  # about 28 KB


@pytest.fixture
def slow_store(monkeypatch):
    """The store's sample writer blocks until ``release`` is set (a saturated disk)."""
    import fleetml.store.metrics as metrics

    release = threading.Event()
    entered = threading.Event()
    real = metrics.write_samples

    def stalled(conn, rows):
        entered.set()
        release.wait(timeout=60)
        return real(conn, rows)

    monkeypatch.setattr(metrics, "write_samples", stalled)
    return release, entered


def test_saturated_ingest_answers_503_with_retry_after_and_recovers(sqlite_settings, slow_store):
    from fleetml.api import create_app
    from fleetml.store.engine import get_engine
    from fleetml.store.keys import create_key
    from fleetml.store.migrate import upgrade

    release, entered = slow_store
    body_size = len(_body(0))
    # room for two bodies in flight, not three
    limit = max(64 * 1024, 2 * body_size)
    settings = sqlite_settings.model_copy(update={"max_inflight_body_bytes": limit})
    assert 2 * body_size <= settings.max_inflight_body_bytes < 3 * body_size
    engine = get_engine(settings)
    upgrade(engine)
    with engine.begin() as conn:
        key, _ = create_key(conn, role="runtime", name="bot", actor="pytest")
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with TestClient(create_app(settings)) as client:

        def post(batch: int):
            return client.post("/v1/metrics?register=true", content=_body(batch), headers=headers)

        with ThreadPoolExecutor(max_workers=8) as pool:
            first = pool.submit(post, 0)
            assert entered.wait(timeout=30)  # the first batch is stuck in the store
            second = pool.submit(post, 1)
            writer = client.app.state.fleetml.ingestor.writer
            deadline = time.monotonic() + 30
            while writer._queue.qsize() < 1:  # the second batch waits behind the first
                assert time.monotonic() < deadline, "the second batch never reached the writer"
                time.sleep(0.01)
            try:
                refused = [pool.submit(post, b).result(timeout=30) for b in range(2, 8)]
            finally:
                release.set()
            for resp in refused:  # answered while the store is still stuck: nothing queued
                assert resp.status_code == 503, resp.text
                assert resp.headers["retry-after"] == "1"
                assert "in flight" in resp.json()["detail"]
            accepted = [first.result(timeout=60), second.result(timeout=60)]
        assert [r.status_code for r in accepted] == [200, 200], [r.text for r in accepted]
        # the backlog drained: batches are taken again
        assert post(8).status_code == 200
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM samples")).scalar()
    assert stored == 3 * 400  # the two held batches and the later one, whole; none refused
