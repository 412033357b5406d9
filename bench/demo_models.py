"""The first models a `fleetml demo` user trains: alert volume, positives per horizon, promotion.

    PYTHONPATH=. python bench/demo_models.py [--masters 10] [--servants 3] [--history-days 3]
        [--seed 7] [--streamed-days 0] [--keep DIR]

Simulates the demo fleet exactly as ``fleetml demo`` does (its :func:`fleetml.demo.load_history`
with the demo's defaults, ending where the live stream would start), into a fresh home, then
trains the anomaly and risk families through the library calls behind ``fleetml train anomaly``
and ``fleetml train risk`` (MLflow, registry and promotion included). Prints, for the anomaly
model, alert onsets per account-day and the share of alerting rows on the held-out period; for
the risk model, positive rows per horizon and split and, per trained horizon, the threshold with
its rule and reason, at-risk onsets per account-day on validation and on the held-out period,
PR-AUC and recall at the threshold; and for both, whether the version was promoted and why.
The last line is one JSON object.

``--streamed-days D`` also loads the first ``D`` days of the demo's live stream (seed + 1, from
where the history ends, as ``fleetml demo`` streams it) before training: the store a user has
after letting the demo run that long.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # The defaults are `fleetml demo`'s own.
    ap.add_argument("--masters", type=int, default=10)
    ap.add_argument("--servants", type=int, default=3)
    ap.add_argument("--history-days", type=float, default=3.0)
    ap.add_argument("--live-days", type=float, default=1.0)
    ap.add_argument("--speed", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--streamed-days", type=float, default=0.0)
    ap.add_argument("--keep", default=None, help="Use this folder as the home and keep it.")
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    from fleetml.cli_support import open_engine
    from fleetml.config import get_settings
    from fleetml.demo import load_history
    from fleetml.simulate.live import live_start
    from fleetml.training.anomaly import train_anomaly
    from fleetml.training.risk import train_risk

    home = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fleetml-demo-bench-"))
    settings = get_settings(home)
    settings.ensure_home()
    engine = open_engine(settings)
    t0 = time.perf_counter()
    # As `fleetml demo`: the history ends where the live stream starts.
    stream_start = live_start(args.live_days, args.speed)
    loaded = load_history(
        engine,
        masters=args.masters,
        servants=args.servants,
        days=args.history_days,
        end=stream_start,
        seed=args.seed,
        workdir=home / "cache" / "demo",
    )
    if args.streamed_days > 0:
        # What the demo's live thread would have stored by now (same config, seed + 1).
        streamed = load_history(
            engine,
            masters=args.masters,
            servants=args.servants,
            days=args.streamed_days,
            end=stream_start + pd.Timedelta(days=args.streamed_days),
            seed=args.seed + 1,
            workdir=home / "cache" / "demo-live",
        )
        loaded = {**loaded, "streamed_samples": streamed["samples"]}
    sim_s = time.perf_counter() - t0
    print(
        f"demo fleet: {loaded['accounts']} accounts, {loaded['samples']} samples, "
        f"{loaded['events']} events ({sim_s:.1f} s)"
    )

    anomaly = train_anomaly(engine, settings, log_plots=False)
    print(
        f"anomaly v{anomaly['version']}: {anomaly['test_alerts_per_account_day']:.2f} alert "
        f"onsets per account-day, {100 * anomaly['test_alert_rate']:.1f} % of held-out rows "
        f"flagged, F1 {anomaly.get('test_f1')}; promoted {anomaly['promoted']}: "
        f"{anomaly['promotion_reason']}"
    )
    risk = train_risk(engine, settings)
    for h, counts in risk.get("positives", {}).items():
        print(f"risk {h}: positive rows {counts}")
    for h, row in _risk_horizons(risk).items():
        print(
            f"risk {h}: threshold {row['threshold']:.4g} ({row['rule']}); at-risk onsets per "
            f"account-day {_fmt(row['val_alerts_per_account_day'])} validation, "
            f"{_fmt(row['test_alerts_per_account_day'])} held out; "
            f"PR-AUC {_fmt(row['pr_auc'], 3)}, recall at the threshold {_fmt(row['recall'], 3)}"
            f"\n  reason: {row['reason']}"
        )
    for warning in risk.get("warnings", []):
        print(f"risk warning: {warning}")
    print(
        f"risk v{risk['version']}: horizons {risk['horizons']}; promoted {risk['promoted']}: "
        f"{risk['promotion_reason']}"
    )
    summary = {
        "fleet": loaded,
        "anomaly": {
            k: anomaly.get(k)
            for k in (
                "version",
                "promoted",
                "promotion_reason",
                "gate_passed",
                "sanity_passed",
                "test_alerts_per_account_day",
                "test_alert_rate",
                "test_f1",
                "test_n_windows",
                "threshold",
                "warnings",
            )
        },
        "risk": {
            k: risk.get(k)
            for k in (
                "version",
                "promoted",
                "promotion_reason",
                "gate_passed",
                "sanity_passed",
                "horizons",
                "positives",
                "sanity_reason",
                "warnings",
            )
        },
        "risk_horizons": _risk_horizons(risk),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(summary, default=str))
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)


def _fmt(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _risk_horizons(risk: dict) -> dict[str, dict]:
    """Per trained horizon: threshold, its rule and reason, alert volume, PR-AUC, recall."""
    rules = risk.get("threshold_rules", {})
    return {
        h: {
            "threshold": m.get("threshold"),
            "rule": rules.get(h, {}).get("rule"),
            "reason": rules.get(h, {}).get("reason"),
            "val_alerts_per_account_day": m.get("val_alerts_per_account_day"),
            "test_alerts_per_account_day": m.get("alerts_per_account_day"),
            "pr_auc": m.get("pr_auc"),
            "recall": m.get("recall"),
            "val_recall": m.get("val_recall"),
            "val_precision": m.get("val_precision"),
            "faults_caught": m.get("faults_caught"),
            "faults": m.get("faults"),
        }
        for h, m in risk.get("metrics", {}).items()
    }


if __name__ == "__main__":
    main()
