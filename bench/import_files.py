"""Benchmark: `fleetml import metrics` of 1,000,000 rows x 8 metrics (goal: under 30 s).

Writes a shuffled wide CSV (1,000 accounts x 1,000 five-minute steps), then times the CLI
import into a fresh SQLite home in a subprocess, exactly as a user would run it.

    python bench/import_files.py [--rows 1000000] [--format csv|parquet]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def make_file(path: Path, rows: int, fmt: str) -> None:
    accounts = 1000
    steps = rows // accounts
    rng = np.random.default_rng(7)
    ts = pd.date_range("2026-01-01", periods=steps, freq="5min", tz="UTC")
    frame = pd.DataFrame(
        {
            "ts": np.tile(ts.strftime("%Y-%m-%dT%H:%M:%SZ"), accounts),
            "account_id": np.repeat([f"acct-{i:04d}" for i in range(accounts)], steps),
        }
    )
    for j in range(8):
        frame[f"metric_{j}"] = rng.gamma(2.0, 10.0, size=len(frame)).round(3)
    frame = frame.sample(frac=1.0, random_state=1)  # any order
    if fmt == "parquet":
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"metrics.{args.format}"
        make_file(path, args.rows, args.format)
        home = Path(tmp) / "home"
        cmd = [
            sys.executable,
            "-m",
            "fleetml.cli",
            "--home",
            str(home),
            "import",
            "metrics",
            str(path),
        ]
        start = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        elapsed = time.perf_counter() - start
        print(result.stdout.strip().splitlines()[-2])
        print(
            f"import of {args.rows:,} rows x 8 metrics ({args.format}): {elapsed:.1f} s "
            f"({args.rows / elapsed:,.0f} rows/s); "
            f"goal < 30 s: {'PASS' if elapsed < 30 else 'FAIL'}"
        )


if __name__ == "__main__":
    main()
