"""A risk model trained with the master's-state and peak features is served with them: the live
scorer's rows equal the batch build of the same rows (same registry relations, same events)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fleetml.features import FeatureConfig
from fleetml.serving.live import LiveScorer

from .conftest import crash_faults, small_fleet
from .test_live import model_set

MASTERS = {"acc-1": "acc-0", "acc-2": "acc-0"}
CONFIG = FeatureConfig(seasonal=False, master_windows=("1h", "6h"), peak_windows=("1h", "6h"))


def test_live_ticks_build_the_masters_state_and_peaks_like_a_batch_score():
    from fleetml.training.risk import RiskTrainConfig, fit_risk

    frame = small_fleet(n_accounts=4, hours=30)
    ts = pd.DatetimeIndex(frame["ts"].unique()).sort_values()
    start = int(len(ts) * 0.6)
    faults = crash_faults(frame, seed=5)
    train = frame["ts"] < ts[start]
    cfg = RiskTrainConfig(horizons=("1h", "6h"), feature_config=CONFIG)
    bundle = fit_risk(
        frame[train], faults=faults[faults["ts"] < ts[start]], config=cfg, masters=MASTERS
    ).model
    assert bundle.account_masters == MASTERS
    new = [c for c in bundle.feature_columns if "master_" in c or "__peak_z_" in c]
    assert "fault_history__master_count_1h" in new and "reply_latency_ms__peak_z_6h" in new
    batch = bundle.build_features(frame, events=faults).set_index(["account_id", "ts"])
    scorer = LiveScorer(model_set(risk_bundle=bundle), max_rows=10)
    served = scorer.models.get("risk")
    cols = [j for j, c in enumerate(served.feature_columns) if c in new]
    seen = []
    risk_of = served.risk_of
    served.risk_of = lambda ids, ts_ms, X: seen.append((ids, ts_ms, X)) or risk_of(ids, ts_ms, X)
    scorer.window.merge(frame[train])
    for t in ts[start::6]:
        recent = (frame["ts"] > t - pd.Timedelta("30min")) & (frame["ts"] <= t)
        counts = scorer.window.merge(frame[recent])
        scorer.score(counts, kinds={}, groups={}, events=faults[faults["ts"] <= t], masters=MASTERS)
        ids, ts_ms, X = seen[-1]
        keys = list(
            zip([str(a) for a in ids], pd.to_datetime(ts_ms, unit="ms", utc=True), strict=True)
        )
        ref = bundle.matrix(batch.loc[keys].reset_index())
        np.testing.assert_allclose(X[:, cols], ref[:, cols], rtol=1e-6, atol=1e-9, equal_nan=True)
    live = np.concatenate([x[:, cols] for _, _, x in seen])
    assert np.isfinite(live).any()
    # the model's own predict_latest uses the relations stored at training
    latest = bundle.predict_latest(frame, events=faults)
    assert len(latest) == 4 * len(bundle.horizons)
