"""Speed of anomaly scoring and training (issue 4, item 6). Never run inside timed tests.

Measures, on a synthetic fleet with ``--metrics`` gauges sampled every 5 minutes:

1. latest window of ``--accounts`` accounts: ``latest_features`` + detector, wall time;
2. one account on demand, in-process: features of its latest row + detector (median of repeats),
   and the detector alone (``score_array``), against a per-row sklearn ``IsolationForest`` call;
3. training on ``--train-accounts`` x ``--days`` days: build features + fit, wall time and peak RSS.

Usage: ``PYTHONPATH=. python bench/anomaly_speed.py [--accounts 10000] [--train-accounts 1000]``
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleetml.features import build_features, feature_columns, latest_features  # noqa: E402
from fleetml.training.anomaly import AnomalyTrainConfig, fit_model  # noqa: E402


def fleet(n_accounts: int, days: float, n_metrics: int, seed: int = 0) -> pd.DataFrame:
    """Wide frame: n_accounts x (days at 5 min) rows, daily seasonality plus noise."""
    rng = np.random.default_rng(seed)
    steps = int(days * 288)
    ts = pd.date_range("2026-01-01", periods=steps, freq="5min", tz="UTC").as_unit("ms")
    n = n_accounts * steps
    phase = np.tile(np.sin(np.arange(steps) * 2 * np.pi / 288), n_accounts)
    data = {
        "ts": np.tile(ts.to_numpy(), n_accounts),
        "account_id": np.repeat([f"acc-{i:05d}" for i in range(n_accounts)], steps),
    }
    for m in range(n_metrics):
        level = np.repeat(rng.uniform(10, 1000, n_accounts), steps)
        data[f"m{m}"] = level * (1 + 0.2 * phase) + rng.normal(0, 1, n) * level * 0.05
    frame = pd.DataFrame(data)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).astype("datetime64[ms, UTC]")
    return frame


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def bench_training(n_accounts, days, n_metrics) -> dict:
    frame = fleet(n_accounts, days, n_metrics)
    t0 = time.perf_counter()
    feats = build_features(frame)
    cols = feature_columns(feats)
    t1 = time.perf_counter()
    model = fit_model(feats, cols, AnomalyTrainConfig())
    t2 = time.perf_counter()
    return {
        "train_rows": len(frame),
        "train_features": len(cols),
        "train_feature_s": round(t1 - t0, 2),
        "train_fit_s": round(t2 - t1, 2),
        "train_total_s": round(t2 - t0, 2),
        "train_peak_rss_gb": round(peak_rss_gb(), 2),
    }, model


def bench_scoring(model, n_accounts, n_metrics, days) -> dict:
    frame = fleet(n_accounts, days, n_metrics, seed=1)
    out = {"score_accounts": n_accounts, "score_input_rows": len(frame)}
    t0 = time.perf_counter()
    latest = latest_features(frame)
    t1 = time.perf_counter()
    X = latest[model.feature_columns].to_numpy(dtype=np.float64)
    groups = latest["account_id"].to_numpy(dtype=object)
    scores = model.detector.score_array(X, groups)
    flags = model.rule.apply(scores, groups)
    t2 = time.perf_counter()
    out.update(
        latest_all_features_s=round(t1 - t0, 3),
        latest_all_model_s=round(t2 - t1, 3),
        latest_all_total_s=round(t2 - t0, 3),
        latest_all_flagged=int(flags.sum()),
    )

    # one account on demand: its own recent rows -> features of the last row -> score
    one = frame[frame["account_id"] == frame["account_id"].iloc[0]].reset_index(drop=True)
    timings_feat, timings_model, timings_api = [], [], []
    x1 = X[:1]
    g1 = groups[:1]
    for _ in range(50):
        a = time.perf_counter()
        lf = latest_features(one)
        b = time.perf_counter()
        model.detector.score_array(lf[model.feature_columns].to_numpy(dtype=np.float64), g1)
        c = time.perf_counter()
        model.detector.anomaly_score(x1, groups=g1)
        d = time.perf_counter()
        timings_feat.append(b - a)
        timings_model.append(c - b)
        timings_api.append(d - c)
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(random_state=0).fit(X)
    e = time.perf_counter()
    for _ in range(50):
        forest.score_samples(x1)
    sk = (time.perf_counter() - e) / 50
    out.update(
        one_account_features_ms=round(1000 * float(np.median(timings_feat)), 3),
        one_account_model_ms=round(1000 * float(np.median(timings_model)), 3),
        one_account_validated_model_ms=round(1000 * float(np.median(timings_api)), 3),
        one_account_sklearn_per_row_ms=round(1000 * sk, 3),
    )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument(
        "--score-days", type=float, default=1.1, help="History per account when scoring."
    )
    ap.add_argument("--train-accounts", type=int, default=1_000)
    ap.add_argument("--days", type=float, default=14)
    ap.add_argument("--metrics", type=int, default=3)
    args = ap.parse_args(argv)
    train, model = bench_training(args.train_accounts, args.days, args.metrics)
    print(json.dumps(train), flush=True)
    score = bench_scoring(model, args.accounts, args.metrics, args.score_days)
    print(json.dumps({**train, **score}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
