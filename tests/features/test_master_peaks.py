"""The master's state for its servants (``master_windows``) and the recent peaks of each
metric against its own baseline (``peak_windows``): values, causality, serving parity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fleetml.features import FeatureConfig, build_features, history_matrix, latest_features
from fleetml.features.files import feature_config_from_dict
from tests.features.conftest import make_frame
from tests.features.test_latest import GROUPS, assert_same_as_full_build, messy_frame

MASTER = FeatureConfig(seasonal=False, history_windows=("24h",), master_windows=("1h", "6h"))
PEAKS = FeatureConfig(seasonal=False, peak_windows=("1h", "3h"), peak_reference="6h")
BOTH = FeatureConfig(
    history_windows=("24h",), master_windows=("1h", "6h"), peak_windows=("1h", "6h")
)
MASTERS = {"acc-1": "acc-0", "acc-2": "acc-0"}  # acc-3 is a master without servants


def _new_columns(frame: pd.DataFrame) -> list[str]:
    keys = ("master_", "servants_", "__peak_z_", "__trough_z_")
    return [c for c in frame.columns if any(k in c for k in keys)]


def test_a_servant_sees_its_masters_faults_and_a_master_its_servants():
    ts0 = pd.Timestamp("2026-03-02", tz="UTC")
    at = pd.DatetimeIndex([ts0 + pd.Timedelta(h, "h") for h in (1, 2, 2.5, 9)]).as_unit("ms")
    events = pd.DataFrame(
        {
            "ts": [ts0 + pd.Timedelta(h, "h") for h in (2, 2.25, 2.5, 2.5, 3)],
            "account_id": ["m", "s1", "s2", "m", "x"],
            "kind": ["crash", "logout", "crash", "restricted", "crash"],
        }
    )
    masters = {"s1": "m", "s2": "m"}
    rows = np.array(["s1", "s1", "s1", "s1"])
    cols, X = history_matrix(at.asi8, rows, events, config=MASTER, masters=masters)
    got = dict(zip(cols, X.T, strict=True))
    # s1's master crashed at 2 h and was restricted at 2.5 h; s2 (the other servant) crashed
    # at 2.5 h; s1's own logout and x's crash (another family) do not count
    assert got["fault_history__master_count_1h"].tolist() == [0, 1, 1, 0]
    assert got["fault_history__master_count_6h"].tolist() == [0, 1, 1, 0]
    np.testing.assert_allclose(got["fault_history__master_hours_since"], [np.nan, 0, 0.5, 7])
    assert got["fault_history__servants_count_1h"].tolist() == [0, 0, 1, 0]
    np.testing.assert_allclose(got["enforcement_history__master_hours_since"][2:], [0, 6.5])
    assert np.isnan(got["enforcement_history__master_hours_since"][:2]).all()
    # the master: no master of its own (NaN), its servants' faults (s1's logout, s2's crash)
    cols, X = history_matrix(at.asi8, np.array(["m"] * 4), events, config=MASTER, masters=masters)
    got = dict(zip(cols, X.T, strict=True))
    assert np.isnan(got["fault_history__master_count_1h"]).all()
    assert np.isnan(got["fault_history__master_hours_since"]).all()
    assert got["fault_history__servants_count_1h"].tolist() == [0, 0, 2, 0]
    assert got["fault_history__servants_count_6h"].tolist() == [0, 0, 2, 0]
    # without the registry's relations (or without master_windows) no such column is built
    plain, _ = history_matrix(at.asi8, rows, events, config=MASTER)
    assert not [c for c in plain if "master" in c or "servants" in c]
    off, _ = history_matrix(at.asi8, rows, events, config=FeatureConfig(), masters=masters)
    assert not [c for c in off if "master" in c or "servants" in c]


def _direct_peaks(ts, level, window, ref):
    """Peak and trough z-scores of one account by loops over the definition."""
    ts = pd.DatetimeIndex(ts)
    peak, trough = np.full(len(level), np.nan), np.full(len(level), np.nan)
    for t in range(len(level)):
        base = level[(ts > ts[t] - pd.Timedelta(ref)) & (ts <= ts[t]) & ~np.isnan(level)]
        win = level[(ts > ts[t] - pd.Timedelta(window)) & (ts <= ts[t]) & ~np.isnan(level)]
        if len(base) < 2 or not len(win) or np.std(base, ddof=1) == 0:
            continue
        sd = np.std(base, ddof=1)
        peak[t] = (win.max() - base.mean()) / sd
        trough[t] = (win.min() - base.mean()) / sd
    return peak, trough


def test_peaks_equal_their_definition():
    frame = make_frame(n_accounts=2, hours=14, seed=4)
    rng = np.random.default_rng(1)
    frame.loc[rng.random(len(frame)) < 0.1, "cpu_pct"] = np.nan  # gaps in the level
    feats = build_features(frame, config=PEAKS)
    for a, part in frame.groupby("account_id"):
        got = feats[feats["account_id"] == a]
        for w in ("1h", "3h"):
            peak, trough = _direct_peaks(part["ts"], part["cpu_pct"].to_numpy(), w, "6h")
            np.testing.assert_allclose(got[f"cpu_pct__peak_z_{w}"], peak, atol=1e-9)
            np.testing.assert_allclose(got[f"cpu_pct__trough_z_{w}"], trough, atol=1e-9)


def test_a_recent_spike_shows_in_the_peak_for_as_long_as_its_window():
    frame = make_frame(n_accounts=2, hours=30, seed=5)
    hours = (frame["ts"] - frame["ts"].min()).dt.total_seconds() / 3600
    spike = (frame["account_id"] == "acc-1") & (hours >= 26) & (hours < 26.25)
    frame.loc[spike, "cpu_pct"] += 30  # 15 standard deviations for a quarter of an hour
    feats = build_features(frame, config=FeatureConfig(seasonal=False, peak_windows=("1h", "6h")))
    last = feats.groupby("account_id").tail(1).set_index("account_id")  # at 29.9 h
    assert last.loc["acc-1", "cpu_pct__peak_z_6h"] > 5
    assert last.loc["acc-1", "cpu_pct__peak_z_1h"] < 4  # the spike left the last hour
    assert last.loc["acc-0", "cpu_pct__peak_z_6h"] < 5


def test_changing_the_future_changes_no_earlier_value():
    frame = make_frame(n_accounts=4, hours=30, seed=2)
    t0 = frame["ts"].min()
    events = pd.DataFrame(
        {
            "ts": [t0 + pd.Timedelta(h, "h") for h in (3, 10, 10.5, 14)],
            "account_id": ["acc-0", "acc-1", "acc-2", "acc-0"],
            "kind": ["crash", "degraded", "crash", "banned"],
        }
    )
    cut = t0 + pd.Timedelta(18, "h")
    changed = frame.copy()
    later = changed["ts"] > cut
    changed.loc[later, ["cpu_pct", "msgs_sent_total"]] *= 7.0
    more = pd.DataFrame(
        {
            "ts": [cut + pd.Timedelta(m, "min") for m in (1, 30)],
            "account_id": ["acc-0", "acc-2"],
            "kind": ["crash", "disconnect"],
        }
    )
    kw = dict(config=BOTH, groups=GROUPS, masters=MASTERS)
    a = build_features(frame, events=events, **kw)
    b = build_features(changed, events=pd.concat([events, more], ignore_index=True), **kw)
    cols = _new_columns(a)
    assert len(cols) == 4 * 4 + 6
    early = (a["ts"] <= cut).to_numpy()
    pd.testing.assert_frame_equal(a.loc[early, cols], b.loc[early, cols])
    for key in ("__peak_z_", "master_", "servants_"):  # each family can fail the test
        some = [c for c in cols if key in c]
        assert not a.loc[~early, some].equals(b.loc[~early, some])
    # and the rows= path (training's) gives the same values as a full build
    for rows in (np.flatnonzero(early)[::7], np.array([5, 400, 1000])):  # rolling / segment path
        part = build_features(frame, events=events, rows=rows, **kw)
        np.testing.assert_allclose(part[cols].to_numpy(), a.loc[rows, cols].to_numpy(), atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_serving_path_equals_the_full_build(seed):
    frame = messy_frame(seed=seed)
    fast = assert_same_as_full_build(frame, groups=GROUPS, config=BOTH)
    cols = _new_columns(fast)
    assert len(cols) == 4 * len([c for c in fast.columns if c.endswith("__value")])
    # with events and the registry's relations: the last row of each account agrees too
    t0 = frame["ts"].min()
    events = pd.DataFrame(
        {
            "ts": [t0 + pd.Timedelta(d, "D") for d in (20, 21.5, 22.2, 22.9, 22.95)],
            "account_id": ["acc-0", "acc-1", "acc-0", "acc-2", "acc-0"],
            "kind": ["crash", "crash", "restricted", "logout", "degraded"],
        }
    )
    kw = dict(groups=GROUPS, config=BOTH, events=events, masters=MASTERS)
    full = build_features(frame, **kw).sort_values(["account_id", "ts"], kind="stable")
    last = full.groupby("account_id").tail(1).reset_index(drop=True)
    fast = latest_features(frame, **kw)
    hist = [c for c in _new_columns(full) if c.startswith(("fault_", "enforcement_"))]
    assert len(hist) == 6
    np.testing.assert_array_equal(fast[hist].to_numpy(), last[hist].to_numpy())
    assert np.isfinite(fast[hist].to_numpy()).any()


def test_the_live_window_does_not_grow_for_the_peaks():
    from fleetml.serving.window import tail_reach_ms

    assert tail_reach_ms(FeatureConfig(peak_windows=("1h", "6h"))) == 24 * 3_600_000
    assert FeatureConfig(master_windows=("1h", "6h")).lookback_ms() == (
        FeatureConfig().lookback_ms()
    )


def test_settings_round_trip():
    config = feature_config_from_dict(
        {"master_windows": ["1h", "6h"], "peak_windows": ["1h"], "peak_reference": "12h"}
    )
    assert config.master_windows == ("1h", "6h") and config.peak_windows == ("1h",)
    assert FeatureConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="peak_windows"):
        feature_config_from_dict({"peak_windows": ["soon"]})
