"""The prediction API's in-memory view of the latest predictions.

The tick writes ``predictions_latest``; every API process keeps one dict of ready answers per
account, rebuilt when the table changed (checked at most every ``check_s`` seconds, by whichever
request comes first), so a lookup does no model work and no database read. The single-account
answer is kept pre-serialised: the runtime asks for it many times a second.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import orjson
import pandas as pd

from fleetml.serving.base import rule_score
from fleetml.store.predictions import latest_version, read_latest


def iso(ms) -> str | None:
    if ms is None or (isinstance(ms, float) and math.isnan(ms)):
        return None
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").isoformat().replace("+00:00", "Z")


@dataclass
class Snapshot:
    """One rebuild of the cache."""

    version: tuple[int, int] = (0, 0)
    tick_at: int | None = None  # the newest tick's clock (max computed_at)
    by_account: dict[str, dict] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # account ids, sorted
    models: dict[str, int | None] = field(default_factory=dict)


def build_predictions(
    latest: pd.DataFrame, groups: dict[str, str], *, stale_after_ms: int
) -> Snapshot:
    """Turn the latest table into one answer per account (the API's prediction shape)."""
    snap = Snapshot()
    if not len(latest):
        return snap
    tick_at = int(latest["computed_at"].max())
    snap.tick_at = tick_at
    models: dict[str, set] = {}
    out: dict[str, dict] = {}
    for row in latest.sort_values(["account_id", "family", "horizon"]).itertuples(index=False):
        acc = row.account_id
        entry = out.get(acc)
        if entry is None:
            entry = out[acc] = {
                "account_id": acc,
                "group": groups.get(acc),
                "computed_at": row.computed_at,
                "data_until": row.data_until,
                "stale": False,
                "anomaly": None,
                "risk": [],
                "fallback": False,
            }
        entry["computed_at"] = max(entry["computed_at"], row.computed_at)
        entry["data_until"] = max(entry["data_until"] or 0, row.data_until or 0)
        detail = row.detail if isinstance(row.detail, dict) else _json(row.detail)
        version = None if pd.isna(row.model_version) else int(row.model_version)
        models.setdefault(row.family, set()).add(version)
        score = None if row.score is None or pd.isna(row.score) else float(row.score)
        if row.family == "anomaly":
            entry["anomaly"] = {
                "score": score,
                "calibrated_score": rule_score(score, detail),
                "is_anomaly": bool(row.flag),
                "top_metrics": list(detail.get("top_metrics", [])),
                "model_version": version,
            }
        elif row.family == "risk":
            item = {
                "horizon": row.horizon,
                "risk": score,
                "at_risk": bool(row.flag),
                "model_version": version,
            }
            if "enforcement_risk" in detail:
                item["enforcement_risk"] = detail["enforcement_risk"]
            entry["risk"].append(item)
        entry["fallback"] = entry["fallback"] or bool(row.fallback)
    for entry in out.values():
        entry["stale"] = bool(tick_at - (entry["data_until"] or 0) > stale_after_ms)
        entry["risk"].sort(key=lambda r: pd.Timedelta(r["horizon"]))
        entry["computed_at"] = iso(entry["computed_at"])
        entry["data_until"] = iso(entry["data_until"])
    snap.by_account = out
    snap.order = sorted(out)
    snap.models = {f: _one(v) for f, v in models.items()}
    for acc, entry in out.items():
        snap.blobs[acc] = orjson.dumps({**entry, "models": snap.models})
    return snap


def _one(versions: set):
    """The version a family was served with (the newest when a promotion is mid-way)."""
    real = [v for v in versions if v is not None]
    return max(real) if real else None


def _json(text) -> dict:
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


class PredictionCache:
    """The latest predictions of every account, rebuilt from the store when a tick wrote."""

    def __init__(self, engine, *, stale_after_s: float, check_s: float = 1.0):
        self.engine = engine
        self.stale_after_ms = int(stale_after_s * 1000)
        self.check_s = check_s
        self.snapshot = Snapshot()
        self._checked = 0.0
        self._loaded = False
        self._lock = threading.Lock()

    def due(self) -> bool:
        """Whether a refresh should look (never loaded, or older than ``check_s``)."""
        return not self._loaded or time.monotonic() - self._checked >= self.check_s

    def refresh(self, *, force: bool = False) -> Snapshot:
        # Another thread refreshing: serve what we have, unless nothing was ever loaded (then
        # wait for it rather than answer 404 for accounts that have predictions).
        if not self._lock.acquire(blocking=force or not self._loaded):
            return self.snapshot
        try:
            if self._loaded and not force and not self.due():
                return self.snapshot  # refreshed by the thread that held the lock
            version = latest_version(self.engine)
            if version != self.snapshot.version or force:
                from fleetml.services.data import account_groups

                snap = build_predictions(
                    read_latest(self.engine),
                    account_groups(self.engine),
                    stale_after_ms=self.stale_after_ms,
                )
                snap.version = version
                self.snapshot = snap
            self._loaded = True
            self._checked = time.monotonic()
            return self.snapshot
        finally:
            self._lock.release()
