"""Failure risk on simulator data, through the store: simulate, import, train, evaluate.

    PYTHONPATH=. python bench/risk_sim.py [--masters 10] [--servants 3] [--days 14] [--step 5m]
        [--seed 1] [--horizon 1h,6h,24h] [--keep DIR]

Runs ``fleetml simulate ... --out DIR --into-home`` into a fresh home, reads it back with
:func:`fleetml.training.risk.load_risk_data` and trains with :func:`fleetml.training.risk.fit_risk`
(the code behind ``fleetml train risk``, without MLflow). Reports, per horizon on the held-out
last 20 % of the time range: PR-AUC, recall at precision 0.8, precision/recall at the stored
threshold, ECE, the share of faults caught (an alert in the horizon before the fault) and the
median lead time of caught faults, also split into foreseeable faults (those with a precursor
in the simulator's ground truth) and sudden ones. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masters", type=int, default=10)
    ap.add_argument("--servants", type=int, default=3)
    ap.add_argument("--days", type=float, default=14)
    ap.add_argument("--step", default="5m")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--horizon", default="1h,6h,24h")
    ap.add_argument("--keep", default=None, help="Use this folder (home and files) and keep it.")
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fleetml-risksim-"))
    home, out = work / "home", work / "sim"
    t0 = time.perf_counter()
    if not (out / "ground_truth.json").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "fleetml.cli",
                "--home",
                str(home),
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
                str(out),
                "--into-home",
            ],
            check=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
        )
    sim_s = time.perf_counter() - t0

    from fleetml.cli_support import open_engine
    from fleetml.config import get_settings, reset_settings
    from fleetml.evaluation.risk import lead_time_summary, lead_times
    from fleetml.training.risk import RiskTrainConfig, fit_risk, load_risk_data, parse_horizons

    reset_settings()
    engine = open_engine(get_settings(str(home)))
    data = load_risk_data(engine)
    config = RiskTrainConfig(horizons=parse_horizons(args.horizon), target_precision=0.8)
    t1 = time.perf_counter()
    fit = fit_risk(
        data.frame,
        faults=data.faults,
        enforcement=data.enforcement,
        kinds=data.kinds,
        groups=data.groups,
        config=config,
    )
    fit_s = time.perf_counter() - t1

    truth = json.loads((out / "ground_truth.json").read_text())["faults"]
    gt = pd.DataFrame(truth)
    gt["ts"] = pd.to_datetime(gt["onset"], utc=True)
    gt = gt[gt["ts"] >= fit.data_range["test_start"]]
    per_h = {}
    for h, m in fit.metrics.items():
        s = fit.test_scores[fit.test_scores["horizon"] == h]
        alerts = s.loc[s["at_risk"], ["ts", "account_id"]]
        row = {
            k: (round(v, 4) if isinstance(v, float) else v)
            for k, v in m.items()
            if k
            in (
                "pr_auc",
                "recall_at_target_precision",
                "precision",
                "recall",
                "ece",
                "brier",
                "positives",
                "rows",
                "faults",
                "faults_caught",
                "fault_recall",
                "median_lead_time_s",
                "threshold",
            )
        }
        for label, part in (
            ("foreseeable", gt[gt["foreseeable"]]),
            ("sudden", gt[~gt["foreseeable"]]),
        ):
            summ = lead_time_summary(lead_times(alerts, part[["ts", "account_id"]], h))
            row[f"{label}_faults"] = summ["faults"]
            row[f"{label}_fault_recall"] = round(summ["fault_recall"], 4)
            row[f"{label}_median_lead_time_min"] = round(summ["median_lead_time_s"] / 60, 1)
        row["median_lead_time_min"] = round(m["median_lead_time_s"] / 60, 1)
        per_h[h] = row
    print(
        json.dumps(
            {
                "accounts": fit.data_range["n_accounts"],
                "rows": fit.data_range["n_rows"],
                "faults": fit.data_range["n_faults"],
                "test_start": str(fit.data_range["test_start"]),
                "horizons": per_h,
                "enforcement": {
                    h: round(m["pr_auc"], 4) for h, m in fit.enforcement_metrics.items()
                },
                "simulate_import_s": round(sim_s, 1),
                "fit_s": round(fit_s, 1),
            }
        )
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
