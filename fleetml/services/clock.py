"""The fleet's notion of *now*, shared by the tick, recommendations and drift."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Engine

from fleetml.config import Settings


def fleet_now(engine: Engine, settings: Settings, wall_ms: Callable[[], int] | None = None) -> int:
    """Milliseconds since the epoch: the wall clock, or with ``tick_clock="data"`` the newest
    stored sample (replays and simulations run on the data's time; an empty store falls back to
    the wall clock)."""
    if settings.tick_clock == "data":
        from fleetml.store.metrics import time_range

        newest = time_range(engine)[1]
        if newest is not None:
            return int(newest.value // 1_000_000)
    if wall_ms is None:
        from fleetml.store.audit import now_ms as wall_ms
    return int(wall_ms())
