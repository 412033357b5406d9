"""Fixtures for training tests: a small seeded fleet stored in the test's SQLite home."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def make_fleet(
    n_accounts: int = 3, hours: int = 36, step: str = "5min", seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metrics (wide frame) and fault events of a small fleet with one injected incident each.

    Each account has a level of its own (per-account normalisation matters); an incident makes
    latency and send failures jump for 40 minutes late in the range, with a fault event at its end.
    """
    rng = np.random.default_rng(seed)
    ts = pd.date_range(
        "2026-01-01",
        periods=int(pd.Timedelta(f"{hours}h") / pd.Timedelta(step)),
        freq=step,
        tz="UTC",
    )
    frames, events = [], []
    for k in range(n_accounts):
        n = len(ts)
        base = 100.0 * (k + 1)
        latency = base + rng.normal(0, base * 0.03, n)
        failures = rng.poisson(1.0, n).astype(float)
        start = int(n * (0.80 + 0.04 * k))
        latency[start : start + 8] *= 2.5
        failures[start : start + 8] += 25
        frames.append(
            pd.DataFrame(
                {
                    "ts": ts,
                    "account_id": f"acc-{k}",
                    "reply_latency_ms": latency,
                    "send_failures": failures,
                }
            )
        )
        events.append({"ts": ts[start + 8], "account_id": f"acc-{k}", "kind": "degraded"})
    frame = pd.concat(frames, ignore_index=True)
    frame["ts"] = frame["ts"].astype("datetime64[ms, UTC]")
    return frame, pd.DataFrame(events)


def store_fleet(engine, frame: pd.DataFrame, events: pd.DataFrame | None = None) -> None:
    from fleetml.ingest.files import import_events_frame, import_metrics_frame

    with engine.begin() as conn:
        import_metrics_frame(conn, frame, register=True, actor="test")
        if events is not None and len(events):
            import_events_frame(conn, events, register=True, actor="test")


@pytest.fixture
def fleet():
    return make_fleet()


@pytest.fixture(name="make_fleet")
def make_fleet_fixture():
    """The fleet factory itself, for tests that need other sizes or seeds."""
    return make_fleet


@pytest.fixture
def stored_fleet(sqlite_settings, fleet):
    """(settings, engine, frame, events) with the fleet imported into the test's SQLite home."""
    from fleetml.cli_support import open_engine
    from fleetml.training import registry

    registry.clear_cache()
    engine = open_engine(sqlite_settings)
    frame, events = fleet
    store_fleet(engine, frame, events)
    yield sqlite_settings, engine, frame, events
    registry.clear_cache()
    from fleetml.store.engine import dispose_engines

    dispose_engines()
