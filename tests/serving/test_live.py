"""The live scorer: per-account state across ticks gives what scoring the whole history gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fleetml.features import FeatureConfig
from fleetml.features.latest import latest_matrix
from fleetml.serving.live import LiveScorer
from fleetml.serving.models import ModelSet, ServedAnomaly
from fleetml.serving.window import RawWindow, seasonal_lags_ms, tail_reach_ms

from .conftest import crash_faults, fit_anomaly, fit_risk, small_fleet


class _Settings:
    model_check_s = 0.0


def model_set(anomaly_bundle=None, risk_bundle=None) -> ModelSet:
    from fleetml.serving.models import ServedRisk

    bundles = {"anomaly": anomaly_bundle, "risk": risk_bundle}

    def champion(family):
        return 1 if bundles[family] is not None else None

    def load(family, version):
        served = ServedAnomaly if family == "anomaly" else ServedRisk
        return served(bundles[family], version)

    return ModelSet(_Settings(), champion_version=champion, load=load)


def test_window_keeps_what_seasonal_and_window_features_read():
    """After trimming, the latest features from the window equal those from the full history."""
    frame = small_fleet(n_accounts=3, hours=16 * 24, step="30min", seed=3)
    # a cumulative counter that restarts now and then
    frame["msgs_sent"] = frame.groupby("account_id")["msgs_sent"].cumsum()
    frame.loc[frame.index % 97 == 0, "msgs_sent"] = 0.0
    config = FeatureConfig()  # daily and weekly seasonal lags, 24 h windows
    kinds = {"msgs_sent": "counter"}
    window = RawWindow()
    window.counters = {"msgs_sent"}
    shuffled = frame.sample(frac=1.0, random_state=0)  # any arrival order, in a few batches
    for part in np.array_split(np.arange(len(shuffled)), 5):
        window.merge(shuffled.iloc[part])
    assert len(window) == len(frame)
    dropped = window.trim(
        reach_ms=tail_reach_ms(config), lags_ms=seasonal_lags_ms(config), pad_ms=1_800_000
    )
    assert dropped > len(frame) // 2  # most of 16 days is not needed any more
    full = latest_matrix(frame, kinds=kinds, config=config)
    kept = latest_matrix(window.frame(levels=True), kinds=window.gauge_kinds(kinds), config=config)
    order = np.argsort(kept.account_id.astype(str))
    assert list(kept.account_id[order]) == list(full.account_id)
    assert kept.columns == full.columns
    seasonal = [i for i, c in enumerate(full.columns) if c.endswith("seasonal_resid")]
    assert np.isfinite(full.values[:, seasonal]).all()  # the check is not vacuous
    np.testing.assert_allclose(
        kept.values[order], full.values, rtol=1e-9, atol=1e-9, equal_nan=True
    )


def test_count_between_counts_held_samples_strictly_inside_the_range():
    frame = small_fleet(n_accounts=2, hours=2)
    window = RawWindow()
    window.merge(frame)
    ts = pd.DatetimeIndex(frame["ts"].unique()).sort_values().as_unit("ms").asi8
    codes = window.codes_of(pd.Series(["acc-0", "acc-1"], dtype=object))
    got = window.count_between(codes, [ts[2], -1], [ts[7], ts[3]])
    assert got.tolist() == [4, 3]  # ts[3..6] of acc-0; ts[0..2] of acc-1
    assert window.count_between(codes, [ts[5], ts[5]], [ts[5], ts[6]]).tolist() == [0, 0]


def test_merge_updates_duplicates_and_counts_only_newer_samples():
    frame = small_fleet(n_accounts=2, hours=2)
    window = RawWindow()
    counts = window.merge(frame)
    assert counts.tolist() == [24, 24]
    again = window.merge(frame.iloc[:5])  # replayed samples: held, not new
    assert again.sum() == 0 and len(window) == len(frame)
    late = frame.iloc[[3]].copy()
    late["reply_latency_ms"] = -1.0
    window.merge(late)
    code = window.code("acc-0")
    rows = window.rows_of([code])
    assert window.values["reply_latency_ms"][rows[3]] == -1.0


def test_ticks_equal_a_batch_score_of_the_whole_history():
    frame = small_fleet(n_accounts=4, hours=30)
    frame["msgs_sent"] = frame.groupby("account_id")["msgs_sent"].cumsum()  # a counter
    kinds = {"msgs_sent": "counter"}
    ts = pd.DatetimeIndex(frame["ts"].unique()).sort_values()
    start = int(len(ts) * 0.6)
    bundle = fit_anomaly(
        frame[frame["ts"] < ts[start]], kinds, threshold=0.3, min_duration=2, suppression=6
    )
    assert bundle.habituation is not None  # the shipped default: the reported score habituates
    ordered = frame.sort_values(["account_id", "ts"], kind="stable").reset_index(drop=True)
    batch = bundle.score_features(bundle.build_features(ordered), habituate=False)
    # the live loop's habituation starts with its first tick: so does the reference's
    batch = batch[batch["ts"] >= ts[start]].reset_index(drop=True)
    batch["anomaly_score"] = bundle.habituate(
        batch["anomaly_score"].to_numpy(), batch["account_id"]
    )
    batch = batch.set_index(["account_id", "ts"])
    scorer = LiveScorer(model_set(bundle), max_rows=10)
    scorer.window.counters = {"msgs_sent"}
    scorer.window.merge(frame[frame["ts"] < ts[start]])
    got = []
    for t in ts[start:]:
        counts = scorer.window.merge(frame[frame["ts"] == t])
        out = scorer.score(counts, kinds=kinds, groups={})
        an = out[out["family"] == "anomaly"].copy()
        assert (an["data_until"] == t.value // 10**6).all()
        an["ts"] = t
        got.append(an)
        scorer.trim()
    got = pd.concat(got).set_index(["account_id", "ts"])
    assert len(got) == 4 * (len(ts) - start)
    warm = got.index.get_level_values("ts") >= ts[start + 15]
    ref = batch.loc[got.index[warm]]
    np.testing.assert_allclose(
        got.loc[warm, "score"].to_numpy(), ref["anomaly_score"].to_numpy(), rtol=1e-9, atol=1e-9
    )
    flags = got.loc[warm, "flag"].to_numpy()
    assert (flags == ref["is_anomaly"].to_numpy()).all()
    assert flags.any()  # the incident on acc-1 is flagged: the comparison covers flags
    calibrated = np.array([d["calibrated_score"] for d in got.loc[warm, "detail"]])
    assert (got.loc[warm, "score"].to_numpy() < calibrated - 1e-6).any()  # some rows habituated
    near = np.isclose(
        got.loc[warm, "score"].to_numpy(), bundle.habituation.near_factor * calibrated
    )
    assert near.any()  # and some by the margin's near factor: the comparison covers it
    # restarted with the stored maxima, a new scorer reports what the old one would have
    last = frame[frame["ts"] == ts[-1]].copy()
    later = last.assign(ts=last["ts"] + pd.Timedelta("5min"))
    stored = pd.DataFrame(
        [
            {"account_id": a, "max": d["habituation_max"], "prev": d["habituation_prev"]}
            for a, d in got.xs(ts[-1], level="ts")["detail"].items()
        ]
    ).assign(until=ts[-1].value // 10**6)
    fresh = LiveScorer(model_set(bundle), max_rows=10)
    fresh.window.counters = {"msgs_sent"}
    fresh.window.merge(frame)
    fresh.restore_habituation(stored)
    again = fresh.score(fresh.window.merge(later), kinds=kinds, groups={})
    before = scorer.score(scorer.window.merge(later), kinds=kinds, groups={})
    key = ["account_id", "family"]
    again, before = again.set_index(key).sort_index(), before.set_index(key).sort_index()
    np.testing.assert_allclose(
        again.loc[:, "detail"]
        .map(lambda d: d["habituation_max"] if d else np.nan)
        .to_numpy(dtype=float),
        before.loc[:, "detail"]
        .map(lambda d: d["habituation_max"] if d else np.nan)
        .to_numpy(dtype=float),
        rtol=1e-9,
    )


def test_a_new_champion_resets_the_calibration_context():
    frame = small_fleet(n_accounts=2, hours=20)
    bundle = fit_anomaly(frame)
    models = model_set(bundle)
    scorer = LiveScorer(models)
    counts = scorer.window.merge(frame)
    scorer.score(counts, kinds={}, groups={})
    assert scorer.ctx_n.max() > 0
    scorer._anomaly_version = 99  # as if the previous tick used another version
    last = frame[frame["ts"] == frame["ts"].max()].copy()
    last["ts"] = last["ts"] + pd.Timedelta("5min")
    out = scorer.score(scorer.window.merge(last), kinds={}, groups={})
    assert (out["model_version"].dropna() == 1).all()
    assert scorer.ctx_n.max() <= ServedAnomaly(bundle, 1).context_rows


@pytest.mark.parametrize("broken", ["anomaly", "risk"])
def test_a_model_that_raises_while_scoring_degrades_to_its_fallback(broken):
    frame = small_fleet(n_accounts=2, hours=20)
    bundle = fit_anomaly(frame)
    models = model_set(bundle)
    scorer = LiveScorer(models)
    counts = scorer.window.merge(frame)
    if broken == "anomaly":
        models.get("anomaly").raw_scores = lambda *a, **k: (_ for _ in ()).throw(ValueError("x"))
    else:
        models.get("risk").predict_latest = lambda *a, **k: (_ for _ in ()).throw(ValueError("y"))
    out = scorer.score(counts, kinds={}, groups={})
    part = out[out["family"] == broken]
    assert len(part) and part["fallback"].all() and part["model_version"].isna().all()
    assert broken in models.degraded()


def test_a_fallback_tick_keeps_the_habituation_state_for_a_restart():
    """While the anomaly model is degraded the heuristic answers; its rows carry the model's
    habituation state unchanged (with the time of the row it holds), so a restart then still
    restores it."""
    frame = small_fleet(n_accounts=2, hours=20)
    models = model_set(fit_anomaly(frame))
    scorer = LiveScorer(models)
    first = frame[frame["ts"] < frame["ts"].max()]
    out = scorer.score(scorer.window.merge(first), kinds={}, groups={})
    before = out[out["family"] == "anomaly"].set_index("account_id")["detail"]
    models.get("anomaly").raw_scores = lambda *a, **k: (_ for _ in ()).throw(ValueError("x"))
    last = frame[frame["ts"] == frame["ts"].max()]
    out = scorer.score(scorer.window.merge(last), kinds={}, groups={})
    part = out[out["family"] == "anomaly"].set_index("account_id")
    assert part["fallback"].all()
    for account, detail in part["detail"].items():
        kept = before[account]
        assert detail == {
            "habituation_max": kept["habituation_max"],
            "habituation_prev": kept["habituation_prev"],
            "habituation_until": kept["habituation_until"],
        }
        assert detail["habituation_until"] < int(part.loc[account, "data_until"])


def test_risk_ticks_read_event_history_like_a_batch_score():
    """A risk model trained with event-history features is served with them: each tick's
    feature row equals the batch build of the same row with the same stored events (no NaN
    columns). Rows are compared, not risks: rolling sums differ in the last bit between the
    two paths, and a gradient-boosting split at an exact bin edge may then flip."""
    frame = small_fleet(n_accounts=4, hours=30)
    ts = pd.DatetimeIndex(frame["ts"].unique()).sort_values()
    start = int(len(ts) * 0.6)
    faults = crash_faults(frame, seed=3)
    train = frame["ts"] < ts[start]
    bundle = fit_risk(frame[train], faults[faults["ts"] < ts[start]])
    assert bundle.uses_events
    batch = bundle.build_features(frame, events=faults).set_index(["account_id", "ts"])
    scorer = LiveScorer(model_set(risk_bundle=bundle), max_rows=10)
    assert scorer.history_lookback_ms() > 0
    served = scorer.models.get("risk")
    hist = [j for j, c in enumerate(served.feature_columns) if c.startswith("fault_history__")]
    assert hist
    seen = []
    risk_of = served.risk_of
    served.risk_of = lambda ids, ts_ms, X: seen.append((ids, ts_ms, X)) or risk_of(ids, ts_ms, X)
    scorer.window.merge(frame[train])
    for t in ts[start:]:
        counts = scorer.window.merge(frame[frame["ts"] == t])
        out = scorer.score(counts, kinds={}, groups={}, events=faults[faults["ts"] <= t])
        assert (out["family"] == "risk").sum() == 4 * len(bundle.horizons)
        ids, ts_ms, X = seen[-1]
        keys = list(
            zip([str(a) for a in ids], pd.to_datetime(ts_ms, unit="ms", utc=True), strict=True)
        )
        ref = bundle.matrix(batch.loc[keys].reset_index())
        np.testing.assert_allclose(X, ref, rtol=1e-6, atol=1e-9, equal_nan=True)
        scorer.trim()
    live_hist = np.concatenate([x[:, hist] for _, _, x in seen[-len(ts) + start :]])
    assert np.isfinite(live_hist).any()  # the events reached the model filled in
    counts = np.ones(len(scorer.window.ids), dtype=np.int64)
    scorer.score(counts, kinds={}, groups={})  # no events passed: the columns are missing
    assert not np.isfinite(seen[-1][2][:, hist]).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_live_alert_rule_equals_the_batch_rule_tick_by_tick(seed):
    """Scores arriving a few at a time page exactly where :class:`AlertRule` pages over the
    whole series, including episodes with brief dips (one page each) and warm-up NaNs."""
    from fleetml.models.anomaly import AlertRule

    rng = np.random.default_rng(seed)
    n = 600
    scores = rng.uniform(0, 0.4, n)
    for start in rng.choice(n - 40, size=14, replace=False):
        scores[start : start + rng.integers(2, 30)] = rng.uniform(0.5, 1.0)
        scores[start + rng.integers(1, 5)] = 0.1  # a brief dip inside the episode
    scores[:5] = np.nan
    rule = AlertRule(threshold=0.5, min_duration=2, suppression=12)
    want = rule.apply(scores)
    scorer = LiveScorer(model_set(), max_rows=10)
    scorer._ensure(1, 0)
    got = []
    pos = 0
    while pos < n:
        k = int(min(rng.integers(1, 8), n - pos))
        flags, _ = scorer._rule(
            rule, np.array([0]), np.array([k]), np.zeros(k, np.int64), np.arange(k),
            scores[pos : pos + k],
        )  # fmt: skip
        got.append(flags)
        pos += k
    got = np.concatenate(got)
    assert want.any() and (got == want).all()
