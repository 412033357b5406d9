"""A tick killed (kill -9) in the middle and run again leaves no duplicated alert or
notification."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from .conftest import small_fleet

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent


def counts(engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        alerts = conn.execute(sa.text("SELECT count(*) FROM alerts")).scalar()
        outbox = conn.execute(sa.text("SELECT count(*) FROM notifications")).scalar()
        preds = conn.execute(sa.text("SELECT count(*) FROM prediction_history")).scalar()
    return int(alerts), int(outbox), int(preds)


def run(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=180
    )


def test_a_killed_tick_rerun_duplicates_nothing(sqlite_settings, tmp_path):
    from fleetml.cli_support import open_engine
    from fleetml.ingest.files import import_metrics_frame

    engine = open_engine(sqlite_settings)
    frame = small_fleet(n_accounts=3, hours=8)
    with engine.begin() as conn:
        import_metrics_frame(conn, frame, register=True, actor="test")
    env = {
        **os.environ,
        "FLEETML_HOME": str(sqlite_settings.home_path),
        "FLEETML_ALERT_WEBHOOKS": json.dumps(["http://127.0.0.1:9/hook"]),
        "PYTHONPATH": str(HERE.parents[1]),
    }
    now = frame["ts"].max().isoformat()
    killed = run(env, str(HERE / "_kill_tick.py"), "in-alerts", now)
    assert killed.returncode == -9, killed.stderr[-2000:]
    alerts, outbox, preds = counts(engine)
    assert alerts == 0 and outbox == 0  # the alerts transaction never committed
    assert preds > 0  # the predictions of that tick did

    killed = run(env, str(HERE / "_kill_tick.py"), "after-alerts", now)
    assert killed.returncode == -9, killed.stderr[-2000:]
    alerts, outbox, preds_after = counts(engine)
    assert alerts >= 2 and outbox >= alerts  # both model families degraded: at least 2 alerts
    assert preds_after == preds

    again = run(env, "-m", "fleetml.cli", "tick", "--now", now)
    assert again.returncode == 0, again.stderr[-2000:]
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["alerts_opened"] == 0 and summary["notifications"] == 0
    assert counts(engine) == (alerts, outbox, preds)
