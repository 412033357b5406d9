"""bench/alerts.py: its judging of alerts on a hand-made ground truth, and a run on a tiny fleet."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "alerts.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_alerts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


START = pd.Timestamp("2026-01-08T00:00Z")
END = START + pd.Timedelta(days=1)


def ms(ts: str) -> int:
    return pd.Timestamp(ts).value // 1_000_000


def alert(i, account, kind, opened, horizon=None):
    detail = {"shortest_horizon": horizon} if horizon else {"score": 0.9}
    return {
        "id": i,
        "account_id": account,
        "kind": kind,
        "opened_at": ms(opened),
        "detail": {"shortest_horizon": "24h"} if horizon else detail,  # refreshed later
        "opened_detail": detail,
    }


TRUTH = {
    "end": "2026-01-10T00:00:00+00:00",
    "faults": [
        {  # foreseen by the anomaly alert at 09:30 (inside the precursor)
            "account_id": "a",
            "kind": "crash",
            "mechanism": "memory_leak",
            "foreseeable": True,
            "precursor_start": "2026-01-08T09:00:00+00:00",
            "onset": "2026-01-08T10:00:00+00:00",
            "recovery": "2026-01-08T10:20:00+00:00",
        },
        {  # sudden, missed
            "account_id": "b",
            "kind": "disconnect",
            "mechanism": "sudden",
            "foreseeable": False,
            "precursor_start": "2026-01-08T12:00:00+00:00",
            "onset": "2026-01-08T12:00:00+00:00",
            "recovery": "2026-01-08T12:10:00+00:00",
        },
        {  # before the replay: judges alerts, not counted in recall
            "account_id": "c",
            "kind": "crash",
            "mechanism": "memory_leak",
            "foreseeable": True,
            "precursor_start": "2026-01-07T20:00:00+00:00",
            "onset": "2026-01-07T23:00:00+00:00",
            "recovery": "2026-01-08T00:30:00+00:00",
        },
    ],
    "enforcement": [
        {
            "account_id": "d",
            "kind": "restricted",
            "precursor_start": "2026-01-08T02:00:00+00:00",
            "onset": "2026-01-08T06:00:00+00:00",
            "end": "2026-01-08T18:00:00+00:00",
        }
    ],
    "anomalies": [
        {
            "kind": "traffic_spike",
            "account_ids": ["e"],
            "start": "2026-01-08T15:00:00+00:00",
            "end": "2026-01-08T15:30:00+00:00",
        }
    ],
    "maintenance": [],
}


def test_alerts_are_judged_against_faults_not_enforcement():
    bench = _bench()
    alerts = pd.DataFrame(
        [
            alert(1, "a", "anomaly", "2026-01-08T09:30Z"),  # true, 30 min ahead
            alert(2, "a", "failure_risk", "2026-01-08T04:30Z", "6h"),  # true: onset within 6 h
            alert(3, "a", "failure_risk", "2026-01-08T03:30Z", "1h"),  # false: onset 6.5 h away
            alert(4, "c", "anomaly", "2026-01-08T00:10Z"),  # true: during the downtime
            alert(5, "d", "failure_risk", "2026-01-08T05:00Z", "1h"),  # false: enforcement
            alert(6, "e", "anomaly", "2026-01-08T15:10Z"),  # false: benign anomaly
            alert(7, "b", "anomaly", "2026-01-08T20:00Z"),  # false: nothing there
            alert(8, "a", "anomaly", "2026-01-09T09:30Z"),  # after the replay: not judged
        ]
    )
    m = bench.evaluate(
        alerts,
        TRUTH,
        start=START,
        end=END,
        n_accounts=10,
        anomaly_before=pd.Timedelta("1h"),
        anomaly_after=pd.Timedelta("15min"),
    )
    assert m["account_days"] == 10.0
    assert (m["alerts"], m["false_alerts"]) == (7, 4)
    assert m["false_alerts_per_account_day"] == 0.4
    assert m["by_kind"]["anomaly"]["precision"] == 0.5
    assert m["by_kind"]["failure_risk"]["false"] == 2
    assert m["false_reasons"] == {"enforcement": 1, "benign_anomaly": 1, "unexplained": 2}
    assert m["foreseeable_faults"]["events"] == 1
    assert m["foreseeable_faults"]["recall"] == 1.0
    assert m["foreseeable_faults"]["median_lead_min"] == 330.0  # the 6 h risk alert came first
    assert m["all_faults"] == {**m["all_faults"], "events": 2, "detected": 1, "recall": 0.5}
    assert m["enforcement"]["detected"] == 1 and m["enforcement"]["alerts_on_enforcement_only"] == 1


def test_no_alerts_at_all():
    bench = _bench()
    m = bench.evaluate(
        pd.DataFrame(),
        TRUTH,
        start=START,
        end=END,
        n_accounts=10,
        anomaly_before=pd.Timedelta("1h"),
        anomaly_after=pd.Timedelta("15min"),
    )
    assert (m["alerts"], m["false_alerts_per_account_day"], m["precision"]) == (0, 0.0, None)
    assert m["all_faults"]["recall"] == 0.0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_runs_on_a_tiny_fleet(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    args = ["--masters", "2", "--servants", "1", "--train-days", "2", "--test-days", "0.125"]
    args += ["--tick-every", "300", "--allow-degraded", "--keep", str(tmp_path / "work")]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ticks"] == 37  # 3 h at one tick per 5 min, both ends included
    assert result["settings_are_default"] is True
    assert result["metrics"]["account_days"] == 0.5
    assert "false/acc-day" in proc.stdout
