"""Anomaly alerts on the fleet simulator: event-wise precision, recall and lead time.

Simulates a fleet into a fresh temporary home (``fleetml simulate --into-home``), runs
``fleetml backtest anomaly`` (causal walk-forward per account) and matches alert onsets against
the run's ``ground_truth.json``:

* incident windows: every technical fault and enforcement episode, from its precursor start (or
  onset when it has none) to its recovery (or onset + 1 h);
* precision = alerts inside some incident window of their account / all alerts (alerts during
  the warm-up are not scored); recall = incidents with at least one alert / incidents;
* lead time = fault onset minus first alert inside the window (positive: before the onset).

Benign look-alike anomalies count as false alarms for ``precision`` (they are not incidents);
``precision_vs_any_injected_anomaly`` counts an alert inside any injected anomaly as true.

Usage: ``PYTHONPATH=. python bench/anomaly_sim.py [--masters 5] [--days 7] [--step 5m]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleetml.evaluation.events import (  # noqa: E402
    alert_onsets,
    event_metrics,
    label_rows,
    match_alerts,
)
from fleetml.evaluation.pointwise import pointwise_metrics  # noqa: E402


def fleetml(home: Path, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MLFLOW_DISABLE_TELEMETRY="true")
    cmd = [sys.executable, "-m", "fleetml.cli", "--home", str(home), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def incident_windows(truth: dict) -> pd.DataFrame:
    rows = []
    for item in truth.get("faults", []) + truth.get("enforcement", []):
        onset = pd.Timestamp(item["onset"])
        start = pd.Timestamp(item.get("precursor_start") or item["onset"])
        end = item.get("recovery") or item.get("end")
        end = pd.Timestamp(end) if end else onset + pd.Timedelta("1h")
        rows.append(
            {
                "account_id": item["account_id"],
                "start": min(start, onset),
                "end": max(end, onset),
                "onset": onset,
                "kind": item["kind"],
            }
        )
    return pd.DataFrame(rows)


def benign_windows(truth: dict) -> pd.DataFrame:
    """Injected benign anomalies (look-alikes, demand anomalies), one row per affected account."""
    rows = [
        {"account_id": acc, "start": pd.Timestamp(item["start"]), "end": pd.Timestamp(item["end"])}
        for item in truth.get("anomalies", [])
        if item.get("start") and item.get("end")
        for acc in item.get("account_ids", [])
    ]
    return pd.DataFrame(rows, columns=["account_id", "start", "end"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--masters", type=int, default=5)
    ap.add_argument("--servants", type=int, default=3)
    ap.add_argument("--days", type=float, default=7)
    ap.add_argument("--step", default="5m")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--refit-every", type=int, default=500)
    ap.add_argument("--keep", type=Path, default=None)
    args = ap.parse_args(argv)

    home = args.keep or Path(tempfile.mkdtemp(prefix="fleetml-sim-bench-"))
    out_dir = home / "sim"
    sim = fleetml(
        home,
        "simulate",
        "--masters",
        str(args.masters),
        "--servants",
        str(args.servants),
        "--days",
        str(args.days),
        "--step",
        args.step,
        "--seed",
        str(args.seed),
        "--out",
        str(out_dir),
        "--into-home",
    )
    truth = json.loads((out_dir / "ground_truth.json").read_text())
    scores_path = home / "backtest.parquet"
    summary = fleetml(
        home,
        "backtest",
        "anomaly",
        "--out",
        str(scores_path),
        "--refit-every",
        str(args.refit_every),
    )
    scores = pd.read_parquet(scores_path)
    scored = scores[scores["anomaly_score"].notna()]
    first_scored = scored["ts"].min()
    windows = incident_windows(truth)
    windows = windows[windows["end"] >= first_scored].reset_index(drop=True)
    alerts = alert_onsets(scored)
    metrics = event_metrics(alerts, windows)
    _, matched = match_alerts(alerts, windows)
    onset_lead = (windows["onset"] - matched["first_alert"]).dt.total_seconds()
    detected = matched["detected"].to_numpy()
    injected = pd.concat(
        [windows[["account_id", "start", "end"]], benign_windows(truth)], ignore_index=True
    )
    any_anomaly = event_metrics(alerts, injected)
    # how well anomaly_score ranks rows inside incident windows above the rest (threshold-free)
    ranking = pointwise_metrics(label_rows(scored, windows), scored["anomaly_score"])
    result = {
        "benchmark": "simulator",
        "accounts": sim.get("accounts"),
        "metric_rows": sim.get("metric_rows"),
        "incidents_scored": len(windows),
        "alerts": metrics["n_alerts"],
        "precision": round(metrics["precision"], 3),
        "recall": round(metrics["recall"], 3),
        "f1": round(metrics["f1"], 3),
        "precision_vs_any_injected_anomaly": round(any_anomaly["precision"], 3),
        "alerts_per_account_day": round(
            metrics["n_alerts"]
            / max(
                scored.groupby("account_id")["ts"]
                .agg(lambda t: (t.max() - t.min()).total_seconds() / 86400)
                .sum(),
                1e-9,
            ),
            3,
        ),
        "score_pr_auc": round(ranking["pr_auc"], 3),
        "score_roc_auc": round(ranking["roc_auc"], 3),
        "incident_row_share": round(ranking["prevalence"], 3),
        "median_lead_vs_onset_min": round(float(np.nanmedian(onset_lead[detected])) / 60, 1)
        if detected.any()
        else None,
        "share_detected_before_onset": round(float((onset_lead[detected] > 0).mean()), 3)
        if detected.any()
        else None,
        "recall_by_kind": matched.assign(kind=windows["kind"])
        .groupby("kind")["detected"]
        .mean()
        .round(3)
        .to_dict(),
        "backtest_seconds": summary.get("seconds"),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
