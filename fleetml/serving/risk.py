"""Failure-risk scoring from the store with a registered model (``fleetml score risk``).

Training imports :data:`MODEL_NAME` and :func:`score_frame` from here, never the reverse.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from fleetml.models.risk import RiskModel
from fleetml.services.data import load_fleet_data

MODEL_NAME = "fleetml-risk"


def _chunks(frame: pd.DataFrame, groups: dict[str, str], max_rows: int) -> list[np.ndarray]:
    """Row positions of chunks of whole groups (peer features need a whole group together)."""
    if len(frame) <= max_rows:
        return [np.arange(len(frame))]
    acc = frame["account_id"].astype(str).to_numpy()
    group = pd.Series(acc).map(groups).fillna(pd.Series(acc)).to_numpy(dtype=object)
    codes, _ = pd.factorize(group)
    sizes = np.bincount(codes)
    order_groups = np.argsort(-sizes, kind="stable")
    chunk_of_group = np.zeros(len(sizes), dtype=np.int64)
    chunk, filled = 0, 0
    for g in order_groups:  # few groups: a loop over groups, not rows
        if filled and filled + sizes[g] > max_rows:
            chunk, filled = chunk + 1, 0
        chunk_of_group[g] = chunk
        filled += sizes[g]
    row_chunk = chunk_of_group[codes]
    return [np.flatnonzero(row_chunk == c) for c in range(chunk + 1)]


def score_frame(
    model: RiskModel,
    frame: pd.DataFrame,
    *,
    start=None,
    chunk_rows: int = 1_000_000,
    events: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Long-format risk for every row of ``frame`` at or after ``start`` (earlier rows are
    history only), in chunks of whole groups to bound memory. ``events``: stored fault and
    enforcement events for a model whose features include event history."""
    frame = frame.sort_values(["account_id", "ts"], kind="stable").reset_index(drop=True)
    parts = []
    for idx in _chunks(frame, model.account_groups, chunk_rows):
        part = frame.iloc[idx].reset_index(drop=True)
        rows = None
        if start is not None:
            rows = np.flatnonzero((part["ts"] >= pd.Timestamp(start)).to_numpy())
            if not len(rows):
                continue
        parts.append(_predict(model, part, rows, events))
    if not parts:
        return model.to_long(model.risk_wide(model.build_features(frame.iloc[:0])))
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["horizon", "account_id", "ts"], kind="stable").reset_index(drop=True)


def _predict(model, part, rows, events):
    if events is None or not getattr(model, "uses_events", False):
        return model.predict(part, rows=rows)
    return model.predict(part, rows=rows, events=events)


def read_history_events(engine, start, end, *, accounts=None) -> pd.DataFrame:
    """Stored fault and enforcement events in ``[start, end]``: what the event-history
    features read (batch scoring, the live tick and on-demand scores all call this)."""
    from fleetml.store.events import read_events
    from fleetml.vocab import ENFORCEMENT_KINDS, FAULT_KINDS

    return read_events(
        engine,
        accounts=accounts,
        kinds=sorted(FAULT_KINDS | ENFORCEMENT_KINDS),
        start=pd.Timestamp(start),
        end=pd.Timestamp(end),
    )


def history_events(engine, model, frame: pd.DataFrame) -> pd.DataFrame | None:
    """The stored fault and enforcement events a model's event-history features read over the
    span of ``frame`` (None when it has none)."""
    from fleetml.features.history import history_lookback_ms

    cfg = getattr(model, "feature_config", None)
    if cfg is None or not getattr(model, "uses_events", False) or not len(frame):
        return None
    reach = pd.Timedelta(milliseconds=history_lookback_ms(cfg))
    return read_history_events(engine, pd.Timestamp(frame["ts"].min()) - reach, frame["ts"].max())


def score_risk(engine, settings, *, start=None, end=None, accounts=None, version=None):
    """Score stored samples with the champion (or ``version``); returns (scores, summary)."""
    from fleetml.serving import registry

    t0 = time.perf_counter()
    registry.configure_mlflow(settings)
    model = registry.load_bundle(MODEL_NAME, version=version)
    cfg = model.feature_config
    from fleetml.features import FeatureConfig

    # The same look-back the model's features need (FeatureConfig's defaults when none stored).
    history = pd.Timedelta(milliseconds=(cfg or FeatureConfig()).lookback_ms())
    data = load_fleet_data(engine, start=start, end=end, accounts=accounts, history=history)
    if not len(data.frame):
        raise ValueError("no stored samples in the selected range/accounts")
    events = history_events(engine, model, data.frame)
    scores = score_frame(model, data.frame, start=start, events=events)
    summary = {
        "model": MODEL_NAME,
        "version": getattr(model, "registered_version", version),
        "rows": len(scores),
        "accounts": int(scores["account_id"].nunique()) if len(scores) else 0,
        "horizons": list(model.horizons),
        "thresholds": model.thresholds,
        "at_risk": {h: int(g["at_risk"].sum()) for h, g in scores.groupby("horizon")},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return scores, summary
