"""The fleet's clock: wall time, or the newest stored sample when the tick runs on data time."""

from __future__ import annotations

import pandas as pd

from fleetml.ingest.files import import_metrics_frame
from fleetml.services.clock import fleet_now

WALL = 1_900_000_000_000


def _store_two_samples(engine) -> pd.Timestamp:
    ts = pd.Timestamp("2026-01-05T10:00:00Z")
    frame = pd.DataFrame(
        {
            "ts": [ts - pd.Timedelta("5min"), ts],
            "account_id": ["acc-0", "acc-0"],
            "queue_depth": [1.0, 2.0],
        }
    )
    with engine.begin() as conn:
        import_metrics_frame(conn, frame, register=True, actor="test")
    return ts


def test_data_clock_is_the_newest_sample(engine, settings):
    newest = _store_two_samples(engine)
    data = settings.model_copy(update={"tick_clock": "data"})
    assert fleet_now(engine, data, lambda: WALL) == newest.value // 1_000_000
    # the wall clock ignores the data
    wall = settings.model_copy(update={"tick_clock": "wall"})
    assert fleet_now(engine, wall, lambda: WALL) == WALL


def test_data_clock_on_an_empty_store_falls_back_to_the_wall_clock(engine, settings):
    data = settings.model_copy(update={"tick_clock": "data"})
    assert fleet_now(engine, data, lambda: WALL) == WALL
