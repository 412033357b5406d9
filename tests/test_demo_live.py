"""The README's main command end to end: ``fleetml demo`` trains models at start, serves the API
with the scheduler inside, streams the fleet, and predictions change from tick to tick."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_serves_live_predictions_and_alerts(sqlite_settings):
    port = _port()
    env = {
        **os.environ,
        "FLEETML_HOME": str(sqlite_settings.home_path),
        "FLEETML_SCORE_EVERY_S": "3",
        "FLEETML_MODEL_CHECK_S": "2",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable, "-m", "fleetml.cli", "demo", "--port", str(port), "--masters", "3",
        "--servants", "1", "--history-days", "2", "--live-days", "0.5", "--speed", "600",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    unserved: list[str] = []
    try:
        keys_file = sqlite_settings.home_path / "demo-keys.json"
        deadline = time.monotonic() + 400
        seen: list[dict] = []
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(2)
            if not keys_file.exists():
                continue
            keys = json.loads(keys_file.read_text())
            try:
                resp = httpx.get(
                    f"{url}/v1/predictions",
                    headers={"Authorization": f"Bearer {keys['runtime']}"},
                    timeout=5,
                )
            except httpx.HTTPError:
                continue
            if resp.status_code != 200 or not resp.json()["predictions"]:
                continue
            body = resp.json()
            seen.append(body)
            if len({b["computed_at"] for b in seen}) >= 3:
                break
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert len({b["computed_at"] for b in seen}) >= 3, "predictions did not change"
        last = seen[-1]
        assert len(last["predictions"]) == 6  # 3 masters, 1 servant each
        # The demo trained both families at start. Each is served unless its first version failed
        # the sanity check on this small, random fleet (its start follows the wall clock, so day
        # boundaries move between runs); then readiness says so and a documented heuristic
        # answers (fallback: true). A version must exist either way: training must not crash.
        ready = httpx.get(f"{url}/readyz", timeout=5).json()
        for family in ("anomaly", "risk"):
            if last["models"][family] is None:
                assert family in ready["degraded"], ready
                unserved.append(family)
            else:
                assert family not in ready.get("degraded", {}), ready
        if last["models"]["risk"] is None:
            assert all(p["fallback"] for p in last["predictions"])
        first_until = {p["account_id"]: p["data_until"] for p in seen[0]["predictions"]}
        later = {p["account_id"]: p["data_until"] for p in last["predictions"]}
        assert any(later[a] > first_until[a] for a in later)  # the stream moved them on
        assert not any(p["stale"] for p in last["predictions"])
        alerts = httpx.get(
            f"{url}/v1/alerts?state=open",
            headers={"Authorization": f"Bearer {keys['admin']}"},
            timeout=5,
        )
        assert alerts.status_code == 200
        jobs = httpx.get(
            f"{url}/v1/jobs?job=score",
            headers={"Authorization": f"Bearer {keys['admin']}"},
            timeout=5,
        ).json()
        assert any(r["outcome"] == "ok" for r in jobs["runs"])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    output = proc.stdout.read()
    for family in unserved:
        # Registered but not made champion: the sanity check refused it, which the demo reports.
        assert re.search(rf"demo: {family}: version \d+, champion None", output), output[-3000:]
