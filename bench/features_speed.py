"""Speed and memory of the feature builder on a synthetic fleet.

    PYTHONPATH=. python bench/features_speed.py [--accounts 1000] [--days 14] [--step 5min]
        [--metrics 13] [--latest-accounts 10000] [--latest-hours 2]

Builds features for every row of ``accounts x days`` at ``step`` (1,000 x 14 days x 5 min is
4.03 M rows), then times :func:`fleetml.features.latest_features` on ``latest-accounts`` accounts
holding the last ``latest-hours`` of samples (the scoring fast path). Prints one JSON line with
wall-clock and CPU seconds (on a shared machine the CPU figure is the one to compare) and the
peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import pandas as pd

from fleetml.features import FeatureConfig, build_features, feature_columns, latest_features

GAUGES = ["cpu_pct", "mem_pct", "queue_depth", "latency_ms", "ws_rtt_ms", "battery_pct", "uptime_h"]
COUNTERS = [
    "msgs_sent_total",
    "msgs_delivered_total",
    "send_failures_total",
    "rate_limit_hits_total",
    "user_blocks_total",
    "reconnects_total",
]


def synthetic_fleet(accounts: int, days: float, step: str, n_metrics: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ts = pd.date_range(
        "2026-01-01",
        periods=int(days * 86400 / pd.Timedelta(step).total_seconds()),
        freq=step,
        tz="UTC",
    ).as_unit("ms")
    n = len(ts) * accounts
    ids = np.repeat(np.array([f"acc{i:05d}" for i in range(accounts)], dtype=object), len(ts))
    data = {"ts": np.tile(ts, accounts), "account_id": pd.array(ids, dtype="str")}
    names = (GAUGES[: (n_metrics + 1) // 2] + COUNTERS)[:n_metrics]
    hour = np.tile(ts.hour.to_numpy(), accounts)
    for m in names:
        if m.endswith("_total"):
            data[m] = np.cumsum(rng.poisson(5, n)).astype(np.float64)
        else:
            data[m] = 50 + 10 * np.sin(2 * np.pi * hour / 24) + rng.normal(0, 3, n)
            data[m][rng.random(n) < 0.02] = np.nan
    frame = pd.DataFrame(data)
    groups = {a: f"g{i % 20}" for i, a in enumerate(pd.unique(frame["account_id"]))}
    return frame, groups


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--days", type=float, default=14)
    ap.add_argument("--step", default="5min")
    ap.add_argument("--metrics", type=int, default=13)
    ap.add_argument("--latest-accounts", type=int, default=10000)
    ap.add_argument("--latest-hours", type=float, default=2)
    ap.add_argument("--n-jobs", type=int, default=1)
    args = ap.parse_args()

    frame, groups = synthetic_fleet(args.accounts, args.days, args.step, args.metrics)
    config = FeatureConfig(n_jobs=args.n_jobs)
    t0, c0 = time.perf_counter(), time.process_time()
    feats = build_features(frame, groups=groups, config=config)
    build_s, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    n_rows, n_cols = len(feats), len(feature_columns(feats))
    del feats
    rss_build = peak_rss_gb()

    recent, recent_groups = synthetic_fleet(
        args.latest_accounts, args.latest_hours / 24, args.step, args.metrics, seed=1
    )
    t0, c0 = time.perf_counter(), time.process_time()
    latest = latest_features(recent, groups=recent_groups, config=config)
    latest_s, latest_cpu = time.perf_counter() - t0, time.process_time() - c0

    print(
        json.dumps(
            {
                "rows": n_rows,
                "metrics": args.metrics,
                "feature_columns": n_cols,
                "build_seconds": round(build_s, 2),
                "build_cpu_seconds": round(build_cpu, 2),
                "rows_per_second": round(n_rows / build_s),
                "peak_rss_gb_after_build": round(rss_build, 2),
                "latest_accounts": len(latest),
                "latest_rows_in": len(recent),
                "latest_seconds": round(latest_s, 3),
                "latest_cpu_seconds": round(latest_cpu, 3),
                "peak_rss_gb": round(peak_rss_gb(), 2),
            }
        )
    )


if __name__ == "__main__":
    main()
