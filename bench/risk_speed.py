"""Time and memory of risk training on a large synthetic fleet.

    PYTHONPATH=. python bench/risk_speed.py [--accounts 1000] [--days 14] [--step 5min]

Builds the fleet of ``bench/features_speed.py`` (13 metrics, 1,000 accounts x 14 days at 5 min
is 4.03 M rows) with random technical faults (0.25 a day per account, preceded by a 2 h memory
ramp) and times :func:`fleetml.training.risk.fit_risk` with the default horizons (1 h, 6 h,
24 h): labels, purged splits, features for the sampled rows only (all positives, negatives
subsampled), three classifiers, calibration, thresholds and test metrics. Reading from the
store is not included. Prints one JSON line with wall and CPU seconds and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from features_speed import synthetic_fleet  # noqa: E402


def with_faults(frame: pd.DataFrame, rate_per_day: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    counts = frame.groupby("account_id", sort=False).size()
    starts = np.r_[0, np.cumsum(counts.to_numpy())[:-1]]
    days = (frame["ts"].iloc[-1] - frame["ts"].iloc[0]).total_seconds() / 86400
    n_faults = rng.poisson(rate_per_day * days, len(counts))
    acc = np.repeat(np.arange(len(counts)), n_faults)
    pos = starts[acc] + (rng.random(len(acc)) * (counts.to_numpy()[acc] - 30)).astype(int) + 25
    mem = frame["mem_pct"].to_numpy().copy()
    for lag in range(24):  # 2 h ramp before each fault (24 x 5 min), vectorised over faults
        mem[pos - 24 + lag] += 2.0 * lag
    frame["mem_pct"] = mem
    faults = pd.DataFrame(
        {
            "ts": frame["ts"].to_numpy()[pos],
            "account_id": frame["account_id"].to_numpy()[pos],
            "kind": "crash",
        }
    )
    return frame, faults.sort_values("ts").reset_index(drop=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--days", type=float, default=14)
    ap.add_argument("--step", default="5min")
    ap.add_argument("--metrics", type=int, default=13)
    ap.add_argument("--fault-rate", type=float, default=0.25, help="Faults per account-day.")
    args = ap.parse_args()

    from fleetml.training.risk import RiskTrainConfig, fit_risk

    frame, groups = synthetic_fleet(args.accounts, args.days, args.step, args.metrics)
    frame, faults = with_faults(frame, args.fault_rate)
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    t0, c0 = time.perf_counter(), time.process_time()
    fit = fit_risk(frame, faults=faults, groups=groups, config=RiskTrainConfig())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        json.dumps(
            {
                "rows": len(frame),
                "accounts": args.accounts,
                "faults": len(faults),
                "train_rows": fit.data_range["n_train_rows"],
                "val_rows": fit.data_range["n_val_rows"],
                "test_rows": fit.data_range["n_test_rows"],
                "features": fit.data_range["n_features"],
                "fit_seconds": round(wall, 1),
                "fit_cpu_seconds": round(cpu, 1),
                "peak_rss_gb_before_fit": round(rss_data, 2),
                "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
                "pr_auc": {h: round(m["pr_auc"], 3) for h, m in fit.metrics.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
