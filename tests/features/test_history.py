"""Event-history features: values, causality and how they ride along the feature builder."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fleetml.features import FeatureConfig, build_features, history_matrix, latest_features
from tests.features.conftest import make_frame

CONFIG = FeatureConfig(seasonal=False, history_windows=("6h", "24h"))


def events_for(frame: pd.DataFrame) -> pd.DataFrame:
    t0 = frame["ts"].min()
    return pd.DataFrame(
        {
            "ts": [t0 + pd.Timedelta(h, "h") for h in (2, 5, 5.5, 20, 15.5, 26)],
            "account_id": ["acc-0", "acc-0", "acc-1", "acc-0", "acc-2", "acc-1"],
            "kind": ["crash", "degraded", "logout", "restricted", "crash", "disconnect"],
        }
    )


def test_hours_since_and_counts_follow_the_events():
    ts0 = pd.Timestamp("2026-03-02", tz="UTC")
    rows_ts = np.array([ts0 + pd.Timedelta(h, "h") for h in (1, 2, 3, 9)])
    ts_ms = pd.DatetimeIndex(rows_ts).as_unit("ms").asi8
    events = pd.DataFrame(
        {
            "ts": [ts0 + pd.Timedelta(2, "h"), ts0 + pd.Timedelta(2.5, "h"), ts0],
            "account_id": ["a", "b", "a"],
            "kind": ["crash", "crash", "quality_drop"],
        }
    )
    cols, X = history_matrix(
        ts_ms, np.array(["a"] * 4), events, groups={"a": "g", "b": "g"}, config=CONFIG
    )
    got = dict(zip(cols, X.T, strict=True))
    since = got["fault_history__hours_since"]
    assert np.isnan(since[0]) and since[1] == 0.0 and since[2] == 1.0 and since[3] == 7.0
    assert got["fault_history__count_6h"].tolist() == [0, 1, 1, 0]
    assert got["fault_history__count_24h"].tolist() == [0, 1, 1, 1]
    # the group count sees b's fault too, the account's own count does not
    assert got["fault_history__group_count_6h"].tolist() == [0, 1, 2, 0]
    # a quality drop is not among the enforcement events training reads: ignored
    assert np.isnan(got["enforcement_history__hours_since"]).all()


def test_history_features_are_causal_under_appended_rows_and_events():
    frame = make_frame(hours=30)
    events = events_for(frame)
    cut = frame["ts"].min() + pd.Timedelta(15, "h")
    past = frame[frame["ts"] <= cut].reset_index(drop=True)
    early = build_features(past, config=CONFIG, events=events[events["ts"] <= cut])
    full = build_features(frame, config=CONFIG, events=events, groups=None)
    cols = [c for c in full.columns if "history" in c]
    assert cols and set(cols) <= set(early.columns)
    same = full[full["ts"] <= cut].reset_index(drop=True)
    pd.testing.assert_frame_equal(early[cols], same[cols])
    # and the features do react to events (not all NaN/zero)
    assert full["fault_history__count_24h"].max() >= 2
    assert np.isfinite(full["enforcement_history__hours_since"]).any()


def test_history_columns_only_when_events_are_given_and_latest_matches_full_build():
    frame = make_frame(hours=30)
    events = events_for(frame)
    plain = build_features(frame, config=CONFIG)
    assert not any("history" in c for c in plain.columns)
    groups = {"acc-0": "g", "acc-1": "g", "acc-2": "h"}
    full = build_features(frame, config=CONFIG, events=events, groups=groups)
    last = full.groupby("account_id").tail(1).reset_index(drop=True)
    latest = latest_features(frame, config=CONFIG, events=events, groups=groups)
    cols = [c for c in full.columns if "history" in c]
    pd.testing.assert_frame_equal(latest[cols].reset_index(drop=True), last[cols])


def test_lookback_covers_the_longest_history_window():
    cfg = FeatureConfig(seasonal=False, history_windows=("24h", "7D"))
    assert cfg.lookback_ms() >= 7 * 86_400_000
    assert FeatureConfig(seasonal=False, fault_history=False).lookback_ms() < 7 * 86_400_000
