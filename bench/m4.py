"""M4 hourly benchmark of ``fleetml forecast`` as shipped, through the CLI (H1..H207, 48 steps).

Each M4 hourly training series is imported into a fresh ``FLEETML_HOME`` as the hourly metric
``load`` of one account (``fleetml import metrics``; M4 has no dates, so each series is given
hourly timestamps ending at the same hour), then ``fleetml forecast --metric load --horizon 48``
runs with its defaults (no champion is trained, so each series chooses its methods by
validation on its own history) and its output file is scored against ``Hourly-test.csv``:
sMAPE, MASE (seasonal period 24), OWA against Naive2 as M4 defines it, and the coverage of the
80 % and 95 % intervals. Seasonal naive is scored beside it for reference.

    PYTHONPATH=. python bench/m4.py [--data ../shared/benchmarks/m4] [--n-jobs 2] [--limit N]
    PYTHONPATH=. python bench/m4.py --validate   # design work: never reads Hourly-test.csv

``--validate`` cuts the last 48 points off each *training* series, forecasts them from the rest
and scores there; design choices (``DEFAULT_LOG_METHODS``, the refit of ETS members, the weight
exponent) are made on that, never on the test values. Reference (benchmarks README): the best
entry on all 414 hourly series scores OWA 0.410, seasonal naive 0.627.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fleetml.evaluation import forecast as fm

HORIZON = 48
PERIOD = 24
LEVELS = (80, 95)
#: The hour every imported series ends at (M4 gives no dates; any past hour will do).
END = pd.Timestamp("2025-12-31 23:00", tz="UTC")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "m4"


def load(data: Path, limit: int | None, *, validate: bool):
    """(name, history, actual) per series; with ``validate`` both come from the training file."""
    train = pd.read_csv(data / "Hourly-train.csv", index_col=0)
    names = [f"H{i}" for i in range(1, 208) if f"H{i}" in train.index]
    if limit:
        names = names[:limit]
    if validate:
        out = []
        for n in names:
            x = train.loc[n].dropna().to_numpy(float)
            out.append((n, x[:-HORIZON], x[-HORIZON:]))
        return out
    test = pd.read_csv(data / "Hourly-test.csv", index_col=0)
    return [(n, train.loc[n].dropna().to_numpy(float), test.loc[n].to_numpy(float)) for n in names]


def write_metrics(items, path: Path) -> None:
    parts = []
    for name, history, _ in items:
        ts = pd.date_range(end=END, periods=len(history), freq="h")
        parts.append(pd.DataFrame({"ts": ts, "account_id": name, "load": history}))
    frame = pd.concat(parts, ignore_index=True)
    frame["ts"] = frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.to_csv(path, index=False)


def fleetml(home: Path, *args: str) -> tuple[dict, str, float]:
    """Run the ``fleetml`` CLI in a subprocess; its last stdout line is JSON."""
    cmd = [sys.executable, "-m", "fleetml.cli", "--home", str(home), *args]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr, elapsed


def score(items, table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for name, history, actual in items:
        part = table[table["account_id"] == name].sort_values("ts")
        by_level = {lv: part[part["level"] == lv] for lv in LEVELS}
        fc = pd.DataFrame({"yhat": by_level[LEVELS[0]]["yhat"].to_numpy()})
        if len(fc) != HORIZON:
            raise SystemExit(f"{name}: the CLI returned {len(fc)} points, not {HORIZON}")
        for lv, p in by_level.items():
            fc[f"yhat_lower_{lv}"] = p["yhat_lower"].to_numpy()
            fc[f"yhat_upper_{lv}"] = p["yhat_upper"].to_numpy()
        ours = fm.score_forecast(actual, fc, history, PERIOD, levels=LEVELS)
        snaive = np.resize(history[-PERIOD:], HORIZON)
        n2 = fm.naive2(history, HORIZON, PERIOD)
        rows.append(
            {
                "series": name,
                **{f"fleetml_{k}": v for k, v in ours.items()},
                "snaive_smape": fm.smape(actual, snaive),
                "snaive_mase": fm.mase(actual, snaive, history, PERIOD),
                "naive2_smape": fm.smape(actual, n2),
                "naive2_mase": fm.mase(actual, n2, history, PERIOD),
            }
        )
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--home", type=Path, default=None, help="default: a fresh temp folder")
    parser.add_argument("--keep", type=Path, default=None, help="write per-series scores here")
    parser.add_argument(
        "--validate",
        action="store_true",
        help="score on the last 48 points of the training series (design work)",
    )
    args = parser.parse_args(argv)
    if not (args.data / "Hourly-train.csv").exists():
        print(f"M4 hourly data not found in {args.data}; pass --data", file=sys.stderr)
        return 2
    items = load(args.data, args.limit, validate=args.validate)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with tempfile.TemporaryDirectory(prefix="fleetml-m4-") as tmp:
        home = args.home or Path(tmp) / "home"
        metrics_csv, out = Path(tmp) / "m4.csv", Path(tmp) / "forecast.parquet"
        write_metrics(items, metrics_csv)
        fleetml(home, "import", "metrics", str(metrics_csv))
        cmd = ("forecast", "--metric", "load", "--horizon", str(HORIZON), "--no-champion")
        result, _, elapsed = fleetml(home, *cmd, "--n-jobs", str(args.n_jobs), "--out", str(out))
        table = pd.read_parquet(out)
    scores = score(items, table)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        scores.to_csv(args.keep / ("validate.csv" if args.validate else "test.csv"), index=False)
    n2_smape, n2_mase = scores["naive2_smape"].mean(), scores["naive2_mase"].mean()
    lines = []
    for key, label in (("naive2", "Naive2"), ("snaive", "seasonal naive"), ("fleetml", "fleetml")):
        s, m = scores[f"{key}_smape"].mean(), scores[f"{key}_mase"].mean()
        owa = fm.owa(s, m, n2_smape, n2_mase)
        line = f"{label:15s} sMAPE {s:7.3f}  MASE {m:6.3f}  OWA {owa:.3f}"
        if key == "fleetml":
            cov = [100 * scores[f"fleetml_coverage_{lv}"].mean() for lv in LEVELS]
            line += f"  coverage 80% {cov[0]:.1f}  95% {cov[1]:.1f}"
            line += f"  MSIS95 {scores['fleetml_msis_95'].mean():.2f}"
        lines.append(line)
    what = "training series, last 48 held out (--validate)" if args.validate else "test"
    print(f"M4 hourly {what}: {len(scores)} series (H1..H{len(scores)}), horizon {HORIZON}")
    print(f"command: fleetml {' '.join(cmd)} --n-jobs {args.n_jobs} --out forecast.parquet")
    print("\n".join(lines))
    print(
        f"CLI answered: step {result['step']}, aggregated {result['aggregated']}, "
        f"{result['horizon_steps']} steps, methods {result['methods']}"
    )
    print(f"global model: {result.get('global_model')}")
    worst = scores.nlargest(3, "fleetml_msis_95")[["series", "fleetml_msis_95"]]
    print(
        "largest MSIS95:",
        ", ".join(f"{r.series} {r.fleetml_msis_95:.1f}" for r in worst.itertuples()),
    )
    print(f"forecast command: {elapsed:.1f} s wall with --n-jobs {args.n_jobs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
