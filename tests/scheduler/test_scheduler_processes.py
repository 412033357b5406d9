"""Two real ``fleetml worker`` processes on one store: one active, the other takes over on kill -9.

The workers run the fake jobs of ``_fake_jobs.py`` (``FLEETML_WORKER_JOBS``) every 0.3 s. The
active one's ``forecast`` hangs, so it dies mid-run: the new leader must mark that run interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _scheduler_helpers import read_runs, wait_for

from fleetml.store.jobs import INTERRUPTED

HERE = Path(__file__).resolve().parent


def _spawn(tmp_path: Path, name: str, **extra: str) -> tuple[subprocess.Popen, Path]:
    env = {
        **os.environ,
        "FLEETML_WORKER_JOBS": "_fake_jobs:jobs",
        "FLEETML_SCORE_EVERY_S": "0.3",
        "FLEETML_FORECAST_EVERY_S": "0.3",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
        **extra,
    }
    log = tmp_path / f"worker-{name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleetml.cli", "worker", "--poll", "0.2"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, log


def _pids(engine) -> set[int]:
    return {r["pid"] for r in read_runs(engine)}


@pytest.mark.slow
def test_one_active_worker_and_the_standby_takes_over_after_kill_9(engine, tmp_path):
    a, log_a = _spawn(tmp_path, "a", FAKE_FORECAST_SLEEP="120")
    b = None
    try:
        wait_for(lambda: a.pid in _pids(engine), 30, "the first worker to record runs")
        b, log_b = _spawn(tmp_path, "b")
        wait_for(lambda: "standby" in log_b.read_text(), 30, "the second worker to stand by")
        time.sleep(1.0)  # several score periods with both alive
        assert _pids(engine) == {a.pid}, "only the active worker may run jobs"
        hung = wait_for(
            lambda: read_runs(engine, pid=a.pid, job="forecast", outcome="running"),
            10,
            "the active worker's hanging forecast",
        )

        a.send_signal(signal.SIGKILL)
        a.wait(timeout=10)
        killed_at = time.monotonic()
        wait_for(lambda: b.pid in _pids(engine), 10, "the standby to take over")
        assert time.monotonic() - killed_at < 10

        [interrupted] = read_runs(engine, id=hung[0]["id"])
        assert (interrupted["outcome"], interrupted["error"]) == ("error", INTERRUPTED)
        assert "active:" in log_a.read_text()
        assert "active:" in log_b.read_text()

        b.send_signal(signal.SIGTERM)  # graceful: finish the running job, release the lock
        assert b.wait(timeout=20) == 0
        assert "released" in log_b.read_text()
        assert not read_runs(engine, pid=b.pid, outcome="running")
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
