"""The forecast cache: one row per (scope, target, metric, horizon), newest write wins.

``payload`` is a JSON object with ``points`` ``[{ts, yhat, lo80, hi80, lo95, hi95}]``, ``peaks``
``[{ts, yhat}]`` and the step (``step_seconds``), plus how the forecast was made (method,
fallback, history length); see :func:`fleetml.services.forecasting.forecast_record`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from fleetml.store.audit import connect
from fleetml.store.tables import forecast_history, forecasts

SCOPES = ("account", "group")
_COLUMNS = ("scope", "target", "metric", "horizon", "computed_at", "model_version", "payload")


def write_forecasts(conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Upsert forecast rows inside the caller's transaction; returns the number written.

    Each row has ``scope``, ``target``, ``metric``, ``horizon`` (steps), ``computed_at`` (epoch
    ms), ``model_version`` (None for the fallback) and ``payload`` (a JSON-able dict).
    """
    if not rows:
        return 0
    bad = sorted({str(r["scope"]) for r in rows} - set(SCOPES))
    if bad:
        raise ValueError(f"forecast scope must be 'account' or 'group', got {', '.join(bad)}")
    values = [{c: row[c] for c in _COLUMNS} for row in rows]
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(forecasts)
    stmt = stmt.on_conflict_do_update(
        index_elements=["scope", "target", "metric", "horizon"],
        set_={
            "computed_at": stmt.excluded.computed_at,
            "model_version": stmt.excluded.model_version,
            "payload": stmt.excluded.payload,
        },
    )
    conn.execute(stmt, values)
    return len(values)


def read_forecast(
    bind, *, scope: str, target: str, metric: str, horizon: int
) -> dict[str, Any] | None:
    """The cached forecast of one (scope, target, metric, horizon), or None."""
    query = sa.select(*(forecasts.c[c] for c in _COLUMNS)).where(
        forecasts.c.scope == scope,
        forecasts.c.target == target,
        forecasts.c.metric == metric,
        forecasts.c.horizon == int(horizon),
    )
    with connect(bind) as conn:
        row = conn.execute(query).mappings().first()
    return None if row is None else dict(row)


def list_forecasts(bind, *, scope: str | None = None, metric: str | None = None) -> list[dict]:
    """Cached forecasts (without payloads), by scope, target, metric and horizon."""
    cols = [forecasts.c[c] for c in _COLUMNS if c != "payload"]
    query = sa.select(*cols).order_by(*cols[:4])
    if scope is not None:
        query = query.where(forecasts.c.scope == scope)
    if metric is not None:
        query = query.where(forecasts.c.metric == metric)
    with connect(bind) as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def write_history(conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Keep the hourly job's forecasts in ``forecast_history`` too (a rerun at the same
    ``computed_at`` writes nothing twice)."""
    if not rows:
        return 0
    values = [{c: row[c] for c in _COLUMNS} for row in rows]
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    conn.execute(insert(forecast_history).on_conflict_do_nothing(), values)
    return len(values)


def read_history(
    bind, *, scope: str, target: str, metric: str, since_ms: int | None = None
) -> list[dict[str, Any]]:
    """Past forecasts of one (scope, target, metric), oldest first, made at or after
    ``since_ms``."""
    h = forecast_history
    query = sa.select(*(h.c[c] for c in _COLUMNS)).where(
        h.c.scope == scope, h.c.target == target, h.c.metric == metric
    )
    if since_ms is not None:
        query = query.where(h.c.computed_at >= int(since_ms))
    with connect(bind) as conn:
        return [dict(r) for r in conn.execute(query.order_by(h.c.computed_at)).mappings()]


__all__ = [
    "SCOPES",
    "list_forecasts",
    "read_forecast",
    "read_history",
    "write_forecasts",
    "write_history",
]
