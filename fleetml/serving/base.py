"""One interface for every served model family (anomaly, risk, forecast) and their fallbacks.

A :class:`ServedModel` wraps a registered bundle (or a heuristic) and answers in one result
shape, keyed by the fleet's ids: one row per (account, data point, horizon) with

``ts`` (the data point, UTC), ``account_id``, ``family``, ``horizon`` ("" when the family has none),
``score`` (anomaly score in [0, 1], calibrated risk, or the forecast ``yhat``), ``flag``
(``is_anomaly`` / ``at_risk`` / a predicted peak), plus family-specific columns (``top_metrics``,
forecast intervals).

New families plug in by implementing the protocol; the live loop, the API and the CLI call only
these methods.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import pandas as pd


def rule_score(score, detail):
    """The anomaly score the alert rule compared with its threshold: the prediction's
    ``detail.calibrated_score`` when it carries a finite one (a habituating model reports a lower
    ``score`` on rows that are no news), else ``score``."""
    calibrated = detail.get("calibrated_score") if isinstance(detail, Mapping) else None
    if isinstance(calibrated, int | float) and math.isfinite(calibrated):
        return float(calibrated)
    return score


#: Columns every family returns, in this order (families may add more after them).
RESULT_COLUMNS = ["ts", "account_id", "family", "horizon", "score", "flag"]

#: What the live scorer returns per (account, family, horizon) in a tick: the contract between
#: the scorer, the prediction store and the alert rules. ``run`` counts consecutive flagged data
#: points; ``data_until`` is the newest sample scored (epoch ms). The tick adds ``stale``.
PREDICTION_COLUMNS = (
    "account_id",
    "family",
    "horizon",
    "score",
    "flag",
    "run",
    "data_until",
    "model_version",
    "fallback",
    "top_metrics",
    "detail",
)


@runtime_checkable
class ServedModel(Protocol):
    """What serving needs of a model family."""

    #: "anomaly", "risk" or "forecast".
    family: str
    #: Registered version, or ``None`` for a heuristic fallback.
    version: int | None
    #: True when a heuristic answers instead of a registered model.
    fallback: bool

    def lookback_ms(self) -> int:
        """How much history before a data point its prediction reads."""
        ...

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Predictions for every row of a wide metrics frame (``ts``, ``account_id``, metrics)."""
        ...

    def predict_latest(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Predictions at each account's newest row of ``frame`` only."""
        ...


def empty_result(extra: dict[str, str] | None = None) -> pd.DataFrame:
    """An empty result frame with the common columns (and ``extra`` name -> dtype)."""
    dtypes = {
        "ts": "datetime64[ms, UTC]",
        "account_id": "str",
        "family": "str",
        "horizon": "str",
        "score": "float64",
        "flag": "bool",
        **(extra or {}),
    }
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})
