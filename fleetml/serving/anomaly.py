"""Anomaly scoring from the store with a registered model (``fleetml score anomaly``, notebooks).

Training imports :data:`MODEL_NAME` from here, never the reverse.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from fleetml.evaluation.events import alert_onsets
from fleetml.services.data import load_fleet_data

MODEL_NAME = "fleetml-anomaly"


def score_anomaly(
    engine,
    settings,
    *,
    start=None,
    end=None,
    accounts=None,
    version: int | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score every stored sample in the range with the champion (or ``version``).

    Features need history before ``start``: samples from the model's feature look-back before
    ``start`` are read too, then dropped from the output. Returns ``(scores, summary)``.
    """
    from fleetml.serving import registry

    registry.configure_mlflow(settings)
    model = registry.load_bundle(MODEL_NAME, version=version)
    read_start = start
    if start is not None:
        read_start = pd.Timestamp(start) - pd.Timedelta(milliseconds=lookback_ms(model))
    data = load_fleet_data(engine, start=read_start, end=end, accounts=accounts)
    frame = data.frame
    if not len(frame):
        scores = pd.DataFrame({c: pd.Series(dtype=t) for c, t in _RESULT_DTYPES.items()})
    else:
        scores = model.predict(frame)
        if start is not None:
            scores = scores[scores["ts"] >= pd.Timestamp(start)].reset_index(drop=True)
    summary = {
        "model": MODEL_NAME,
        "version": getattr(model, "registered_version", version),
        "rows": len(scores),
        "accounts": int(scores["account_id"].nunique()) if len(scores) else 0,
        "anomalies": int(scores["is_anomaly"].sum()) if len(scores) else 0,
        "alerts": len(alert_onsets(scores)) if len(scores) else 0,
    }
    return scores, summary


_RESULT_DTYPES = {
    "ts": "datetime64[ms, UTC]",
    "account_id": "str",
    "anomaly_score": "float64",
    "calibrated_score": "float64",
    "is_anomaly": "bool",
    "top_metrics": "str",
}


def lookback_ms(model) -> int:
    """How much history before a row the model's features read (its feature look-back)."""
    from fleetml.features import FeatureConfig

    config = getattr(model, "feature_config", None) or FeatureConfig()
    return int(config.lookback_ms())
