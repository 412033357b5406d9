"""The fast latest-row path equals the last rows of a full build (no train/serve skew)."""

import numpy as np
import pandas as pd
import pytest

from fleetml.features import FeatureConfig, build_features, feature_columns, latest_features
from fleetml.features.latest import FeatureState, latest_matrix, latest_rows, sampling_step_ms
from fleetml.features.layout import Layout, ts_to_ms

from .conftest import make_frame


def messy_frame(n_accounts=6, days=23, seed=0):
    """Gaps, jittered and irregular sampling, counter resets, sparse metrics, stale accounts."""
    rng = np.random.default_rng(seed)
    frame = make_frame(n_accounts=n_accounts, hours=24 * days, seed=seed)
    jitter = pd.to_timedelta(rng.integers(-40, 40, len(frame)), unit="s")
    frame["ts"] = (frame["ts"] + jitter).astype("datetime64[ms, UTC]")
    keep = rng.random(len(frame)) > 0.15  # irregular sampling
    hours = (frame["ts"] - frame["ts"].min()).dt.total_seconds() / 3600
    acc = frame["account_id"]
    keep &= ~((acc == "acc-1") & (hours % 48 > 40))  # an 8-hour gap every 2 days
    keep &= ~((acc == "acc-2") & (hours > hours.max() - 5))  # stale by 5 hours
    keep &= ~((acc == "acc-4") & (hours > hours.max() - 23))  # stale by most of a day
    frame = frame.loc[keep].reset_index(drop=True)
    for name in ("msgs_sent_total", "send_failures_total"):  # resets: restart from zero
        values = frame[name].to_numpy().copy()
        for a in frame["account_id"].unique():
            idx = np.flatnonzero(frame["account_id"].to_numpy() == a)
            for cut in rng.choice(idx[1:], 4, replace=False):
                values[cut : idx[-1] + 1] -= values[cut] - rng.uniform(0, 3)
        frame[name] = values
    sparse_counter = frame["send_failures_total"].to_numpy().copy()
    sparse_counter[rng.random(len(frame)) < 0.7] = np.nan  # a sparse counter
    frame["send_failures_total"] = sparse_counter
    for name, scale in (("rare_gauge", 1.0), ("rare_total", 5.0)):  # long runs of NaN
        present = rng.random(len(frame)) < 0.04
        frame[name] = np.where(present, np.cumsum(rng.poisson(scale, len(frame))), np.nan)
    last = frame.groupby("account_id")["ts"].transform("max") == frame["ts"]
    cpu = frame["cpu_pct"].to_numpy().copy()
    cpu[(frame["account_id"] == "acc-3").to_numpy() & last.to_numpy()] = np.nan  # NaN "now"
    frame["cpu_pct"] = cpu
    return frame


GROUPS = {"acc-0": "g1", "acc-1": "g1", "acc-2": "g1", "acc-3": "g2", "acc-4": "g2"}


def assert_same_as_full_build(frame, **kw):
    full = build_features(frame, **kw)
    full = full.sort_values(["account_id", "ts"], kind="stable")
    last = full.groupby("account_id").tail(1).reset_index(drop=True)
    fast = latest_features(frame, **kw)
    assert list(fast.columns) == list(full.columns)
    assert list(fast["account_id"]) == list(last["account_id"])
    assert (fast["ts"] == last["ts"]).all() and fast["ts"].dtype == last["ts"].dtype
    cols = feature_columns(full)
    got, want = fast[cols].to_numpy(), last[cols].to_numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    # The full build takes a slope from prefix sums of x^2 (hours since the account's first row)
    # over the whole history: weeks of history leave it ~1e-6 rounding (relative, or absolute
    # for a flat window), which the fast path does not have (see
    # test_slope_matches_a_direct_least_squares_fit). Every other feature: 1e-7.
    slope = np.array(["__slope_" in c for c in cols])
    np.testing.assert_allclose(got[:, ~slope], want[:, ~slope], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(got[:, slope], want[:, slope], rtol=1e-4, atol=1e-5)
    return fast


@pytest.mark.parametrize("seed", [0, 1])
def test_equal_to_full_build_on_messy_data(seed):
    frame = messy_frame(seed=seed)
    fast = assert_same_as_full_build(frame, groups=GROUPS)
    # The data exercises what it claims: weekly lags, peers, NaN levels, the counter ratio.
    assert fast["cpu_pct__seasonal_resid"].notna().sum() >= 4
    assert fast["cpu_pct__peer_z"].isna().sum() >= 1  # acc-5 has no group
    assert fast["send_failures_per_msgs_sent__1h"].notna().any()


def test_equal_with_every_feature_switched_on():
    config = FeatureConfig(
        mean_windows=("15min", "1h", "6h", "24h"),
        std_windows=("15min", "1h", "6h", "24h"),
        slope_windows=("15min", "1h", "6h", "24h"),
        z_windows=("1h", "24h"),
        roc_windows=("15min", "1h", "6h"),
        seasonal_tolerance="3min",
        peer_bucket="5min",
    )
    assert_same_as_full_build(
        messy_frame(n_accounts=4, days=9, seed=2), groups=GROUPS, config=config
    )


def test_equal_with_short_history_and_seasonal_off():
    frame = messy_frame(n_accounts=3, days=1.5, seed=3)
    assert_same_as_full_build(frame, config=FeatureConfig(seasonal=False))
    assert_same_as_full_build(frame, groups=GROUPS)


def test_slope_matches_a_direct_least_squares_fit():
    frame = messy_frame(n_accounts=2, days=23, seed=7)
    fast = latest_features(frame)
    for _, row in fast.iterrows():
        acc = frame[frame["account_id"] == row["account_id"]]
        now = acc["ts"].iloc[-1]
        for w in ("1h", "6h"):
            win = acc[(acc["ts"] > now - pd.Timedelta(w)) & acc["cpu_pct"].notna()]
            hours = (win["ts"] - now).dt.total_seconds() / 3600
            want = np.polyfit(hours, win["cpu_pct"], 1)[0]
            np.testing.assert_allclose(row[f"cpu_pct__slope_{w}"], want, rtol=1e-10)


def test_unsorted_input_and_single_row_accounts():
    frame = messy_frame(n_accounts=3, days=2, seed=4)
    lone = frame.iloc[[0]].assign(account_id="acc-lone")
    shuffled = pd.concat([frame, lone]).sample(frac=1, random_state=0).reset_index(drop=True)
    fast = assert_same_as_full_build(shuffled, groups=GROUPS)
    assert fast["account_id"].iloc[-1] == "acc-lone"


def test_counter_kinds_argument_is_respected():
    frame = messy_frame(n_accounts=3, days=2, seed=5)
    kinds = {"cpu_pct": "counter", "msgs_sent_total": "gauge"}
    assert_same_as_full_build(frame, kinds=kinds)


def test_sampling_step_matches_the_layout():
    frame = messy_frame(n_accounts=3, days=2, seed=6)
    ts = ts_to_ms(frame["ts"])
    ids = frame["account_id"].to_numpy()
    layout = Layout.build(ts, ids, 0)
    assert sampling_step_ms(ts, layout.starts) == layout.sampling_step_ms()
    mixed = np.r_[np.arange(0, 10) * 60_000, np.arange(0, 11) * 300_000]
    starts = np.array([0, 10])
    assert (
        sampling_step_ms(mixed, starts)
        == Layout.build(mixed, np.repeat(["a", "b"], [10, 11]), 0).sampling_step_ms()
    )


def test_empty_and_missing_columns():
    empty = make_frame().iloc[:0]
    assert len(latest_rows(empty)) == 0
    with pytest.raises(ValueError, match="account_id"):
        latest_rows(pd.DataFrame({"ts": [], "cpu_pct": []}))


def test_latest_matrix_keeps_the_frame_account_order_and_feature_state_reads_rows():
    frame = messy_frame(n_accounts=3, days=2, seed=8)
    reordered = pd.concat([frame[frame["account_id"] == a] for a in ("acc-2", "acc-0", "acc-1")])
    matrix = latest_matrix(reordered.reset_index(drop=True), groups=GROUPS)
    assert list(matrix.account_id) == ["acc-2", "acc-0", "acc-1"]
    fast = latest_features(frame, groups=GROUPS)
    state = FeatureState(groups=GROUPS)
    with pytest.raises(RuntimeError, match="refresh"):
        state.row("acc-0")
    state.refresh(reordered.reset_index(drop=True))
    cols = ["cpu_pct__mean_1h", "queue_depth__value"]
    for _, want in fast.iterrows():
        ts_ms, got = state.row(want["account_id"], cols)
        assert ts_ms == want["ts"].value // 1_000_000 and got.shape == (1, 2)
        np.testing.assert_array_equal(got[0], want[cols].to_numpy(dtype=float))
    with pytest.raises(KeyError, match="no samples"):
        state.row("acc-9")
    with pytest.raises(KeyError, match="not built"):
        state.row("acc-0", ["nope__value"])


def counter_reset_frame():
    """Three accounts sampled every minute for 3 h; ``msgs_sent_total`` rises 10 a minute and
    restarts: at the last row, twice inside the last hour, and after a 80-minute silence."""
    ts = pd.date_range("2026-03-02", periods=180, freq="min", tz="UTC").as_unit("ms")
    count = 10.0 * np.arange(180)
    at_last = count.copy()
    at_last[-1] = 4.0  # restarted just now, already sent 4
    in_window = count.copy()
    in_window[150:] -= 10.5  # dips 0.5 below the previous reading: a restart, not a -0.5
    in_window[170:] = 10.0 * np.arange(10)  # restarts from exactly zero
    silent = np.full(180, np.nan)
    silent[:100] = count[:100]  # last reading 990 at minute 99, then nothing ...
    silent[-1] = 7.0  # ... until a restarted process reports 7, 80 minutes later
    parts = [
        pd.DataFrame({"ts": ts, "account_id": a, "msgs_sent_total": v, "cpu_pct": 50.0})
        for a, v in (("at-last", at_last), ("in-window", in_window), ("silent", silent))
    ]
    frame = pd.concat(parts, ignore_index=True)
    frame["account_id"] = frame["account_id"].astype("str")
    return frame


def test_counter_restarts_give_the_same_rates_on_the_latest_and_the_batch_path():
    config = FeatureConfig(
        mean_windows=("15min", "1h"),
        std_windows=("15min",),
        slope_windows=("15min",),
        roc_windows=("15min",),
        seasonal=False,
        peers=False,
    )
    fast = assert_same_as_full_build(counter_reset_frame(), config=config).set_index("account_id")
    # A restart counts the new reading as the increase (never a negative or a lost rate).
    assert fast.loc["at-last", "msgs_sent_total__value"] == 4.0
    assert fast.loc["silent", "msgs_sent_total__value"] == pytest.approx(7.0 / 80)
    in_window = fast.loc["in-window"]
    assert in_window["msgs_sent_total__mean_15min"] == pytest.approx((14 * 10 + 0) / 15)
    assert in_window["msgs_sent_total__mean_1h"] == pytest.approx((58 * 10 + 1489.5 + 0) / 60)
