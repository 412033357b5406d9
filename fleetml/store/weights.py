"""Routing weights in effect: one row per account, rewritten by every tick that decides.

API replicas poll :func:`weights_version` (the newest tick that wrote weights) and reread the
table only when it moved.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from fleetml.store.audit import connect
from fleetml.store.decisions import dialect_insert, json_safe
from fleetml.store.tables import accounts, weights

WEIGHT_COLUMNS = ("account_id", "group", "weight", "target", "reasons", "models", "ts_ms")
_REQUIRED = ("account_id", "group", "weight", "target", "reasons")


def write_weights(
    conn: sa.Connection, frame: pd.DataFrame, *, ts_ms: int, models: Mapping[str, Any]
) -> int:
    """Store each account's weight as of ``ts_ms``; returns how many rows were written.

    ``frame`` has account_id, group, weight, target (finite, >= 0) and reasons (a list of
    strings per account); other columns are ignored. ``models`` (the versions in effect) is
    stored with every row. Accounts not in ``frame`` keep their row.
    """
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"weights frame lacks columns {missing}; it needs {list(_REQUIRED)}")
    if not len(frame):
        return 0
    weight = pd.to_numeric(frame["weight"], errors="coerce").to_numpy(dtype=float)
    target = pd.to_numeric(frame["target"], errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isfinite(weight) & np.isfinite(target) & (weight >= 0) & (target >= 0))
    if bad.any():
        accounts_ = frame["account_id"].astype(str).to_numpy()[bad][:5].tolist()
        raise ValueError(
            f"weights must be finite and >= 0; {int(bad.sum())} are not (accounts {accounts_})"
        )
    models_ = json_safe(dict(models or {}))
    payload = [
        {
            "account_id": a,
            "group": g,
            "weight": w,
            "target": t,
            "reasons": json_safe(r if r is not None else []),
            "models": models_,
            "ts_ms": int(ts_ms),
        }
        for a, g, w, t, r in zip(
            frame["account_id"].astype(str).tolist(),
            frame["group"].astype(str).tolist(),
            weight.tolist(),
            target.tolist(),
            frame["reasons"].tolist(),
            strict=True,
        )
    ]
    stmt = dialect_insert(conn)(weights)
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id"],
        set_={c: stmt.excluded[c] for c in WEIGHT_COLUMNS if c != "account_id"},
    )
    conn.execute(stmt, payload)
    return len(payload)


def read_weights(bind, *, group: str | None = None) -> pd.DataFrame:
    """Weights in effect (one group's, or all), by account: :data:`WEIGHT_COLUMNS`."""
    query = sa.select(*(weights.c[c] for c in WEIGHT_COLUMNS)).order_by(
        weights.c.group, weights.c.account_id
    )
    if group is not None:
        query = query.where(weights.c.group == group)
    with connect(bind) as conn:
        rows = conn.execute(query).all()
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in WEIGHT_COLUMNS})
    return pd.DataFrame.from_records(rows, columns=list(WEIGHT_COLUMNS))


def weights_version(bind) -> int | None:
    """The newest tick that wrote weights (epoch ms), or None before the first."""
    with connect(bind) as conn:
        return conn.execute(sa.select(sa.func.max(weights.c.ts_ms))).scalar()


def group_known(bind, *, group: str) -> bool:
    """Whether any account belongs to ``group``: in the registry, or in the weights (a master
    without a group of its own forms a group named after itself)."""
    with connect(bind) as conn:
        for table, live in ((weights, None), (accounts, accounts.c.retired_at.is_(None))):
            query = sa.select(sa.literal(1)).where(table.c.group == group).limit(1)
            if live is not None:
                query = query.where(live)
            if conn.execute(query).first() is not None:
                return True
    return False
