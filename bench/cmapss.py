"""NASA C-MAPSS FD001 through the product path: import, ``train risk``, ``score risk``.

    PYTHONPATH=. python bench/cmapss.py [--data ../shared/benchmarks/cmapss] [--keep DIR]

Each engine is an account and each cycle one hour; the 3 operational settings and 21 sensors are
metrics. Training engine ``k`` starts ``2 k`` hours after the first (a fleet whose accounts joined
over time, so failures spread along the time axis the risk training splits on) and its last cycle
is followed, one hour later, by a ``crash`` event. Everything is imported into a fresh temporary
home with :mod:`fleetml.ingest.files`; :func:`fleetml.training.risk.train_risk` trains a 30 h
horizon on the training engines (registered in MLflow like ``fleetml train risk``), then
:func:`fleetml.serving.risk.score_risk` scores the test engines. The judgement is "fails within
30 cycles" at each test engine's last cycle; the truth is ``RUL <= 30`` (25 of 100 engines).

The feature windows are set for hourly cycles (the FeatureConfig knob): means over 5-30 h, spread
and slopes over 10-60 h, no seasonal or peer features (engines have neither a day cycle nor
groups). Prints one JSON line with precision, recall, F1 and PR-AUC.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["unit", "cycle", "setting_1", "setting_2", "setting_3"] + [
    f"sensor_{i}" for i in range(1, 22)
]
BASE = pd.Timestamp("2020-01-01", tz="UTC")
HORIZON = "30h"


def load(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep=r"\s+", header=None, names=COLUMNS)


def to_wide(raw: pd.DataFrame, prefix: str, stagger_h: float) -> pd.DataFrame:
    """Canonical wide metrics frame: one account per engine, one hourly sample per cycle."""
    unit = raw["unit"].to_numpy()
    offset = pd.to_timedelta((unit - 1) * stagger_h + raw["cycle"].to_numpy() - 1, unit="h")
    frame = pd.DataFrame(
        {"ts": (BASE + offset).as_unit("ms"), "account_id": [f"{prefix}-{u:03d}" for u in unit]}
    )
    for col in COLUMNS[2:]:
        frame[col] = raw[col].astype(np.float64).to_numpy()
    return frame.sort_values(["account_id", "ts"]).reset_index(drop=True)


def feature_config():
    from fleetml.features import FeatureConfig

    return FeatureConfig(
        mean_windows=("5h", "10h", "20h", "30h"),
        std_windows=("10h", "30h"),
        slope_windows=("10h", "30h", "60h"),
        roc_windows=("5h", "10h"),
        ratios=(),
        ratio_windows=(),
        seasonal=False,
        peers=False,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", default=str(Path(__file__).resolve().parents[2] / "shared/benchmarks/cmapss")
    )
    ap.add_argument("--keep", default=None, help="Use this folder as the home and keep it.")
    ap.add_argument("--target-precision", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    data = Path(args.data)
    home = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fleetml-cmapss-"))
    t0 = time.perf_counter()

    from fleetml.cli_support import open_engine
    from fleetml.config import get_settings, reset_settings
    from fleetml.evaluation.risk import pr_auc, precision_recall_at
    from fleetml.ingest.files import import_events_frame, import_metrics_frame
    from fleetml.serving.risk import score_risk
    from fleetml.training.risk import RiskTrainConfig, train_risk

    reset_settings()
    settings = get_settings(str(home))
    settings.ensure_home()
    engine = open_engine(settings)

    train = to_wide(load(data / "train_FD001.txt"), "train", stagger_h=2.0)
    test = to_wide(load(data / "test_FD001.txt"), "test", stagger_h=2.0)
    rul = np.loadtxt(data / "RUL_FD001.txt")
    last = train.groupby("account_id")["ts"].max()
    faults = pd.DataFrame(
        {
            "ts": last.to_numpy() + pd.Timedelta("1h"),
            "account_id": last.index,
            "kind": "crash",
            "detail": "end of run (C-MAPSS)",
        }
    )
    with engine.begin() as conn:
        import_metrics_frame(conn, train, actor="bench")
        import_metrics_frame(conn, test, actor="bench")
        import_events_frame(conn, faults, actor="bench")
    import_s = time.perf_counter() - t0

    config = RiskTrainConfig(
        horizons=(HORIZON,),
        target_precision=args.target_precision,
        random_state=args.seed,
        val_fraction=0.25,
        test_fraction=0.0,
        max_negative_ratio=0,
        enforcement=False,
        feature_config=feature_config(),
    )
    t1 = time.perf_counter()
    result = train_risk(
        engine, settings, accounts=sorted(train["account_id"].unique()), config=config
    )
    train_s = time.perf_counter() - t1

    t1 = time.perf_counter()
    scores, _ = score_risk(engine, settings, accounts=sorted(test["account_id"].unique()))
    score_s = time.perf_counter() - t1
    at_end = scores[scores["horizon"] == HORIZON].sort_values("ts").groupby("account_id").tail(1)
    at_end = at_end.sort_values("account_id").reset_index(drop=True)
    truth = (rul <= 30).astype(int)
    m = precision_recall_at(truth, at_end["at_risk"].astype(float).to_numpy(), 0.5)
    out = {
        "benchmark": "C-MAPSS FD001, fails within 30 cycles at the last test cycle",
        "test_engines": len(at_end),
        "positives": int(truth.sum()),
        "precision": round(m["precision"], 4),
        "recall": round(m["recall"], 4),
        "f1": round(m["f1"], 4),
        "pr_auc": round(pr_auc(truth, at_end["risk"].to_numpy()), 4),
        "threshold": result["thresholds"][HORIZON],
        "threshold_note": result["notes"][HORIZON],
        "tp": m["tp"],
        "fp": m["fp"],
        "fn": m["fn"],
        "model_version": result["version"],
        "n_features": result["n_features"],
        "import_s": round(import_s, 1),
        "train_s": round(train_s, 1),
        "score_s": round(score_s, 1),
        "reference": {"lstm_f1": 0.96, "rolling_template_f1": 0.87},
    }
    print(json.dumps(out))
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
