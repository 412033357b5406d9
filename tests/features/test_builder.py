import numpy as np
import pandas as pd
import pytest

from fleetml.features import (
    FeatureConfig,
    build_features,
    feature_columns,
    latest_features,
    metric_of_feature,
)

from .conftest import make_frame


def test_output_shape_names_and_order(frame):
    shuffled = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)
    out = build_features(shuffled)
    assert list(out.columns[:2]) == ["ts", "account_id"]
    assert len(out) == len(shuffled)
    # Same rows, same order as the input.
    assert (out["account_id"].to_numpy() == shuffled["account_id"].to_numpy()).all()
    assert (out["ts"].to_numpy() == shuffled["ts"].to_numpy()).all()
    assert str(out["ts"].dtype) == "datetime64[ms, UTC]"
    cols = feature_columns(out)
    assert "cpu_pct__mean_1h" in cols and "cpu_pct__std_1h" in cols and "cpu_pct__slope_6h" in cols
    assert "cpu_pct__seasonal_resid" in cols
    assert "send_failures_per_msgs_sent__1h" in cols
    assert "user_blocks_per_msgs_delivered__1h" not in cols  # metrics absent
    assert "cpu_pct__peer_z" not in cols  # no groups given
    assert all(out[c].dtype == np.float64 for c in cols)
    assert metric_of_feature("cpu_pct__mean_1h") == "cpu_pct"
    # Unsorted input gives the same values as sorted input, row for row.
    sorted_out = build_features(frame)
    merged = out.merge(sorted_out, on=["ts", "account_id"], suffixes=("", "_s"))
    np.testing.assert_allclose(merged["cpu_pct__mean_6h"], merged["cpu_pct__mean_6h_s"])


def test_causal_changing_the_future_changes_nothing_before(frame):
    groups = {a: "g" for a in frame["account_id"].unique()}
    base = build_features(frame, groups=groups)
    cut = frame["ts"].iloc[len(frame) // 6]
    future = frame["ts"] > cut
    changed = frame.copy()
    rng = np.random.default_rng(5)
    for col in ["cpu_pct", "queue_depth"]:
        changed.loc[future, col] = rng.normal(500, 100, future.sum())
    changed.loc[future, "msgs_sent_total"] = 0.0  # also a counter reset in the future
    after = build_features(changed, groups=groups)
    past = ~future.to_numpy()
    cols = feature_columns(base)
    np.testing.assert_array_equal(base.loc[past, cols].to_numpy(), after.loc[past, cols].to_numpy())
    assert not np.allclose(
        base.loc[~past, "cpu_pct__mean_1h"], after.loc[~past, "cpu_pct__mean_1h"]
    )


def test_counter_reset_gives_non_negative_rate():
    ts = pd.date_range("2026-01-01", periods=8, freq="1min", tz="UTC").as_unit("ms")
    values = [0, 10, 20, 30, 5, 15, 25, 35]  # restart after the 4th sample
    frame = pd.DataFrame({"ts": ts, "account_id": "a", "msgs_sent_total": np.array(values, float)})
    out = build_features(frame)
    rate = out["msgs_sent_total__value"].to_numpy()
    assert np.isnan(rate[0])
    np.testing.assert_allclose(rate[1:], [10, 10, 10, 5, 10, 10, 10])
    assert (out["msgs_sent_total__mean_1h"].dropna() >= 0).all()


def test_counter_kind_from_argument_and_rate_per_minute_under_gaps():
    ts = pd.to_datetime(["2026-01-01 00:00", "2026-01-01 00:02", "2026-01-01 00:12"], utc=True)
    frame = pd.DataFrame({"ts": ts.as_unit("ms"), "account_id": "a", "sent": [0.0, 20.0, 120.0]})
    out = build_features(frame, kinds={"sent": "counter"})
    np.testing.assert_allclose(out["sent__value"].to_numpy()[1:], [10.0, 10.0])
    gauge = build_features(frame)
    np.testing.assert_allclose(gauge["sent__value"], [0, 20, 120])


def test_time_windows_follow_durations_under_gaps_and_irregular_sampling():
    # Irregular times with a 3 h gap: a 1 h window must only see the last hour.
    ts = pd.to_datetime(
        [
            "2026-01-01 00:00",
            "2026-01-01 00:07",
            "2026-01-01 00:31",
            "2026-01-01 03:40",
            "2026-01-01 03:55",
            "2026-01-01 04:20",
        ],
        utc=True,
    ).as_unit("ms")
    y = np.array([1.0, 2.0, np.nan, 10.0, 20.0, 30.0])
    frame = pd.DataFrame({"ts": ts, "account_id": "a", "cpu_pct": y})
    out = build_features(frame)
    np.testing.assert_allclose(out["cpu_pct__mean_1h"], [1, 1.5, 1.5, 10, 15, 20])
    assert np.isnan(out["cpu_pct__std_1h"].iloc[3])  # a single sample after the gap
    np.testing.assert_allclose(out["cpu_pct__std_1h"].iloc[5], np.std([10, 20, 30], ddof=1))
    # Slope per hour of 10 -> 20 -> 30 at 03:40, 03:55, 04:20.
    x = np.array([0, 15, 40]) / 60
    expected = np.polyfit(x, [10, 20, 30], 1)[0]
    np.testing.assert_allclose(out["cpu_pct__slope_1h"].iloc[5], expected)
    assert np.isfinite(out.filter(like="__").to_numpy()[~np.isnan(y)][:, 1]).all()


def test_rate_of_change_uses_sample_at_or_before_window_start():
    ts = pd.date_range("2026-01-01", periods=13, freq="5min", tz="UTC").as_unit("ms")
    frame = pd.DataFrame({"ts": ts, "account_id": "a", "cpu_pct": np.arange(13) * 2.0})
    out = build_features(frame)
    # +2 every 5 minutes is +24 per hour.
    np.testing.assert_allclose(out["cpu_pct__roc_1h"].iloc[12], 24.0)
    np.testing.assert_allclose(out["cpu_pct__roc_15min"].iloc[5:], 24.0)
    assert out["cpu_pct__roc_1h"].iloc[:12].isna().all()


def test_seasonal_residual_is_near_zero_for_a_periodic_series_after_warm_up():
    ts = pd.date_range("2026-01-05", periods=10 * 288, freq="5min", tz="UTC").as_unit("ms")
    jitter = pd.to_timedelta(np.random.default_rng(0).integers(-20, 20, len(ts)), unit="s")
    hours = ts.hour + ts.minute / 60
    y = 50 + 20 * np.sin(2 * np.pi * hours / 24) + 5 * (ts.day_of_week >= 5)
    frame = pd.DataFrame({"ts": (ts + jitter).as_unit("ms"), "account_id": "a", "cpu_pct": y})
    cfg = FeatureConfig(seasonal_min_weeks=1)
    resid = build_features(frame, config=cfg)["cpu_pct__seasonal_resid"].to_numpy()
    assert np.isnan(resid[:288]).all()  # no earlier day yet
    # Weekdays only before the first weekend: daily baseline is exact there.
    np.testing.assert_allclose(resid[288 : 5 * 288], 0.0, atol=1e-9)
    # A spike shows up as its own size.
    spiked = frame.copy()
    spiked.loc[9 * 288 + 10, "cpu_pct"] += 30
    resid2 = build_features(spiked, config=cfg)["cpu_pct__seasonal_resid"].to_numpy()
    assert resid2[9 * 288 + 10] == pytest.approx(resid[9 * 288 + 10] + 30)


def test_seasonal_uses_same_weekday_once_enough_weeks_exist():
    ts = pd.date_range("2026-01-05", periods=15 * 24, freq="1h", tz="UTC").as_unit("ms")
    y = np.where(ts.day_of_week == 2, 100.0, 10.0)  # Wednesdays are busy
    frame = pd.DataFrame({"ts": ts, "account_id": "a", "cpu_pct": y})
    cfg = FeatureConfig(seasonal_min_weeks=1)
    resid = build_features(frame, config=cfg)["cpu_pct__seasonal_resid"].to_numpy()
    wed2 = (ts.day_of_week == 2) & (ts >= pd.Timestamp("2026-01-12", tz="UTC"))
    np.testing.assert_allclose(resid[wed2], 0.0)


def test_peer_z_sign_and_groups():
    ts = pd.date_range("2026-01-01", periods=6, freq="5min", tz="UTC").as_unit("ms")
    rows = []
    for acc, level, jitter_s in [("a", 10.0, 0), ("b", 11.0, 7), ("c", 30.0, -9), ("d", 5.0, 3)]:
        rows.append(
            pd.DataFrame(
                {"ts": ts + pd.Timedelta(seconds=jitter_s), "account_id": acc, "cpu_pct": level}
            )
        )
    frame = pd.concat(rows, ignore_index=True)
    frame["ts"] = frame["ts"].dt.as_unit("ms")
    groups = {"a": "g1", "b": "g1", "c": "g1", "d": "g2"}
    out = build_features(frame, groups=groups)
    last = out.groupby("account_id")["cpu_pct__peer_z"].last()
    assert last["c"] > 1 and last["a"] < 0 and last["b"] == pytest.approx(0.0)
    assert np.isnan(last["d"])  # alone in its group
    no_groups = build_features(frame)
    assert "cpu_pct__peer_z" not in no_groups.columns


def test_no_leakage_between_accounts(frame):
    alone = build_features(frame[frame["account_id"] == "acc-1"].reset_index(drop=True))
    together = build_features(frame)
    mine = together[together["account_id"] == "acc-1"].reset_index(drop=True)
    cols = feature_columns(alone)
    np.testing.assert_allclose(alone[cols].to_numpy(), mine[cols].to_numpy(), rtol=1e-9, atol=1e-9)
    other = frame.copy()
    other.loc[other["account_id"] == "acc-0", "cpu_pct"] += 1000
    moved = build_features(other)
    np.testing.assert_array_equal(
        moved.loc[moved["account_id"] == "acc-1", cols].to_numpy(),
        together.loc[together["account_id"] == "acc-1", cols].to_numpy(),
    )


def test_chunked_build_matches_single_pass(frame):
    one = build_features(frame)
    chunked = build_features(frame, config=FeatureConfig(chunk_rows=100))
    cols = feature_columns(one)
    np.testing.assert_allclose(one[cols].to_numpy(), chunked[cols].to_numpy(), rtol=1e-9, atol=1e-9)


def test_latest_features_equal_the_last_rows_of_a_full_build():
    frame = make_frame(n_accounts=3, hours=24 * 9)
    groups = {"acc-0": "g", "acc-1": "g", "acc-2": "g"}
    full = build_features(frame, groups=groups)
    last = full.groupby("account_id").tail(1).reset_index(drop=True)
    fast = latest_features(frame, groups=groups)
    assert list(fast["account_id"]) == ["acc-0", "acc-1", "acc-2"]
    cols = feature_columns(full)
    np.testing.assert_allclose(fast[cols].to_numpy(), last[cols].to_numpy(), rtol=1e-7, atol=1e-7)


def test_empty_frame_and_missing_columns():
    empty = make_frame().iloc[:0]
    out = build_features(empty)
    assert len(out) == 0 and "cpu_pct__mean_1h" in out.columns
    with pytest.raises(ValueError, match="account_id"):
        build_features(pd.DataFrame({"ts": [], "cpu_pct": []}))
    with pytest.raises(ValueError, match="not a duration"):
        build_features(make_frame(), config=FeatureConfig(mean_windows=("abc",)))


def test_rows_selects_evaluated_rows_with_full_history(frame):
    groups = {a: "g" for a in frame["account_id"].unique()}
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    full = build_features(shuffled, groups=groups)
    picks = np.array([5, 0, 700, 123])
    some = build_features(shuffled, groups=groups, rows=picks)
    assert list(some["account_id"]) == list(shuffled["account_id"].iloc[picks])
    cols = feature_columns(full)
    np.testing.assert_allclose(
        some[cols].to_numpy(), full[cols].iloc[picks].to_numpy(), rtol=1e-9, atol=1e-9
    )
    mask = (shuffled["account_id"] == "acc-2").to_numpy()
    assert len(build_features(shuffled, rows=mask)) == mask.sum()


def test_z_feature_measures_the_level_against_its_recent_spread():
    ts = pd.date_range("2026-01-01", periods=7, freq="1h", tz="UTC").as_unit("ms")
    y = np.array([10.0, 12.0, 10.0, 12.0, 10.0, 12.0, 30.0])
    frame = pd.DataFrame({"ts": ts, "account_id": "a", "cpu_pct": y})
    out = build_features(frame, config=FeatureConfig(z_windows=("24h",)))
    expected = (30 - y.mean()) / y.std(ddof=1)
    assert out["cpu_pct__z_24h"].iloc[-1] == pytest.approx(expected)
    flat = frame.assign(cpu_pct=5.0)
    z = build_features(flat, config=FeatureConfig(z_windows=("24h",)))["cpu_pct__z_24h"]
    assert z.isna().all()


@pytest.mark.slow
def test_parallel_chunks_match_the_single_process_build(frame):
    one = build_features(frame)
    par = build_features(frame, config=FeatureConfig(n_jobs=2, parallel_min_rows=0))
    cols = feature_columns(one)
    np.testing.assert_allclose(one[cols].to_numpy(), par[cols].to_numpy(), rtol=1e-9, atol=1e-9)


def test_feature_matrix_matches_the_frame(frame):
    from fleetml.features import build_feature_matrix

    full = build_features(frame, rows=[3, 1, 2])
    ids, cols, X = build_feature_matrix(frame, rows=[3, 1, 2])
    assert cols == feature_columns(full) and list(ids.columns) == ["ts", "account_id"]
    np.testing.assert_array_equal(X, full[cols].to_numpy())
