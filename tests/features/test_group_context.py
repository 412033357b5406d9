"""Group context: faults of the other accounts of the group (``group_windows``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fleetml.features import FeatureConfig, build_features, history_matrix, latest_features
from fleetml.features.files import feature_config_from_dict
from tests.features.conftest import make_frame

CONFIG = FeatureConfig(seasonal=False, history_windows=("24h",), group_windows=("1h", "6h"))
GROUPS = {"acc-0": "g", "acc-1": "g", "acc-2": "h"}


def test_counts_the_peers_faults_not_the_accounts_own():
    ts0 = pd.Timestamp("2026-03-02", tz="UTC")
    ts_ms = pd.DatetimeIndex([ts0 + pd.Timedelta(h, "h") for h in (1, 2, 2.5, 8)]).as_unit("ms")
    events = pd.DataFrame(
        {
            "ts": [ts0 + pd.Timedelta(h, "h") for h in (2, 2.25, 2.5, 2.5)],
            "account_id": ["b", "a", "c", "b"],
            "kind": ["crash", "logout", "crash", "restricted"],
        }
    )
    cols, X = history_matrix(
        ts_ms.asi8,
        np.array(["a"] * 4),
        events,
        groups={"a": "g", "b": "g", "c": "k"},
        config=CONFIG,
    )
    got = dict(zip(cols, X.T, strict=True))
    # b's crash (same group) counts, a's own logout, c's crash (other group) and b's
    # restriction (not a fault) do not
    assert got["fault_history__group_others_1h"].tolist() == [0, 1, 1, 0]
    assert got["fault_history__group_others_6h"].tolist() == [0, 1, 1, 0]
    assert got["fault_history__group_count_24h"].tolist() == [0, 1, 2, 2]
    no_groups, _ = history_matrix(ts_ms.asi8, np.array(["a"] * 4), events, config=CONFIG)
    assert not [c for c in no_groups if "group_" in c]


def test_causal_and_the_same_on_the_serving_path():
    frame = make_frame(n_accounts=3, hours=30)
    t0 = frame["ts"].min()
    events = pd.DataFrame(
        {
            "ts": [t0 + pd.Timedelta(h, "h") for h in (3, 10, 10.5, 20, 29.5)],
            "account_id": ["acc-0", "acc-1", "acc-2", "acc-0", "acc-1"],
            "kind": ["crash", "degraded", "crash", "disconnect", "crash"],
        }
    )
    cut = t0 + pd.Timedelta(15, "h")
    full = build_features(frame, config=CONFIG, groups=GROUPS, events=events)
    early = build_features(
        frame[frame["ts"] <= cut], config=CONFIG, groups=GROUPS, events=events[events["ts"] <= cut]
    )
    cols = [c for c in full.columns if "group_others" in c]
    assert len(cols) == 2 and full[cols].to_numpy().max() >= 1
    same = full[full["ts"] <= cut].reset_index(drop=True)
    pd.testing.assert_frame_equal(early[cols], same[cols])
    last = full.groupby("account_id").tail(1).reset_index(drop=True)
    fast = latest_features(frame, config=CONFIG, groups=GROUPS, events=events)
    np.testing.assert_array_equal(fast[cols].to_numpy(), last[cols].to_numpy())
    assert fast.loc[fast["account_id"] == "acc-0", "fault_history__group_others_1h"].item() == 1


def test_settings_round_trip():
    config = feature_config_from_dict({"group_windows": ["1h", "6h"]})
    assert config.group_windows == ("1h", "6h")
    assert FeatureConfig.from_dict(config.to_dict()) == config
