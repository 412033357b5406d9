"""Builders for alert tests: a tick's predictions frame, row by row."""

from __future__ import annotations

import pandas as pd

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def predictions(*rows: dict) -> pd.DataFrame:
    """A tick's predictions; each row names account_id and family, the rest has defaults."""
    defaults = {
        "horizon": "",
        "score": 0.9,
        "flag": True,
        "run": 1,
        "data_until": NOW - 60_000,
        "stale": False,
        "model_version": 3,
        "fallback": False,
        "top_metrics": "",
    }
    frame = pd.DataFrame([{**defaults, **r} for r in rows])
    return frame.astype({"flag": bool, "stale": bool, "fallback": bool})


def anomaly(account_id: str, *, flag: bool = True, **kw) -> dict:
    return {"account_id": account_id, "family": "anomaly", "flag": flag, **kw}


def risk(account_id: str, horizon: str, *, flag: bool = True, run: int = 2, **kw) -> dict:
    return {
        "account_id": account_id,
        "family": "risk",
        "horizon": horizon,
        "flag": flag,
        "run": run,
        **kw,
    }
