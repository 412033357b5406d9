"""The Node.js example client (examples/node) against a real ``fleetml serve``; needs ``node``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import fleetml

REPO = Path(fleetml.__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "node"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(NODE is None, reason="node is not on PATH; the Node.js example needs it"),
]

# Drives fleetml.mjs: post samples, read them back, ask for predictions; prints one JSON object.
DRIVER = """
import * as fleet from %(module)s;

const conn = fleet.connect({ url: process.env.FLEETML_URL, key: process.env.FLEETML_KEY });
const samples = [0, 1, 2].map((i) => ({
  account_id: i < 2 ? "wa-1" : "wa-2",
  ts: 1767225600 + 60 * i,
  values: { cpu_pct: 10 + i, queue_depth: i === 1 ? null : 3 },
}));
const out = { stored: await fleet.postMetrics(conn, samples, { register: true }) };
out.read = await fleet.readMetrics(conn, { accountIds: ["wa-1"], metrics: ["cpu_pct"] });
try {
  await fleet.postMetrics(conn, [{ account_id: "wa-1", ts: "never", values: { cpu_pct: 1 } }]);
} catch (err) {
  out.invalid = { name: err.name, status: err.status, detail: err.detail, errors: err.errors };
}
// the embedded scheduler scores the posted samples within a tick or two
for (let i = 0; i < 60; i++) {
  try {
    const items = await fleet.predictions(conn, { pageSize: 1 });
    out.predictions = { status: 200, items };
    if (items.length >= 2) break;
  } catch (err) {
    out.predictions = { status: err.status, detail: err.detail };
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
}
try {
  out.one = await fleet.prediction(conn, "wa-1");
} catch (err) {
  out.one = { status: err.status, detail: err.detail };
}
console.log(JSON.stringify(out));
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"fleetml serve exited with {proc.returncode}; see serve.log")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("fleetml serve did not become healthy in time")


@pytest.fixture
def served(home, tmp_path) -> dict[str, str]:
    """A real ``fleetml serve`` on a free port over a fresh home, and an admin key for it."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "FLEETML_HOME": str(home),
        # the scheduler inside scores what the client posts within a second or two
        "FLEETML_SCORE_EVERY": "1",
        "FLEETML_TICK_CLOCK": "data",
    }
    port = _free_port()
    cmd = [sys.executable, "-m", "fleetml.cli", "serve", "--worker", "--port", str(port)]
    log = (tmp_path / "serve.log").open("wb")  # a file, not a pipe nobody drains
    proc = subprocess.Popen(
        [*cmd, "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)  # serve migrates the store before it answers
        created = subprocess.run(
            [sys.executable, "-m", "fleetml.cli", "keys", "create", "--role", "admin"]
            + ["--name", "node-example"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        key = created.stdout.strip().splitlines()[-1]
        yield {**env, "FLEETML_URL": url, "FLEETML_KEY": key}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _node(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [NODE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_node_client_posts_and_reads_metrics_against_a_real_server(served, tmp_path):
    driver = tmp_path / "driver.mjs"
    module = json.dumps((EXAMPLE / "fleetml.mjs").as_uri())
    driver.write_text(DRIVER % {"module": module})
    done = _node([str(driver)], served, tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])

    assert out["stored"]["samples"] == 3
    assert sorted(out["stored"]["registered"]) == ["wa-1", "wa-2"]
    read = out["read"]["samples"]
    assert [s["account_id"] for s in read] == ["wa-1", "wa-1"]
    assert [s["values"] for s in read] == [{"cpu_pct": 10.0}, {"cpu_pct": 11.0}]
    assert read[0]["ts"].startswith("2026-01-01T00:00:00")

    invalid = out["invalid"]
    assert (invalid["name"], invalid["status"]) == ("FleetmlError", 422)
    assert invalid["errors"][0]["index"] == 0 and invalid["errors"][0]["field"] == "ts"

    predictions = out["predictions"]
    assert predictions["status"] == 200, predictions
    # one account a page: the client followed the cursor to the second
    assert [p["account_id"] for p in predictions["items"]] == ["wa-1", "wa-2"]
    one = out["one"]
    assert one["account_id"] == "wa-1" and one["fallback"] is True  # nothing trained yet
    assert [r["horizon"] for r in one["risk"]] == ["1h", "6h", "24h"]


def test_node_example_prints_at_risk_accounts_or_says_why_not(served):
    done = _node(["example.mjs"], served, EXAMPLE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()  # either the accounts or "no account is at risk"


def test_node_example_without_a_key_says_how_to_get_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FLEETML_KEY"}
    done = _node(["example.mjs"], env, EXAMPLE)
    assert done.returncode == 2
    assert "fleetml keys create" in done.stderr
