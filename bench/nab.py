"""NAB benchmark: fleetml's anomaly backtest scored with the NAB standard profile.

Each NAB series (../shared/benchmarks/nab) becomes one account with one metric (``value``) in a
fresh temporary home; ``fleetml backtest anomaly --warmup 0.15 --warmup-max 750`` (NAB's
probationary period) replays every account causally; :mod:`fleetml.evaluation.nab` scores the
result with one threshold optimised over the whole corpus.

Two detection rules are reported:

* ``rows``: every row whose anomaly_score is at or above the threshold (plain NAB);
* ``onsets``: the first row of each alert of fleetml's alert rule (the threshold, then
  ``--suppression`` rows of silence after each onset), i.e. what ``is_anomaly`` onsets would be.

Usage::

    PYTHONPATH=. python bench/nab.py [--nab DIR] [--refit-every 500] [--keep DIR]

Prints a table per category (for the best rule) and one JSON line with the scores. The detector is
the product default (likelihood calibration with the range check, see docs/anomaly.md).
Reference (full NAB, standard profile): Numenta HTM 70.5, CAD OSE 69.9, KNN CAD 58.0,
Random Cut Forest 51.7, Twitter ADVec 47.1, windowed Gaussian 39.6.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleetml.evaluation.nab import NabSeries, optimise_threshold, window_rows  # noqa: E402
from fleetml.models.anomaly import AlertRule  # noqa: E402

DEFAULT_NAB = ROOT.parent / "shared" / "benchmarks" / "nab"


def account_of(key: str) -> str:
    """``realKnownCause/nyc_taxi.csv`` -> ``realKnownCause.nyc_taxi`` (a valid account id)."""
    return key.removesuffix(".csv").replace("/", ".")


def load_corpus(nab: Path) -> tuple[dict[str, pd.DataFrame], dict[str, list]]:
    labels = json.loads((nab / "labels" / "combined_windows.json").read_text())
    series = {}
    for key in sorted(labels):
        df = pd.read_csv(nab / "data" / key)
        df["ts"] = (
            pd.to_datetime(df["timestamp"]).dt.tz_localize("UTC").astype("datetime64[ms, UTC]")
        )
        series[key] = df[["ts", "value"]]
    return series, labels


def import_corpus(home: Path, series: dict[str, pd.DataFrame]) -> None:
    from fleetml.cli_support import open_engine
    from fleetml.config import get_settings
    from fleetml.ingest.files import import_metrics_frame

    engine = open_engine(get_settings(home))
    frame = pd.concat(
        [
            df.assign(account_id=account_of(key))[["ts", "account_id", "value"]]
            for key, df in series.items()
        ],
        ignore_index=True,
    )
    with engine.begin() as conn:
        report = import_metrics_frame(conn, frame, register=True, actor="bench", max_future_s=300.0)
    print(f"imported {report.rows_stored} samples of {len(series)} series", file=sys.stderr)
    engine.dispose()


def run_backtest(home: Path, out: Path, refit_every: int, threshold: float | None) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "fleetml.cli",
        "--home",
        str(home),
        "backtest",
        "anomaly",
        "--out",
        str(out),
        "--warmup",
        "0.15",
        "--warmup-max",
        "750",
        "--refit-every",
        str(refit_every),
    ]
    if threshold is not None:
        cmd += ["--threshold", str(threshold)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), MLFLOW_DISABLE_TELEMETRY="true")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"backtest failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def score_corpus(scores: pd.DataFrame, series, labels, suppressions=(0, 50, 100, 200, 400)):
    nab_series, per_series_scores, names = [], [], []
    for key, df in series.items():
        got = scores[scores["account_id"] == account_of(key)][["ts", "anomaly_score"]]
        merged = df.merge(got, on="ts", how="left")
        nab_series.append(
            NabSeries(n=len(df), windows=window_rows(df["ts"], labels[key]), name=key)
        )
        per_series_scores.append(merged["anomaly_score"].to_numpy(dtype=float))
        names.append(key)
    results = {"rows": optimise_threshold(nab_series, per_series_scores)}
    for sup in suppressions:
        if sup == 0:
            continue
        rule = AlertRule(threshold=0.0, min_duration=1, suppression=sup)

        def onsets(sc, thr, rule=rule):
            rule.threshold = thr
            return rule.apply(sc, return_onsets=True)[1]

        results[f"onsets_s{sup}"] = optimise_threshold(
            nab_series, per_series_scores, detect=onsets, n_candidates=150
        )
    return results, nab_series, per_series_scores, names


def per_category(nab_series, scores, names, detect, threshold):
    rows = []
    for cat in sorted({n.split("/")[0] for n in names}):
        idx = [i for i, n in enumerate(names) if n.startswith(cat + "/")]
        raw = tp = fp = fn = 0
        for i in idx:
            r, a, b, c = nab_series[i].score(detect(scores[i], threshold))
            raw, tp, fp, fn = raw + r, tp + a, fp + b, fn + c
        rows.append(
            {
                "category": cat,
                "series": len(idx),
                "raw": round(raw, 2),
                "tp": tp,
                "fp": fp,
                "fn": fn,
            }
        )
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nab", type=Path, default=DEFAULT_NAB)
    ap.add_argument("--refit-every", type=int, default=500)
    ap.add_argument(
        "--threshold", type=float, default=None, help="Backtest alert threshold (is_anomaly only)."
    )
    ap.add_argument("--keep", type=Path, default=None, help="Keep the home and scores here.")
    ap.add_argument(
        "--scores", type=Path, default=None, help="Re-score an existing backtest output."
    )
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    series, labels = load_corpus(args.nab)
    if args.scores:
        scores, summary = pd.read_parquet(args.scores), {}
    else:
        home = args.keep or Path(tempfile.mkdtemp(prefix="fleetml-nab-"))
        import_corpus(home, series)
        out = home / "nab_backtest.parquet"
        summary = run_backtest(home, out, args.refit_every, args.threshold)
        scores = pd.read_parquet(out)
    scores["ts"] = pd.to_datetime(scores["ts"], utc=True).astype("datetime64[ms, UTC]")
    results, nab_series, sc, names = score_corpus(scores, series, labels)
    best_key = max(results, key=lambda k: results[k]["score"])
    print(f"{'rule':<14} {'threshold':>10} {'score':>7} {'tp':>4} {'fp':>5} {'fn':>4}")
    for key, res in results.items():
        print(
            f"{key:<14} {res['threshold']:>10.5f} {res['score']:>7.2f} "
            f"{res['tp']:>4} {res['fp']:>5} {res['fn']:>4}"
        )
    # Per category for the best rule (plain rows, or the alert onsets it names).
    if best_key == "rows":
        best_detect = lambda s, t: np.nan_to_num(s, nan=-1) >= t  # noqa: E731
    else:
        best_rule = AlertRule(
            threshold=0.0, min_duration=1, suppression=int(best_key.removeprefix("onsets_s"))
        )

        def best_detect(s, t, rule=best_rule):
            rule.threshold = t
            return rule.apply(s, return_onsets=True)[1]

    print(f"per category, rule {best_key}:")
    print(
        per_category(nab_series, sc, names, best_detect, results[best_key]["threshold"]).to_string(
            index=False
        )
    )
    best = results[best_key]
    final = {
        "benchmark": "NAB (35 series, standard profile)",
        "nab_score_rows": round(results["rows"]["score"], 2),
        "nab_score_best_rule": best_key,
        "nab_score_best": round(results[best_key]["score"], 2),
        "threshold_best": best["threshold"],
        "tp_fp_fn_best": [best["tp"], best["fp"], best["fn"]],
        "backtest_seconds": summary.get("seconds"),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "refit_every": args.refit_every,
    }
    print(json.dumps(final))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
