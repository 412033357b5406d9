"""Failure risk on our simulator, through the CLI, on a later held-out period, beside a plain
gradient-boosting baseline trained on the same rows.

    PYTHONPATH=. python bench/risk_sim.py [--masters 10] [--servants 3] [--days 21] [--step 5m]
        [--seed 1] [--horizon 1h,6h,24h] [--holdout-days 5] [--budget 0.05] [--keep DIR]
        [--features FILE]

1. ``fleetml simulate ... --out DIR --into-home`` fills a fresh home.
2. ``fleetml train risk --horizon ... --to CUT`` trains on everything before the held-out
   period (training cuts its own train / validation / test periods inside it; calibration,
   thresholds and every setting come from there, with the shipped defaults).
3. ``fleetml score risk --from CUT --version V --out FILE`` scores the held-out period, exactly
   as a user would.
4. The same held-out rows are also scored with the event history passed
   (``RiskModel.predict(frame, rows=..., events=...)``): what ``score risk`` gives once the
   serving code hands the stored events to the model (reported apart, as ``with_events``).
5. Baseline: scikit-learn's ``HistGradientBoostingClassifier`` (default settings) on rolling
   mean and standard deviation of every metric over 1 h, 6 h and 24 h, trained per horizon on
   every row before the cut whose label window ends before it.

Held-out rows are ``CUT <= t <= END - horizon`` (purged at the data end: every label window is
observed). Per horizon and model: PR-AUC and the positive rate; at a fixed alert budget (the
``--budget`` share of held-out rows with the highest risk, the same share for every model, so
models are compared at equal alert volume; 0.05 is 1.2 flagged hours per account-day):
per-fault recall (a fault is caught when a flagged row of its account lies in the horizon
before its onset) by the simulator's fault mechanism, the median lead time of caught faults,
and the share of rows flagged inside restriction/ban run-ups (ground truth) against the share
flagged overall (chance). The shipped model's own thresholds (``at_risk``) are reported too.
Prints one JSON line. Nothing here is chosen on held-out labels or scores.
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

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
ROLL_WINDOWS = ("1h", "6h", "24h")


def _cli(home: Path, *args: str) -> dict:
    """Run ``fleetml --home HOME ARGS`` and return its result line (the last line, JSON)."""
    out = subprocess.run(
        [sys.executable, "-m", "fleetml.cli", "--home", str(home), *args],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def rolling_features(frame: pd.DataFrame, metrics: list[str]) -> np.ndarray:
    """The baseline's features: per account, trailing mean and std of each metric (time windows)."""
    f = frame.set_index("ts")
    g = f.groupby("account_id", sort=False)[metrics]
    cols = []
    for w in ROLL_WINDOWS:
        r = g.rolling(w, min_periods=1)
        cols.append(r.mean().to_numpy())
        cols.append(r.std().to_numpy())
    return np.hstack(cols)


def budget_flags(risk: np.ndarray, share: float) -> np.ndarray:
    """The ``share`` of rows with the highest risk (ties broken by order)."""
    k = max(int(round(share * len(risk))), 1)
    flags = np.zeros(len(risk), dtype=bool)
    flags[np.argsort(-risk, kind="stable")[:k]] = True
    return flags


def fault_recall(ids: pd.DataFrame, flags: np.ndarray, faults: pd.DataFrame, h: str) -> dict:
    """Per-fault recall and median lead (minutes), overall and per mechanism."""
    from fleetml.evaluation.risk import lead_time_summary, lead_times

    alerts = ids.loc[flags, ["ts", "account_id"]]
    out = {}
    summ = lead_time_summary(lead_times(alerts, faults[["ts", "account_id"]], h))
    out["all"] = {
        "faults": summ["faults"],
        "recall": round(summ["fault_recall"], 3),
        "median_lead_min": round(summ["median_lead_time_s"] / 60, 1),
    }
    for mech, part in faults.groupby("mechanism"):
        s = lead_time_summary(lead_times(alerts, part[["ts", "account_id"]], h))
        out[mech] = {"faults": s["faults"], "recall": round(s["fault_recall"], 3)}
    return out


def runup_share(ids: pd.DataFrame, flags: np.ndarray, runups: pd.DataFrame) -> dict:
    """Share of rows flagged inside restriction/ban run-ups vs overall (chance)."""
    inside = np.zeros(len(ids), dtype=bool)
    ts = pd.DatetimeIndex(pd.to_datetime(ids["ts"], utc=True)).as_unit("ms").asi8
    acc = ids["account_id"].to_numpy()
    start = pd.DatetimeIndex(runups["start"]).as_unit("ms").asi8
    onset = pd.DatetimeIndex(runups["onset"]).as_unit("ms").asi8
    for a, lo, hi in zip(runups["account_id"], start, onset, strict=True):  # a few episodes
        inside |= (acc == a) & (ts >= lo) & (ts < hi)
    return {
        "runup_rows": int(inside.sum()),
        "flagged_in_runups": round(float(flags[inside].mean()), 4) if inside.any() else None,
        "flagged_overall": round(float(flags.mean()), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masters", type=int, default=10)
    ap.add_argument("--servants", type=int, default=3)
    ap.add_argument("--days", type=float, default=21)
    ap.add_argument("--step", default="5m")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--horizon", default="1h,6h,24h")
    ap.add_argument("--holdout-days", type=float, default=5.0)
    ap.add_argument("--budget", type=float, default=0.05, help="Share of held-out rows flagged.")
    ap.add_argument("--keep", default=None, help="Use this folder (home and files) and keep it.")
    ap.add_argument(
        "--features",
        default=None,
        help="Feature settings file passed to `fleetml train risk --features` (default: none).",
    )
    ap.add_argument(
        "--reuse-version",
        default=None,
        help="With --keep: score this already trained version instead of training again.",
    )
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fleetml-risksim-"))
    home, out = work / "home", work / "sim"
    t0 = time.perf_counter()
    if not (out / "ground_truth.json").exists():
        subprocess.run(
            [sys.executable, "-m", "fleetml.cli", "--home", str(home), "simulate"]
            + ["--masters", str(args.masters), "--servants", str(args.servants)]
            + ["--days", str(args.days), "--step", args.step, "--seed", str(args.seed)]
            + ["--out", str(out), "--into-home"],
            check=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
        )
    sim_s = time.perf_counter() - t0
    truth = json.loads((out / "ground_truth.json").read_text())
    end = pd.Timestamp(truth["end"])
    cut = end - pd.Timedelta(days=args.holdout_days)

    t1 = time.perf_counter()
    if args.reuse_version:
        trained = {"version": args.reuse_version}
    else:
        extra = ["--features", str(Path(args.features).resolve())] if args.features else []
        trained = _cli(
            home, "train", "risk", "--horizon", args.horizon, "--to", cut.isoformat(), *extra
        )
    train_s = time.perf_counter() - t1
    version = str(trained["version"])
    scores_file = work / "scores.parquet"
    t2 = time.perf_counter()
    _cli(
        home,
        "score",
        "risk",
        "--from",
        cut.isoformat(),
        "--version",
        version,
        "--out",
        str(scores_file),
    )
    score_s = time.perf_counter() - t2
    shipped = pd.read_parquet(scores_file)

    from sklearn.ensemble import HistGradientBoostingClassifier

    from fleetml.cli_support import open_engine
    from fleetml.config import get_settings, reset_settings
    from fleetml.evaluation.risk import pr_auc
    from fleetml.serving import registry
    from fleetml.serving.risk import MODEL_NAME
    from fleetml.training.risk import load_risk_data, make_labels, parse_horizons

    reset_settings()
    settings = get_settings(str(home))
    engine = open_engine(settings)
    data = load_risk_data(engine)
    frame = data.frame.sort_values(["account_id", "ts"], kind="stable").reset_index(drop=True)
    ts_ms = pd.DatetimeIndex(frame["ts"]).as_unit("ms").asi8
    acc = frame["account_id"].astype(str).to_numpy()
    end_ms = int(ts_ms.max())
    cut_ms = int(cut.value // 10**6)
    horizons = parse_horizons(args.horizon)
    labels = make_labels(ts_ms, acc, data.faults, horizons, end_ms)

    # The shipped model with the event history passed (what score risk gives once serving
    # passes events; the CLI figures above do not have them).
    registry.configure_mlflow(settings)
    model = registry.load_bundle(MODEL_NAME, version=int(version))
    held = np.flatnonzero(ts_ms >= cut_ms)
    events = pd.concat([data.faults, data.enforcement], ignore_index=True)
    try:
        with_events = model.predict(frame, rows=held, events=events)
    except TypeError:  # a fleetml from before event-history features: no such figure
        with_events = None

    # Restriction/ban run-ups anywhere in the data (the held-out period may hold none): their
    # rows scored by the same model, flagged against each horizon's held-out budget threshold.
    # Enforcement is never a fault label, so rows before the cut are not in-sample for this.
    enf_truth = pd.DataFrame(truth["enforcement"])
    enf_truth = enf_truth[enf_truth["kind"].isin(["restricted", "banned"])]
    in_runup = np.zeros(len(frame), dtype=bool)
    for a, lo, hi in zip(
        enf_truth["account_id"],
        pd.DatetimeIndex(pd.to_datetime(enf_truth["precursor_start"], utc=True)).as_unit("ms").asi8,
        pd.DatetimeIndex(pd.to_datetime(enf_truth["onset"], utc=True)).as_unit("ms").asi8,
        strict=True,
    ):
        in_runup |= (acc == a) & (ts_ms >= lo) & (ts_ms < hi)
    runup_rows = np.flatnonzero(in_runup)
    runup_scores = None
    if len(runup_rows):
        try:
            runup_scores = model.predict(frame, rows=runup_rows, events=events)
        except TypeError:
            runup_scores = model.predict(frame, rows=runup_rows)

    metrics = [c for c in frame.columns if c not in ("ts", "account_id")]
    t3 = time.perf_counter()
    Xb = rolling_features(frame, metrics)

    gt = pd.DataFrame(truth["faults"])
    gt["ts"] = pd.to_datetime(gt["onset"], utc=True)
    gt = gt[gt["ts"] >= cut]
    enf = pd.DataFrame(truth["enforcement"])
    runups = enf[enf["kind"].isin(["restricted", "banned"])].assign(
        start=lambda d: pd.to_datetime(d["precursor_start"], utc=True),
        onset=lambda d: pd.to_datetime(d["onset"], utc=True),
    )

    def keyed(scores: pd.DataFrame, h: str) -> pd.Series:
        s = scores[scores["horizon"] == h]
        idx = pd.MultiIndex.from_arrays(
            [pd.DatetimeIndex(s["ts"]).as_unit("ms").asi8, s["account_id"].astype(str)]
        )
        return pd.Series(s["risk"].to_numpy(), index=idx)

    per_h = {}
    for h in horizons:
        h_ms = int(pd.Timedelta(h).value // 10**6)
        y = labels[h]
        test = (ts_ms >= cut_ms) & (ts_ms + h_ms <= end_ms) & ~np.isnan(y)
        train = (ts_ms + h_ms < cut_ms) & ~np.isnan(y)
        base = HistGradientBoostingClassifier(random_state=0).fit(Xb[train], y[train])
        key = pd.MultiIndex.from_arrays([ts_ms[test], acc[test]])
        ids = pd.DataFrame({"ts": frame["ts"].to_numpy()[test], "account_id": acc[test]})
        risks = {
            "baseline_hgb_rolling": base.predict_proba(Xb[test])[:, 1],
            "fleetml_cli": keyed(shipped, h).reindex(key).to_numpy(),
        }
        if with_events is not None:
            risks["fleetml_with_events"] = keyed(with_events, h).reindex(key).to_numpy()
        row = {"rows": int(test.sum()), "positive_rate": round(float(y[test].mean()), 4)}
        for name, r in risks.items():
            r = np.nan_to_num(r, nan=0.0)
            flags = budget_flags(r, args.budget)
            row[name] = {
                "pr_auc": round(pr_auc(y[test], r), 4),
                "at_budget": fault_recall(ids, flags, gt, h),
                "restriction_runups": runup_share(ids, flags, runups),
            }
            if name == "fleetml_with_events" and runup_scores is not None:
                cut_value = float(np.sort(r)[::-1][int(flags.sum()) - 1])
                ru = runup_scores.loc[runup_scores["horizon"] == h, "risk"].to_numpy()
                row[name]["all_restriction_runups"] = {
                    "runup_rows": len(ru),
                    "flagged_in_runups": round(float((ru >= cut_value).mean()), 4),
                    "flagged_overall": round(float(flags.mean()), 4),
                    "mean_risk_in_runups": round(float(ru.mean()), 4),
                    "mean_risk_held_out": round(float(r.mean()), 4),
                }
        at_risk = shipped[shipped["horizon"] == h]
        a_key = pd.MultiIndex.from_arrays(
            [pd.DatetimeIndex(at_risk["ts"]).as_unit("ms").asi8, at_risk["account_id"].astype(str)]
        )
        flag = pd.Series(at_risk["at_risk"].to_numpy(), index=a_key).reindex(key).fillna(False)
        flag = flag.to_numpy(dtype=bool)
        row["fleetml_cli"]["at_stored_threshold"] = {
            "flagged_share": round(float(flag.mean()), 4),
            "precision": round(float(y[test][flag].mean()), 4) if flag.any() else None,
            "faults": fault_recall(ids, flag, gt, h)["all"],
            "restriction_runups": runup_share(ids, flag, runups),
        }
        per_h[h] = row
    print(
        json.dumps(
            {
                "accounts": int(len(np.unique(acc))),
                "rows": len(frame),
                "cut": str(cut),
                "end": str(end),
                "held_out_faults": len(gt),
                "budget_share": args.budget,
                "trained_version": version,
                "train_thresholds": trained.get("thresholds"),
                "horizons": per_h,
                "seconds": {
                    "simulate_import": round(sim_s, 1),
                    "train_cli": round(train_s, 1),
                    "score_cli": round(score_s, 1),
                    "baseline": round(time.perf_counter() - t3, 1),
                },
            },
            default=str,
        )
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
