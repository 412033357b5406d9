"""Trend (moving-average crossover) and CUSUM features: values, causality, serving parity and
settings round-trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fleetml.features import FeatureConfig, build_features, feature_columns, planned_columns
from fleetml.features.files import dump_feature_config, feature_config_from_dict
from tests.features.conftest import make_frame
from tests.features.test_latest import GROUPS, assert_same_as_full_build, messy_frame

CONFIG = FeatureConfig(
    seasonal=False,
    trend_pairs=(("1h", "6h"), ("2h", "12h")),
    cusum_windows=("3h", "12h"),
    cusum_reference="2h",
    cusum_k=0.25,
)


def _new_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in feature_columns(frame) if "__trend_" in c or "__cusum_" in c]


def test_columns_are_planned_per_metric_and_off_by_default():
    cols = planned_columns(["cpu_pct"], CONFIG)
    for name in (
        "cpu_pct__trend_1h_6h",
        "cpu_pct__trend_2h_12h",
        "cpu_pct__cusum_up_3h",
        "cpu_pct__cusum_down_3h",
        "cpu_pct__cusum_up_12h",
        "cpu_pct__cusum_down_12h",
    ):
        assert name in cols
    default = planned_columns(["cpu_pct"], FeatureConfig())
    assert not [c for c in default if "trend_" in c or "cusum_" in c]
    # the CUSUM reads its window plus a reference window before each of its samples
    assert CONFIG.lookback_ms() >= (12 + 2) * 3_600_000


def _direct_cusum(ts, level, window, ref, k, sign):
    """The CUSUM of one account by loops over the definition (slow, obviously right)."""
    ts = pd.DatetimeIndex(ts)
    z = np.full(len(level), np.nan)
    for u in range(len(level)):
        win = (ts > ts[u] - pd.Timedelta(ref)) & (ts <= ts[u]) & ~np.isnan(level)
        vals = level[win]
        if len(vals) >= 2 and np.std(vals, ddof=1) > 0 and not np.isnan(level[u]):
            z[u] = (level[u] - vals.mean()) / np.std(vals, ddof=1)
    out = np.full(len(level), np.nan)
    for t in range(len(level)):
        inside = np.flatnonzero((ts > ts[t] - pd.Timedelta(window)) & (ts <= ts[t]))
        if not (~np.isnan(z[inside])).any():
            continue
        steps = np.where(np.isnan(z[inside]), 0.0, sign * z[inside] - k)
        suffix = np.cumsum(steps[::-1])  # sums over [s, t] for s from t back to the start
        out[t] = max(0.0, suffix.max())
    return out


def test_cusum_and_trend_equal_their_definitions():
    frame = make_frame(n_accounts=2, hours=20, seed=3)
    rng = np.random.default_rng(0)
    frame.loc[rng.random(len(frame)) < 0.1, "cpu_pct"] = np.nan  # gaps in the level
    feats = build_features(frame, config=CONFIG)
    for a, part in frame.groupby("account_id"):
        got = feats[feats["account_id"] == a]
        level = part["cpu_pct"].to_numpy()
        for sign, name in ((1, "up"), (-1, "down")):
            want = _direct_cusum(part["ts"], level, "3h", "2h", 0.25, sign)
            np.testing.assert_allclose(got[f"cpu_pct__cusum_{name}_3h"], want, atol=1e-9)
        s = part.set_index("ts")["cpu_pct"]
        fast, slow = s.rolling("1h").mean(), s.rolling("6h").mean()
        want = ((fast - slow) / s.rolling("6h").std()).to_numpy()
        np.testing.assert_allclose(got["cpu_pct__trend_1h_6h"], want, rtol=1e-9, atol=1e-9)


def test_a_slow_drift_accumulates_where_noise_does_not():
    frame = make_frame(n_accounts=2, hours=48, seed=1)
    hours = (frame["ts"] - frame["ts"].min()).dt.total_seconds() / 3600
    drift = (frame["account_id"] == "acc-1") & (hours > 30)
    # acc-1 leaks: +1.5 units an hour after 30 h (noise sd 2); acc-0 stays flat
    frame.loc[drift, "cpu_pct"] += 1.5 * (hours[drift] - 30)
    feats = build_features(frame, config=CONFIG)
    last = feats.groupby("account_id").tail(1).set_index("account_id")
    assert (
        last.loc["acc-1", "cpu_pct__cusum_up_12h"] > 3 * last.loc["acc-0", "cpu_pct__cusum_up_12h"]
    )
    assert last.loc["acc-1", "cpu_pct__trend_2h_12h"] > 1.0
    assert abs(last.loc["acc-0", "cpu_pct__trend_2h_12h"]) < 1.0
    assert last.loc["acc-1", "cpu_pct__cusum_down_12h"] < last.loc["acc-1", "cpu_pct__cusum_up_12h"]


def test_changing_the_future_changes_no_earlier_value():
    frame = make_frame(n_accounts=3, hours=30, seed=2)
    cut = frame["ts"].min() + pd.Timedelta(18, "h")
    changed = frame.copy()
    later = changed["ts"] > cut
    changed.loc[later, ["cpu_pct", "msgs_sent_total"]] *= 7.0
    changed.loc[later & (changed["account_id"] == "acc-1"), "queue_depth"] = 1e6
    a = build_features(frame, config=CONFIG)
    b = build_features(changed, config=CONFIG)
    cols = _new_columns(a)
    assert len(cols) == 4 * 6
    early = (a["ts"] <= cut).to_numpy()
    pd.testing.assert_frame_equal(a.loc[early, cols], b.loc[early, cols])
    assert not a.loc[~early, cols].equals(b.loc[~early, cols])  # the test can fail
    # and the rows= path (training's) gives the same values as a full build
    for rows in (np.flatnonzero(early)[::7], np.array([5, 400, 1000])):  # rolling / segment path
        part = build_features(frame, config=CONFIG, rows=rows)
        np.testing.assert_allclose(part[cols].to_numpy(), a.loc[rows, cols].to_numpy(), atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_serving_path_equals_the_full_build(seed):
    config = FeatureConfig(
        trend_pairs=(("1h", "24h"), ("6h", "72h")),
        cusum_windows=("6h", "24h"),
        cusum_reference="6h",
    )
    fast = assert_same_as_full_build(messy_frame(seed=seed), groups=GROUPS, config=config)
    cols = _new_columns(fast)
    assert len(cols) == 6 * len([c for c in fast.columns if c.endswith("__value")])
    assert (fast[[c for c in cols if "cusum_up" in c]] > 0).any().any()


def test_settings_round_trip_through_dict_and_file_form():
    again = FeatureConfig.from_dict(json.loads(json.dumps(CONFIG.to_dict())))
    assert again == CONFIG
    dumped = dump_feature_config(CONFIG)
    assert dumped["trend_pairs"] == [["1h", "6h"], ["2h", "12h"]]
    assert feature_config_from_dict(json.loads(json.dumps(dumped))) == CONFIG
    text = {"trend_pairs": [["6h", "72h"]], "cusum_windows": ["24h"], "cusum_k": 1.0}
    config = feature_config_from_dict(text)
    assert config.trend_pairs == (("6h", "72h"),) and config.cusum_windows == ("24h",)
    with pytest.raises(ValueError, match="cusum_windows"):
        feature_config_from_dict({"cusum_windows": ["often"]})
    with pytest.raises(ValueError, match="not a duration"):
        feature_config_from_dict({"trend_pairs": [["1h", "soon"]]})


def test_the_live_window_keeps_what_the_new_features_read():
    from fleetml.serving.window import tail_reach_ms

    hour = 3_600_000
    assert tail_reach_ms(FeatureConfig(trend_pairs=(("6h", "72h"),))) == 72 * hour
    assert tail_reach_ms(FeatureConfig(cusum_windows=("24h", "72h"))) == (72 + 24) * hour
    assert tail_reach_ms(FeatureConfig()) == 24 * hour


def test_the_risk_trends_preset_is_a_settings_file_and_not_the_training_default():
    """The 96 h features cost the live loop four times the window: risk training leaves them
    off unless a settings file (examples/features/risk-trends.json) asks for them."""
    from dataclasses import replace
    from pathlib import Path

    from fleetml.features import RISK_FEATURES
    from fleetml.features.files import load_feature_config
    from fleetml.training.risk import RiskTrainConfig, fit_risk
    from tests.training.test_risk_training import risk_fleet

    # the preset is FeatureConfig's defaults plus the three option groups, nothing else
    assert replace(RISK_FEATURES, trend_pairs=(), cusum_windows=(), group_windows=()) == (
        FeatureConfig()
    )
    example = Path(__file__).resolve().parents[2] / "examples" / "features" / "risk-trends.json"
    assert load_feature_config(example) == RISK_FEATURES
    frame, events = risk_fleet(n_accounts=4, days=4)
    faults = events[events["kind"] == "crash"]
    cfg = RiskTrainConfig(horizons=("3h",), refit=False, enforcement=False, max_iter=5)
    groups = {"acc-0": "g", "acc-1": "g"}
    fit = fit_risk(
        frame, faults=faults, groups=groups, config=replace(cfg, feature_config=RISK_FEATURES)
    )
    cols = fit.model.feature_columns
    assert "mem_mb__trend_6h_72h" in cols
    assert "mem_mb__cusum_up_24h" in cols
    assert "fault_history__group_others_1h" in cols
    # without a settings file risk training starts from FeatureConfig's own defaults
    plain = fit_risk(frame, faults=faults, groups=groups, config=cfg)
    assert plain.model.feature_config == FeatureConfig()
    assert not [c for c in plain.model.feature_columns if "__trend_" in c or "__cusum_" in c]
