"""On-demand scoring reads the master's state from the registry and the stored events, as
training and the live tick do."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from fleetml.features import FeatureConfig, history_matrix
from fleetml.serving.ondemand import OnDemandScorer

HOUR = 3_600_000
NOW = int(pd.Timestamp("2026-03-02 12:00", tz="UTC").value // 1_000_000)


def test_an_on_demand_row_has_the_masters_state_of_a_batch_build(engine):
    from fleetml.services.data import account_masters
    from fleetml.store.accounts import account_pks, create_account
    from fleetml.store.events import write_events

    with engine.begin() as conn:
        for acc, role, master in (("m", "master", None), ("x", "master", None)):
            create_account(conn, account_id=acc, role=role, master_id=master, actor="test")
        for acc in ("s1", "s2"):
            create_account(conn, account_id=acc, role="servant", master_id="m", actor="test")
    pks = account_pks(engine)
    stored = [("m", 2, "crash"), ("s2", 1, "disconnect"), ("x", 0.5, "crash"), ("m", 3, "banned")]
    with engine.begin() as conn:
        write_events(conn, [(pks[a], NOW - int(h * HOUR), k, None, "test") for a, h, k in stored])
    config = FeatureConfig(master_windows=("1h", "6h"))
    latest = SimpleNamespace(columns=[], values=np.zeros((1, 0)), ts_ms=np.array([NOW]))
    row = OnDemandScorer(engine, models=None)._with_history(latest, config, "s1")
    got = dict(zip(row.columns, row.values[0], strict=True))
    assert got["fault_history__master_count_6h"] == 1  # m's crash 2 h ago
    assert got["fault_history__master_hours_since"] == 2
    assert got["fault_history__servants_count_6h"] == 1  # s2's disconnect; x is not family
    assert got["enforcement_history__master_hours_since"] == 3
    # the same row as a batch build over every stored event
    events = pd.DataFrame(
        {
            "ts": [pd.Timestamp(NOW - int(h * HOUR), unit="ms", tz="UTC") for _, h, _ in stored],
            "account_id": [a for a, _, _ in stored],
            "kind": [k for _, _, k in stored],
        }
    )
    cols, want = history_matrix(
        np.array([NOW]), np.array(["s1"]), events, config=config, masters=account_masters(engine)
    )
    assert cols == row.columns
    np.testing.assert_array_equal(row.values, want)
