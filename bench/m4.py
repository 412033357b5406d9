"""M4 hourly benchmark for fleetml's load forecaster (series H1..H207, 48 steps, period 24).

Runs the product's estimator (:class:`fleetml.models.forecast.LoadForecaster`, method chosen per
series by validation on the last 48 points of each training series) and seasonal naive on the
same series, and scores both against the M4 Naive2 benchmark: sMAPE, MASE, OWA, and the coverage
of the 80 % and 95 % intervals (plus MSIS).

    PYTHONPATH=. python bench/m4.py [--data ../shared/benchmarks/m4] [--n-jobs 2] [--limit N]

Reference (benchmarks README): on all 414 hourly series seasonal naive scores OWA 0.627 and the
best entry 0.410. The goal here is an OWA at least 15 % below seasonal naive's on H1..H207.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from fleetml.evaluation import forecast as fm
from fleetml.models.forecast import LoadForecaster
from fleetml.parallel import run_parallel

HORIZON = 48
PERIOD = 24
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "m4"


def load(data: Path, limit: int | None):
    train = pd.read_csv(data / "Hourly-train.csv", index_col=0)
    test = pd.read_csv(data / "Hourly-test.csv", index_col=0)
    names = [f"H{i}" for i in range(1, 208) if f"H{i}" in train.index]
    if limit:
        names = names[:limit]
    return [(n, train.loc[n].dropna().to_numpy(float), test.loc[n].to_numpy(float)) for n in names]


def run_one(item):
    name, history, actual = item
    # M4 has no timestamps: give the estimator its periods (daily, and weekly when long enough).
    periods = (PERIOD, 7 * PERIOD) if len(history) >= 2 * 7 * PERIOD + HORIZON else (PERIOD,)
    model = LoadForecaster(seasonal_periods=periods, validation_horizon=HORIZON).fit(history)
    ours = model.predict(HORIZON)
    snaive = LoadForecaster("snaive", seasonal_periods=(PERIOD,)).fit(history).predict(HORIZON)
    n2 = fm.naive2(history, HORIZON, PERIOD)
    return {
        "series": name,
        "method": model.method_,
        "fleetml": fm.score_forecast(actual, ours, history, PERIOD),
        "snaive": fm.score_forecast(actual, snaive, history, PERIOD),
        "naive2": {
            "smape": fm.smape(actual, n2),
            "mase": fm.mase(actual, n2, history, PERIOD),
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    if not (args.data / "Hourly-train.csv").exists():
        print(f"M4 hourly data not found in {args.data}; pass --data", file=sys.stderr)
        return 2
    items = load(args.data, args.limit)
    t0 = time.perf_counter()
    rows = run_parallel(run_one, items, n_jobs=args.n_jobs, use_env=False)
    elapsed = time.perf_counter() - t0

    def mean(key, metric):
        return float(np.mean([r[key][metric] for r in rows]))

    n2_smape, n2_mase = mean("naive2", "smape"), mean("naive2", "mase")
    table = []
    for key, label in (
        ("naive2", "Naive2"),
        ("snaive", "seasonal naive"),
        ("fleetml", "fleetml auto"),
    ):
        s, m = mean(key, "smape"), mean(key, "mase")
        row = {"method": label, "sMAPE": s, "MASE": m, "OWA": fm.owa(s, m, n2_smape, n2_mase)}
        if key != "naive2":
            for level in (80, 95):
                row[f"cov{level}"] = 100 * mean(key, f"coverage_{level}")
            row["MSIS95"] = mean(key, "msis_95")
        table.append(row)
    frame = pd.DataFrame(table).set_index("method")
    print(f"M4 hourly, {len(rows)} series (H1..H{len(rows)}), horizon {HORIZON}, period {PERIOD}")
    print(frame.to_string(float_format=lambda v: f"{v:8.3f}"))
    ratio = frame.loc["fleetml auto", "OWA"] / frame.loc["seasonal naive", "OWA"]
    print(f"OWA ratio fleetml / seasonal naive: {ratio:.3f} (goal <= 0.85)")
    print("methods chosen:", dict(Counter(r["method"] for r in rows).most_common()))
    print(f"elapsed: {elapsed:.1f} s with n_jobs={args.n_jobs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
