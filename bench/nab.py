"""NAB benchmark: the shipped anomaly product, through the CLI, scored two ways.

Each NAB series (../shared/benchmarks/nab) becomes one account with one metric (``value``) in a
fresh temporary home; ``fleetml backtest anomaly --warmup 0.15 --warmup-max 750`` (NAB's
probationary period, every other option at its shipped default) replays every account causally.
The backtest output is then scored with :mod:`fleetml.evaluation.nab`, NAB standard profile:

* ``nab_sweep``: detections are the rows whose ``anomaly_score`` is at or above one threshold
  shared by the whole corpus, the threshold that maximises the summed score (NAB's own
  optimiser: this measures how well the score *ranks*, and is the figure published detectors
  report);
* ``nab_onsets``: detections are the onsets of the product's ``is_anomaly`` episodes (the first
  row of each run of flagged rows), exactly as the backtest wrote them: nothing is chosen here,
  so this is what a user paged by ``is_anomaly`` would have seen.

Nothing in this script is chosen on the NAB labels. Usage::

    PYTHONPATH=. python bench/nab.py [--nab DIR] [--keep DIR] [--scores FILE] [--only KEYS]

Prints a table per category and one JSON line with both scores, on all series and on two fixed
subsets decided before any tuning (by category, see :data:`DEV_CATEGORIES`): the 13 *dev* series
(realKnownCause, artificialWithAnomaly) that design choices may look at, and the 22 *held-out*
series (realAWSCloudwatch, artificialNoAnomaly) that nothing was chosen on; each subset gets its
own sweep threshold. Published detectors on these 35 series (standard profile, one threshold
sweep): ARTime 67.8, Numenta HTM 66.6.
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

from fleetml.evaluation.nab import (  # noqa: E402
    NabSeries,
    corpus_score,
    optimise_threshold,
    threshold_at_or_above,
    window_rows,
)

DEFAULT_NAB = ROOT.parent / "shared" / "benchmarks" / "nab"
#: Categories whose series design choices may look at (the rest are held out, never tuned on).
DEV_CATEGORIES = ("realKnownCause", "artificialWithAnomaly")


def account_of(key: str) -> str:
    """``realKnownCause/nyc_taxi.csv`` -> ``realKnownCause.nyc_taxi`` (a valid account id)."""
    return key.removesuffix(".csv").replace("/", ".")


def load_corpus(nab: Path, only=None) -> tuple[dict[str, pd.DataFrame], dict[str, list]]:
    labels = json.loads((nab / "labels" / "combined_windows.json").read_text())
    series = {}
    for key in sorted(labels):
        if only and not any(o in key for o in only):
            continue
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


def run_backtest(home: Path, out: Path) -> dict:
    """``fleetml backtest anomaly --warmup 0.15 --warmup-max 750``, all else at its default."""
    cmd = [sys.executable, "-m", "fleetml.cli", "--home", str(home), "backtest", "anomaly"]
    cmd += ["--out", str(out), "--warmup", "0.15", "--warmup-max", "750"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), MLFLOW_DISABLE_TELEMETRY="true")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"backtest failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def episode_onsets(flags, threshold=None) -> np.ndarray:
    """First row of each run of ``True`` (``threshold`` is ignored: nothing is swept)."""
    flags = np.asarray(flags, dtype=bool)
    prev = np.r_[False, flags[:-1]]
    return flags & ~prev


def score_corpus(scores: pd.DataFrame, series, labels) -> dict:
    nab_series, per_score, per_flag, names = [], [], [], []
    for key, df in series.items():
        got = scores[scores["account_id"] == account_of(key)][["ts", "anomaly_score", "is_anomaly"]]
        merged = df.merge(got, on="ts", how="left")
        nab_series.append(
            NabSeries(n=len(df), windows=window_rows(df["ts"], labels[key]), name=key)
        )
        per_score.append(merged["anomaly_score"].to_numpy(dtype=float))
        per_flag.append(merged["is_anomaly"].fillna(False).to_numpy(dtype=bool))
        names.append(key)
    sweep = optimise_threshold(nab_series, per_score)
    onsets = corpus_score(nab_series, per_flag, 0.5, detect=episode_onsets)
    return {
        "sweep": sweep,
        "onsets": onsets,
        "series": nab_series,
        "scores": per_score,
        "flags": per_flag,
        "names": names,
    }


def subset_scores(res: dict, keep) -> dict:
    """Sweep (own threshold) and onset scores of the series whose name passes ``keep``."""
    idx = [i for i, n in enumerate(res["names"]) if keep(n)]
    if not idx:
        return {}
    series = [res["series"][i] for i in idx]
    sweep = optimise_threshold(series, [res["scores"][i] for i in idx])
    onsets = corpus_score(series, [res["flags"][i] for i in idx], 0.5, detect=episode_onsets)
    return {
        "series": len(idx),
        "nab_sweep": round(sweep["score"], 2),
        "sweep_threshold": sweep["threshold"],
        "sweep_tp_fp_fn": [sweep["tp"], sweep["fp"], sweep["fn"]],
        "nab_onsets": round(onsets["score"], 2),
        "onsets_tp_fp_fn": [onsets["tp"], onsets["fp"], onsets["fn"]],
    }


def is_dev(name: str) -> bool:
    return name.split("/")[0] in DEV_CATEGORIES


def per_category(res: dict) -> pd.DataFrame:
    rows = []
    names = res["names"]
    for cat in sorted({n.split("/")[0] for n in names}):
        idx = [i for i, n in enumerate(names) if n.startswith(cat + "/")]
        row = {"category": cat, "series": len(idx)}
        for label, detect, inputs, thr in (
            ("sweep", threshold_at_or_above, res["scores"], res["sweep"]["threshold"]),
            ("onsets", episode_onsets, res["flags"], None),
        ):
            raw = tp = fp = fn = 0
            for i in idx:
                r, a, b, c = res["series"][i].score(detect(inputs[i], thr))
                raw, tp, fp, fn = raw + r, tp + a, fp + b, fn + c
            row[f"{label}_raw"] = round(raw, 2)
            row[f"{label}_tp/fp/fn"] = f"{tp}/{fp}/{fn}"
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nab", type=Path, default=DEFAULT_NAB)
    ap.add_argument("--keep", type=Path, default=None, help="Keep the home and scores here.")
    ap.add_argument("--scores", type=Path, default=None, help="Re-score a backtest output file.")
    ap.add_argument(
        "--only", nargs="*", default=None, help="Only series whose key contains one of these."
    )
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    series, labels = load_corpus(args.nab, args.only)
    if args.scores:
        scores, summary = pd.read_parquet(args.scores), {}
    else:
        home = args.keep or Path(tempfile.mkdtemp(prefix="fleetml-nab-"))
        import_corpus(home, series)
        out = home / "nab_backtest.parquet"
        summary = run_backtest(home, out)
        scores = pd.read_parquet(out)
    scores["ts"] = pd.to_datetime(scores["ts"], utc=True).astype("datetime64[ms, UTC]")
    res = score_corpus(scores, series, labels)
    print(per_category(res).to_string(index=False))
    sweep, onsets = res["sweep"], res["onsets"]
    final = {
        "benchmark": f"NAB ({len(series)} series, standard profile)",
        "nab_sweep": round(sweep["score"], 2),
        "sweep_threshold": sweep["threshold"],
        "sweep_tp_fp_fn": [sweep["tp"], sweep["fp"], sweep["fn"]],
        "nab_onsets": round(onsets["score"], 2),
        "onsets_tp_fp_fn": [onsets["tp"], onsets["fp"], onsets["fn"]],
        "dev": subset_scores(res, is_dev),
        "held_out": subset_scores(res, lambda n: not is_dev(n)),
        "backtest_seconds": summary.get("seconds"),
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(final))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
