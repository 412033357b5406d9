"""bench/closed_loop.py on a tiny fleet: the three arms run and shadow mode changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "closed_loop.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_closed_loop_bench_runs_on_a_tiny_fleet(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    args = ["--seeds", "1,2", "--days", "0.1", "--warmup-days", "0.5", "--masters", "2"]
    args += ["--servants", "1", "--train-days", "1", "--allow-degraded"]
    args += ["--keep", str(tmp_path / "work")]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in (
        "seeds",
        "failed_messages_reduction",
        "p95_latency_reduction",
        "unneeded_failover_share",
        "enforcement_violations",
        "shadow_equals_baseline",
    ):
        assert key in result
    assert result["seeds"] == [1, 2]
    assert result["shadow_equals_baseline"] is True
    assert result["enforcement_violations"] == 0
    auto = result["per_seed"]["auto"]["1"]
    assert auto["ticks"] == 29  # 0.1 day at one tick per 5-min step
    assert auto["tick_mean_s"] is not None  # fleetml ran through the tick
    assert result["per_seed"]["shadow"]["1"]["ticks"] == 29
    # each failover names the fault it answered (kind, onset and end step), when there is one
    for arm in ("reactive", "auto"):
        for seed in ("1", "2"):
            for step, account, needed, kind, onset, end in result["per_seed"][arm][seed][
                "failover_log"
            ]:
                assert isinstance(account, str) and isinstance(needed, bool)
                if kind is not None:
                    assert onset <= step + 12 and (not needed or end > step)
