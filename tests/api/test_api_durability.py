"""A 2xx answer means durable: acknowledged samples survive a kill -9 of the server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pandas as pd
import pytest

import fleetml

REPO = Path(fleetml.__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"fleetml serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("fleetml serve did not become healthy in time")


@pytest.mark.slow
def test_acknowledged_batch_survives_kill_9(settings):
    """On SQLite and on PostgreSQL (``settings`` is parametrised over both)."""
    from fleetml.store.engine import dispose_engines, get_engine
    from fleetml.store.keys import create_key
    from fleetml.store.migrate import upgrade

    engine = get_engine(settings)
    upgrade(engine)
    with engine.begin() as conn:
        key, _ = create_key(conn, role="runtime", name="bot", actor="pytest")
    dispose_engines()

    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "FLEETML_HOME": str(settings.home_path),
        **({"FLEETML_DATABASE_URL": settings.database_url} if settings.database_url else {}),
    }
    cmd = [
        sys.executable,
        "-m",
        "fleetml.cli",
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        samples = [
            {"account_id": f"wa-{i % 20}", "ts": 1_767_225_600 + i, "values": {"cpu_pct": i * 0.5}}
            for i in range(2_000)
        ]
        resp = httpx.post(
            f"{url}/v1/metrics?register=true",
            content=orjson.dumps({"samples": samples}),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=30.0,
        )
        assert resp.status_code == 200, resp.text
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown, no checkpoint, no flush
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    from fleetml.store.metrics import read_metrics

    dispose_engines()  # read back through a fresh connection, as a restarted server would
    stored = read_metrics(get_engine(settings))
    assert len(stored) == 2_000
    row = stored[stored["account_id"] == "wa-7"]
    one = row[row["ts"] == pd.Timestamp((1_767_225_600 + 1_987) * 1000, unit="ms", tz="UTC")]
    assert one["cpu_pct"].tolist() == [1_987 * 0.5]
