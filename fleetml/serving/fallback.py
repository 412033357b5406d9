"""Heuristics that answer when a model family has no usable champion (degraded mode).

They are deliberately simple, documented and model-free, so the runtime always gets an answer
(``fallback: true``, ``model_version: null``) instead of an error:

* **anomaly**: the largest robust z-score of an account's newest sample against its own recent
  window (median and 1.4826 x MAD per metric over the window held in memory); the score is
  ``min(1, max|z| / 10)`` and the sample is anomalous at ``max|z| >= 6`` (score 0.6), with the
  three metrics of largest ``|z|`` as ``top_metrics``.
* **risk**: recent fault history. An account's fault rate is ``(faults in the last 7 days + 0.1) /
  7 days``; the risk of a fault within horizon ``h`` is ``1 - exp(-rate * h)`` (a Poisson
  process), at risk from 0.5.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fleetml.serving.base import empty_result

ANOMALY_Z_SCALE = 10.0
ANOMALY_Z_FLAG = 6.0
RISK_HISTORY_MS = 7 * 86_400_000
RISK_PRIOR_FAULTS = 0.1
RISK_FLAG = 0.5
DEFAULT_HORIZONS = ("1h", "6h", "24h")


def _metric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in ("ts", "account_id")]


class HeuristicAnomaly:
    """Robust z-score of each account's newest sample (see the module docstring)."""

    family = "anomaly"
    version = None
    fallback = True

    def __init__(self, reason: str = "no champion", *, lookback_ms: int = 86_400_000):
        self.reason = reason
        self._lookback = int(lookback_ms)

    def lookback_ms(self) -> int:
        return self._lookback

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Every row against its account's statistics over the whole frame (not causal: for
        inspection only; the live loop uses :meth:`predict_latest`)."""
        return self._score(frame, latest=False)

    def predict_latest(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self._score(frame, latest=True)

    def _score(self, frame: pd.DataFrame, *, latest: bool) -> pd.DataFrame:
        if not len(frame):
            return empty_result({"top_metrics": "str"})
        metrics = _metric_columns(frame)
        acc = frame["account_id"].astype(str)
        values = frame[metrics].astype("float64")
        grouped = values.groupby(acc.to_numpy(), sort=False)
        med = grouped.transform("median")
        mad = (values - med).abs().groupby(acc.to_numpy(), sort=False).transform("median")
        scale = (1.4826 * mad).where(lambda s: s > 0, np.nan)
        z = ((values - med) / scale).abs().to_numpy()
        z = np.nan_to_num(z, nan=0.0, posinf=0.0)
        if latest:  # an account's rows come in time order: its last row is its newest
            rows = np.flatnonzero((~acc.duplicated(keep="last")).to_numpy())
        else:
            rows = np.arange(len(frame))
        zr = z[rows]
        zmax = zr.max(axis=1) if zr.shape[1] else np.zeros(len(rows))
        order = np.argsort(-zr, axis=1)[:, :3] if zr.shape[1] else np.zeros((len(rows), 0), int)
        names = np.asarray(metrics, dtype=object)
        top = [
            ";".join(names[o][zr[i, o] > 3.0]) if zmax[i] >= ANOMALY_Z_FLAG else ""
            for i, o in enumerate(order)
        ]
        return pd.DataFrame(
            {
                "ts": pd.to_datetime(frame["ts"].to_numpy()[rows], utc=True),
                "account_id": acc.to_numpy()[rows].astype(str),
                "family": "anomaly",
                "horizon": "",
                "score": np.minimum(1.0, zmax / ANOMALY_Z_SCALE),
                "flag": zmax >= ANOMALY_Z_FLAG,
                "top_metrics": top,
            }
        )


class HeuristicRisk:
    """Risk from recent fault history (see the module docstring)."""

    family = "risk"
    version = None
    fallback = True

    def __init__(self, reason: str = "no champion", *, horizons=DEFAULT_HORIZONS):
        self.reason = reason
        self.horizons = tuple(horizons)
        self.thresholds = {h: RISK_FLAG for h in self.horizons}

    def lookback_ms(self) -> int:
        return RISK_HISTORY_MS

    def predict(self, frame: pd.DataFrame, faults: pd.DataFrame | None = None) -> pd.DataFrame:
        return self._score(frame, faults, latest=False)

    def predict_latest(
        self, frame: pd.DataFrame, faults: pd.DataFrame | None = None
    ) -> pd.DataFrame:
        return self._score(frame, faults, latest=True)

    def _score(self, frame, faults, *, latest: bool) -> pd.DataFrame:
        if not len(frame):
            return empty_result()
        acc = frame["account_id"].astype(str)
        ts_ms = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("ms").astype("int64").to_numpy()
        rows = np.flatnonzero(~acc.duplicated(keep="last").to_numpy()) if latest else None
        if rows is None:
            rows = np.arange(len(frame))
        ids = acc.to_numpy()[rows].astype(str)
        at = ts_ms[rows]
        counts = np.zeros(len(rows))
        if faults is not None and len(faults):
            f_acc = faults["account_id"].astype(str).to_numpy()
            f_ts = pd.to_datetime(faults["ts"], utc=True).dt.as_unit("ms").astype("int64")
            f_ts = f_ts.to_numpy()
            by_acc = pd.Series(f_ts).groupby(f_acc)
            lists = {a: np.sort(v.to_numpy()) for a, v in by_acc}
            for i, (a, t) in enumerate(zip(ids, at, strict=True)):  # per account, few faults
                times = lists.get(a)
                if times is not None:
                    counts[i] = np.searchsorted(times, t, "right") - np.searchsorted(
                        times, t - RISK_HISTORY_MS, "left"
                    )
        rate = (counts + RISK_PRIOR_FAULTS) / RISK_HISTORY_MS
        parts = []
        for h in self.horizons:
            h_ms = pd.Timedelta(h) / pd.Timedelta(milliseconds=1)
            risk = 1.0 - np.exp(-rate * h_ms)
            parts.append(
                pd.DataFrame(
                    {
                        "ts": pd.to_datetime(at, unit="ms", utc=True),
                        "account_id": ids,
                        "family": "risk",
                        "horizon": h,
                        "score": risk,
                        "flag": risk >= RISK_FLAG,
                    }
                )
            )
        return pd.concat(parts, ignore_index=True)
