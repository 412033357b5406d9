"""Benchmark the fleet simulator: 100 masters x 3 servants x 14 days at 1-minute steps.

    PYTHONPATH=. python bench/simulate.py [--masters 100 --servants 3 --days 14 --write]

Prints one JSON line: seconds for the closed-loop simulation (reactive baseline driving every
step), for building the wide metrics frame with nuisance, and (with --write) for writing the
Parquet/CSV files, plus rows, faults and the lead-time distribution per mechanism. Target: the
simulation plus frame under 60 s on the 2-core box.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masters", type=int, default=100)
    parser.add_argument("--servants", type=int, default=3)
    parser.add_argument("--days", type=float, default=14.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="also time writing metrics.parquet")
    args = parser.parse_args()

    from fleetml.simulate import FleetSimulator, ReactiveBaselinePolicy, SimConfig, drive
    from fleetml.simulate.loop import loop_report
    from fleetml.simulate.output import events_frame, metrics_frame
    from fleetml.simulate.truth import fault_table, ground_truth

    config = SimConfig(masters=args.masters, servants=args.servants, days=args.days)
    t0 = time.perf_counter()
    sim = FleetSimulator(config, args.seed)
    t1 = time.perf_counter()
    drive(sim, ReactiveBaselinePolicy())
    t2 = time.perf_counter()
    frame, nuisance = metrics_frame(sim)
    events = events_frame(sim)
    truth = ground_truth(sim)
    t3 = time.perf_counter()
    out = {
        "accounts": config.n_accounts,
        "steps": config.n_steps,
        "account_steps": config.n_accounts * config.n_steps,
        "setup_s": round(t1 - t0, 2),
        "closed_loop_s": round(t2 - t1, 2),
        "frames_s": round(t3 - t2, 2),
        "total_s": round(t3 - t0, 2),
        "rows": len(frame),
        "events": len(events),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    if args.write:
        with tempfile.TemporaryDirectory() as tmp:
            t4 = time.perf_counter()
            frame.to_parquet(f"{tmp}/metrics.parquet", index=False)
            out["write_parquet_s"] = round(time.perf_counter() - t4, 2)
            out["parquet_mb"] = round(os.path.getsize(f"{tmp}/metrics.parquet") / 2**20, 1)
    faults = fault_table(sim)
    out["faults"] = truth["summary"]["faults_by_mechanism"]
    out["lead_time_min"] = {
        mech: {
            q: round(float(np.percentile(g["lead_time_min"], p)), 1)
            for q, p in (("p10", 10), ("p50", 50), ("p90", 90), ("max", 100))
        }
        for mech, g in faults.groupby("mechanism")
    }
    out["foreseeable_share"] = round(float(faults["foreseeable"].mean()), 3)
    report = loop_report(sim)
    out["loop"] = {
        "delivery_ratio": round(report.delivery_ratio, 4),
        "conservation_error": report.conservation_error,
        "failovers": report.failovers,
        "failovers_needed": report.failovers_needed,
    }
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    out["nuisance"] = nuisance
    print(json.dumps(out))


if __name__ == "__main__":
    main()
