import numpy as np
import pandas as pd
import pytest


def make_frame(n_accounts=3, hours=30, step="5min", seed=0, start="2026-03-02"):
    """Small canonical wide metrics frame: a gauge, two counters and a sparse gauge."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(
        start, periods=int(hours * 3600 / pd.Timedelta(step).total_seconds()), freq=step, tz="UTC"
    ).as_unit("ms")
    parts = []
    for i in range(n_accounts):
        n = len(ts)
        sent = np.cumsum(rng.poisson(20, n)).astype(float)
        fails = np.cumsum(rng.poisson(1, n)).astype(float)
        sparse = np.where(rng.random(n) < 0.3, rng.normal(5, 1, n), np.nan)
        parts.append(
            pd.DataFrame(
                {
                    "ts": ts,
                    "account_id": f"acc-{i}",
                    "cpu_pct": 40 + 10 * i + rng.normal(0, 2, n),
                    "msgs_sent_total": sent,
                    "send_failures_total": fails,
                    "queue_depth": sparse,
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    frame["account_id"] = frame["account_id"].astype("str")
    return frame


@pytest.fixture
def frame():
    return make_frame()
