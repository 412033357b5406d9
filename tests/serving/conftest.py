"""Fixtures for serving tests: a small fleet in a SQLite home and models fitted in memory."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def small_fleet(n_accounts: int = 4, hours: int = 30, step: str = "5min", seed: int = 1):
    """Wide frame: daily-ish seasonality, per-account levels, an incident late on acc-1."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(
        "2026-03-01",
        periods=int(pd.Timedelta(f"{hours}h") / pd.Timedelta(step)),
        freq=step,
        tz="UTC",
    )
    n = len(ts)
    frames = []
    for k in range(n_accounts):
        base = 50.0 * (k + 1)
        phase = np.sin(np.arange(n) * 2 * np.pi / (24 * 12))
        latency = base * (1 + 0.1 * phase) + rng.normal(0, base * 0.03, n)
        sent = rng.poisson(30 + 10 * phase.clip(0), n).astype(float)
        failures = rng.poisson(0.5, n).astype(float)
        if k == 1:
            latency[int(n * 0.85) : int(n * 0.85) + 10] *= 3
            failures[int(n * 0.85) : int(n * 0.85) + 10] += 20
        frames.append(
            pd.DataFrame(
                {
                    "ts": ts,
                    "account_id": f"acc-{k}",
                    "reply_latency_ms": latency,
                    "msgs_sent": sent,
                    "send_failures": failures,
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    frame["ts"] = frame["ts"].astype("datetime64[ms, UTC]")
    return frame


@pytest.fixture
def fleet_frame():
    return small_fleet()


def fit_anomaly(frame: pd.DataFrame, kinds: dict | None = None, **config):
    """An anomaly bundle trained in memory on ``frame`` (no MLflow)."""
    from fleetml.features import FeatureConfig, build_features, feature_columns
    from fleetml.training.anomaly import AnomalyTrainConfig, fit_model

    fc = config.pop("feature_config", FeatureConfig(seasonal=False))
    cfg = AnomalyTrainConfig(random_state=0, feature_config=fc, **config)
    feats = build_features(frame, kinds=kinds, config=fc)
    return fit_model(feats, feature_columns(feats), cfg, kinds=kinds)


def fit_risk(frame: pd.DataFrame, faults: pd.DataFrame):
    from fleetml.features import FeatureConfig
    from fleetml.training.risk import RiskTrainConfig, fit_risk

    cfg = RiskTrainConfig(horizons=("1h", "6h"), feature_config=FeatureConfig(seasonal=False))
    return fit_risk(frame, faults=faults, config=cfg).model


def crash_faults(frame: pd.DataFrame, seed: int, n: int = 24) -> pd.DataFrame:
    """``n`` crashes at random sample times of ``frame`` (none in its last hour), spread over
    the first three accounts: the event history the live-versus-batch risk tests serve."""
    ts = pd.DatetimeIndex(frame["ts"].unique()).sort_values()
    picks = sorted(np.random.default_rng(seed).choice(len(ts) - 12, size=n, replace=False))
    return pd.DataFrame(
        {
            "ts": [ts[i] for i in picks],
            "account_id": [f"acc-{k % 3}" for k in range(len(picks))],
            "kind": "crash",
        }
    )
