"""Feature settings compared on validation fleets of the simulator (never the reported seeds).

    PYTHONPATH=. python bench/risk_features_val.py --seed 7 --configs FILE [--keep DIR]
        [--masters 10] [--servants 3] [--days 21] [--holdout-days 5] [--horizon 1h,6h,24h]

``FILE`` is JSON: ``{"name": {FeatureConfig fields...}, ...}`` (``{}`` is the shipped
defaults). For every entry the whole risk pipeline (:func:`fleetml.training.risk.fit_risk`
with the shipped :class:`RiskTrainConfig` and that feature config: splits, calibration,
thresholds, refit; the enforcement head is left out, it does not touch the fault heads) is
trained on everything before the last ``--holdout-days`` and scored on them with the stored
events passed, as serving does. Per horizon: PR-AUC on the held-out rows (purged at the data
end) and the positive rate; at a 5 % alert budget, the share of rows
flagged inside restriction/ban run-ups against the share flagged overall. Prints one JSON line.

Run it on seeds other than the reported ones (``bench/risk_sim.py`` reports seeds 1 and 2;
docs/risk.md uses 7 and 8 here), so the held-out days of this script are validation data.
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


def _simulate(args, home: Path, out: Path) -> None:
    if (out / "ground_truth.json").exists():
        return
    subprocess.run(
        [sys.executable, "-m", "fleetml.cli", "--home", str(home), "simulate"]
        + ["--masters", str(args.masters), "--servants", str(args.servants)]
        + ["--days", str(args.days), "--step", "5m", "--seed", str(args.seed)]
        + ["--out", str(out), "--into-home"],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
    )


def _runup_mask(truth: dict, ts_ms: np.ndarray, acc: np.ndarray) -> np.ndarray:
    enf = pd.DataFrame(truth["enforcement"])
    inside = np.zeros(len(ts_ms), dtype=bool)
    if not len(enf):
        return inside
    enf = enf[enf["kind"].isin(["restricted", "banned"])]
    start = pd.DatetimeIndex(pd.to_datetime(enf["precursor_start"], utc=True)).as_unit("ms").asi8
    onset = pd.DatetimeIndex(pd.to_datetime(enf["onset"], utc=True)).as_unit("ms").asi8
    for a, lo, hi in zip(enf["account_id"], start, onset, strict=True):  # a few episodes
        inside |= (acc == a) & (ts_ms >= lo) & (ts_ms < hi)
    return inside


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--configs", required=True, help="JSON file: name -> FeatureConfig fields.")
    ap.add_argument("--masters", type=int, default=10)
    ap.add_argument("--servants", type=int, default=3)
    ap.add_argument("--days", type=float, default=21)
    ap.add_argument("--holdout-days", type=float, default=5.0)
    ap.add_argument("--horizon", default="1h,6h,24h")
    ap.add_argument("--budget", type=float, default=0.05)
    ap.add_argument("--keep", default=None, help="Use this folder (home and files) and keep it.")
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    from fleetml.cli_support import open_engine
    from fleetml.config import get_settings, reset_settings
    from fleetml.evaluation.risk import pr_auc
    from fleetml.features.files import feature_config_from_dict
    from fleetml.training.risk import (
        RiskTrainConfig,
        fit_risk,
        load_risk_data,
        make_labels,
        parse_horizons,
    )

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fleetml-riskval-"))
    home, out = work / "home", work / "sim"
    _simulate(args, home, out)
    truth = json.loads((out / "ground_truth.json").read_text())
    end = pd.Timestamp(truth["end"])
    cut = end - pd.Timedelta(days=args.holdout_days)
    configs = json.loads(Path(args.configs).read_text())

    reset_settings()
    data = load_risk_data(open_engine(get_settings(str(home))))
    frame = data.frame.sort_values(["account_id", "ts"], kind="stable").reset_index(drop=True)
    ts_ms = pd.DatetimeIndex(frame["ts"]).as_unit("ms").asi8
    acc = frame["account_id"].astype(str).to_numpy()
    end_ms, cut_ms = int(ts_ms.max()), int(cut.value // 10**6)
    horizons = parse_horizons(args.horizon)
    labels = make_labels(ts_ms, acc, data.faults, horizons, end_ms)
    events = pd.concat([data.faults, data.enforcement], ignore_index=True)
    before = ts_ms <= cut_ms
    train_frame = frame[before].reset_index(drop=True)

    def upto(ev: pd.DataFrame) -> pd.DataFrame:
        return ev[pd.to_datetime(ev["ts"], utc=True) <= cut]

    held = np.flatnonzero(~before)
    runup = _runup_mask(truth, ts_ms, acc)
    result = {"seed": args.seed, "cut": str(cut), "configs": {}}
    for name, fields in configs.items():
        t0 = time.perf_counter()
        fconfig = feature_config_from_dict(fields, source=name)
        fit = fit_risk(
            train_frame,
            faults=upto(data.faults),
            enforcement=upto(data.enforcement),
            kinds=data.kinds,
            groups=data.groups,
            masters=data.masters,
            # the enforcement head does not touch the fault heads compared here
            config=RiskTrainConfig(horizons=horizons, feature_config=fconfig, enforcement=False),
            data_end=cut,
        )
        scores = fit.model.predict(frame, rows=held, events=events)
        row = {"columns": len(fit.model.feature_columns)}
        for h in horizons:
            h_ms = int(pd.Timedelta(h).value // 10**6)
            s = scores[scores["horizon"] == h]
            risk = pd.Series(
                s["risk"].to_numpy(),
                index=pd.MultiIndex.from_arrays(
                    [pd.DatetimeIndex(s["ts"]).as_unit("ms").asi8, s["account_id"].astype(str)]
                ),
            )
            test = ~before & (ts_ms + h_ms <= end_ms) & ~np.isnan(labels[h])
            r = risk.reindex(pd.MultiIndex.from_arrays([ts_ms[test], acc[test]])).to_numpy()
            r = np.nan_to_num(r, nan=0.0)
            y = labels[h][test]
            k = max(int(round(args.budget * len(r))), 1)
            flags = np.zeros(len(r), dtype=bool)
            flags[np.argsort(-r, kind="stable")[:k]] = True
            inside = runup[test]
            row[h] = {
                "pr_auc": round(pr_auc(y, r), 4),
                "positive_rate": round(float(y.mean()), 4),
                "runup_rows": int(inside.sum()),
                "flagged_in_runups": round(float(flags[inside].mean()), 4)
                if inside.any()
                else None,
            }
        row["seconds"] = round(time.perf_counter() - t0, 1)
        result["configs"][name] = row
        print(json.dumps({name: row}), file=sys.stderr, flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
