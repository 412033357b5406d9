"""Risk training: labels, purged time splits, fit/evaluate, CLI round trip, causal backtest."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fleetml.cli import cli
from fleetml.features import FeatureConfig
from fleetml.training.risk import (
    RiskTrainConfig,
    backtest_risk,
    fit_risk,
    make_labels,
    parse_horizons,
    promotion_decision,
    split_masks,
    split_times,
)

FAST = dict(max_iter=30, min_samples_leaf=10, importance_rows=300)
FEATURES = FeatureConfig(
    mean_windows=("30min", "2h"),
    std_windows=("2h",),
    slope_windows=("2h",),
    roc_windows=("30min",),
    ratio_windows=("1h",),
    seasonal=False,
)


def risk_fleet(n_accounts=6, days=5, step="10min", seed=0, ramp_mb=400.0, faults_per_day=2.0):
    """Accounts whose memory ramps up by ``ramp_mb`` for 3 h before each fault (crash, about
    ``faults_per_day`` per account), plus one ban."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(
        "2026-02-02",
        periods=int(pd.Timedelta(f"{days}D") / pd.Timedelta(step)),
        freq=step,
        tz="UTC",
    ).as_unit("ms")
    frames, events = [], []
    for k in range(n_accounts):
        n = len(ts)
        mem = 300 + rng.normal(0, 10, n)
        cpu = 30 + rng.normal(0, 3, n)
        n_faults = int(days * faults_per_day)
        for start in rng.choice(np.arange(40, n - 30), size=n_faults, replace=False):
            ramp = 18  # 3 h of 10-min samples
            mem[start - ramp : start] += np.linspace(0, ramp_mb, ramp)
            events.append({"ts": ts[start], "account_id": f"acc-{k}", "kind": "crash"})
        frames.append(
            pd.DataFrame({"ts": ts, "account_id": f"acc-{k}", "mem_mb": mem, "cpu_pct": cpu})
        )
    events.append({"ts": ts[len(ts) // 2], "account_id": "acc-0", "kind": "banned"})
    frame = pd.concat(frames, ignore_index=True)
    frame["account_id"] = frame["account_id"].astype("str")
    ev = pd.DataFrame(events)
    ev["ts"] = pd.to_datetime(ev["ts"], utc=True).dt.as_unit("ms")
    return frame, ev.sort_values("ts").reset_index(drop=True)


def test_labels_window_is_open_at_t_closed_at_t_plus_h_and_censored_at_the_end():
    ts = pd.date_range("2026-01-01", periods=10, freq="1h", tz="UTC").as_unit("ms")
    ts_ms = ts.asi8
    acc = np.array(["a"] * 10)
    events = pd.DataFrame({"ts": [ts[5]], "account_id": ["a"]})
    y = make_labels(ts_ms, acc, events, ("2h",), int(ts_ms[-1]))["2h"]
    # rows at 3 h and 4 h see the fault at 5 h; the row at 5 h does not (window is open at t).
    np.testing.assert_array_equal(y[:8], [0, 0, 0, 1, 1, 0, 0, 0])
    assert np.isnan(y[8]) and np.isnan(y[9])  # window reaches past the data: unknown
    other = make_labels(ts_ms, np.array(["b"] * 10), events, ("2h",), int(ts_ms[-1]))["2h"]
    assert np.nansum(other) == 0  # another account's fault is not this account's label


def test_time_splits_are_purged_by_one_horizon():
    frame, _ = risk_fleet(n_accounts=1)
    ts_ms = frame["ts"].astype("int64").to_numpy() if False else pd.DatetimeIndex(frame["ts"]).asi8
    t_val, t_test = split_times(ts_ms, 0.2, 0.2)
    h_ms = 6 * 3600_000
    m = split_masks(ts_ms, "6h", t_val, t_test)
    assert (ts_ms[m["train"]] + h_ms < t_val).all()
    assert (ts_ms[m["val"]] >= t_val).all() and (ts_ms[m["val"]] + h_ms < t_test).all()
    assert not (m["train"] & m["val"]).any() and not (m["val"] & m["test"]).any()
    with pytest.raises(ValueError, match="fractions"):
        split_times(ts_ms, 0.6, 0.5)
    assert parse_horizons("1h, 6h,1h") == ("1h", "6h")
    with pytest.raises(ValueError, match="duration"):
        parse_horizons("soon")


def test_fit_risk_learns_precursors_and_stores_thresholds():
    frame, events = risk_fleet()
    faults = events[events["kind"] == "crash"]
    # This fleet crashes twice per account-day: warning of most crashes needs a larger budget.
    cfg = RiskTrainConfig(horizons=("1h", "3h"), feature_config=FEATURES, alert_budget=5.0, **FAST)
    fit = fit_risk(frame, faults=faults, enforcement=events[events["kind"] == "banned"], config=cfg)
    assert set(fit.model.horizons) == {"1h", "3h"}
    m = fit.metrics["3h"]
    assert m["positives"] > 0 and m["pr_auc"] > 3 * m["positives"] / m["rows"]
    base_rate = m["positives"] / m["rows"]
    assert m["brier"] < 0.5 * base_rate * (1 - base_rate)  # beats always saying the base rate
    assert 0 < fit.model.thresholds["3h"] <= 1
    assert fit.metrics["3h"]["fault_recall"] > 0.5
    assert fit.importances["3h"] and fit.importances["3h"][0]["metric"] == "mem_mb"
    # Scores carry the long format with the stored threshold applied.
    s = fit.test_scores
    assert list(s.columns[:5]) == ["ts", "account_id", "horizon", "risk", "at_risk"]
    thr = s["horizon"].map(fit.model.thresholds)
    assert (s["at_risk"] == (s["risk"] >= thr)).all()


def test_refit_adds_the_validation_rows_but_never_the_test_rows(monkeypatch):
    # After the calibrator and threshold are chosen, each horizon's classifier is fitted again on
    # its training and validation rows (the most recent known days); the test period stays out.
    from fleetml.models.risk import RiskClassifier

    fitted_rows: list[int] = []
    real_fit = RiskClassifier.fit

    def spy(self, X, y, sample_weight=None):
        fitted_rows.append(len(X))
        return real_fit(self, X, y, sample_weight)

    monkeypatch.setattr(RiskClassifier, "fit", spy)
    frame, events = risk_fleet(n_accounts=4, days=4)
    faults = events[events["kind"] == "crash"]
    cfg = RiskTrainConfig(
        horizons=("3h",), feature_config=FEATURES, max_negative_ratio=0, enforcement=False, **FAST
    )
    fit = fit_risk(frame, faults=faults, config=cfg)
    c = fit.counts["3h"]
    train_rows = c["train_positives"] + c["train_negatives"]
    val_rows = c["val_positives"] + c["val_negatives"]
    assert fitted_rows == [train_rows, train_rows + val_rows]
    # The held-out figures come from the refitted classifier, which never saw a test row.
    assert fit.metrics["3h"]["positives"] == c["test_positives"] > 0
    fitted_rows.clear()
    fit_risk(frame, faults=faults, config=RiskTrainConfig(**{**cfg.__dict__, "refit": False}))
    assert fitted_rows == [train_rows]


def test_calibration_turns_subsampled_training_odds_into_held_out_frequencies():
    # Rare faults and one negative kept per positive: the classifier alone sees a 50 % fault
    # rate and overstates held-out risk about threefold (ECE ~0.15). Calibration on the (not
    # subsampled) validation period must make a predicted risk mean the observed frequency.
    frame, events = risk_fleet(n_accounts=8, days=6, ramp_mb=100, faults_per_day=0.5)
    faults = events[events["kind"] == "crash"]
    cfg = RiskTrainConfig(
        horizons=("3h",),
        feature_config=FEATURES,
        max_negative_ratio=1.0,
        alert_budget=None,
        enforcement=False,
        **FAST,
    )
    fit = fit_risk(frame, faults=faults, config=cfg)
    m = fit.metrics["3h"]
    assert m["positives"] / m["rows"] < 0.15  # held-out faults are rare, unlike in training
    assert m["ece"] < 0.06
    table = fit.reliability["3h"]
    used = table[table["count"] > 0]
    predicted = np.average(used["mean_predicted"], weights=used["count"])
    observed = np.average(used["observed_rate"], weights=used["count"])
    assert predicted == pytest.approx(observed, abs=0.03)


def test_enforcement_is_never_a_fault_label():
    frame, events = risk_fleet(n_accounts=2)
    only_bans = events[events["kind"] == "crash"].assign(kind="banned")
    cfg = RiskTrainConfig(horizons=("1h",), feature_config=FEATURES, **FAST)
    with pytest.raises(ValueError, match="technical-fault"):
        fit_risk(frame, faults=only_bans.iloc[:0], enforcement=only_bans, config=cfg)


def test_promotion_gate_compares_mean_pr_auc():
    good = {"1h": {"pr_auc": 0.6}, "6h": {"pr_auc": 0.8}}
    assert promotion_decision(good, None)[0]
    assert promotion_decision(good, {"1h": {"pr_auc": 0.5}, "6h": {"pr_auc": 0.7}})[0]
    ok, why = promotion_decision(good, {"1h": {"pr_auc": 0.9}, "6h": {"pr_auc": 0.9}})
    assert not ok and "champion" in why
    ok, why = promotion_decision({"1h": {"pr_auc": float("nan")}}, None)
    assert not ok and "no fault" in why


def test_promotion_gate_promotes_on_a_tie_with_the_champion():
    # "At least the champion's" mean PR-AUC (docs/risk.md): a tie goes to the challenger.
    challenger = {"1h": {"pr_auc": 0.5}, "6h": {"pr_auc": 0.75}}
    ok, why = promotion_decision(challenger, {"1h": {"pr_auc": 0.75}, "6h": {"pr_auc": 0.5}})
    assert ok, why
    ok, why = promotion_decision(challenger, {"1h": {"pr_auc": 0.75}, "6h": {"pr_auc": 0.5 + 1e-9}})
    assert not ok and "below the champion" in why
    # The tolerance moves the tie point: exactly the champion's mean minus the tolerance promotes.
    better = {"1h": {"pr_auc": 1.0}, "6h": {"pr_auc": 0.75}}  # mean 0.875
    assert promotion_decision(challenger, better, tolerance=0.25)[0]
    assert not promotion_decision(challenger, better, tolerance=0.25 - 1e-9)[0]


@pytest.mark.slow
def test_backtest_is_causal():
    frame, events = risk_fleet(n_accounts=4)
    faults = events[events["kind"] == "crash"]
    cfg = RiskTrainConfig(horizons=("2h",), feature_config=FEATURES, enforcement=False, **FAST)
    scores, summary = backtest_risk(frame, faults=faults, config=cfg, folds=2, initial=0.5)
    assert summary["metrics"]["2h"]["pr_auc"] > 0.2 and {"label", "fold"} <= set(scores.columns)
    first = scores[scores["fold"] == 0]
    fold_end = scores.loc[scores["fold"] == 1, "ts"].min()
    # Rewrite everything after fold 0: its scores must not move.
    changed = frame.copy()
    later = changed["ts"] >= fold_end
    changed.loc[later, "mem_mb"] = 5000.0
    scores2, _ = backtest_risk(
        changed, faults=faults[faults["ts"] < fold_end], config=cfg, folds=2, initial=0.5
    )
    again = scores2[scores2["fold"] == 0]
    np.testing.assert_allclose(first["risk"].to_numpy(), again["risk"].to_numpy())


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


@pytest.mark.slow
def test_cli_train_register_score_and_backtest(sqlite_settings, tmp_path, monkeypatch):
    from fleetml.cli_support import open_engine
    from fleetml.ingest.files import import_events_frame, import_metrics_frame
    from fleetml.training import registry

    registry.clear_cache()
    engine = open_engine(sqlite_settings)
    frame, events = risk_fleet(n_accounts=3, days=4, step="15min")
    with engine.begin() as conn:
        import_metrics_frame(conn, frame, actor="test")
        import_events_frame(conn, events, actor="test")
    # Keep the CLI fast in tests: small trees and few features on top of the CLI's config.
    import dataclasses

    import fleetml.training.risk_cli as risk_cli

    original = risk_cli._config
    monkeypatch.setattr(
        risk_cli,
        "_config",
        lambda *a: dataclasses.replace(
            original(*a), max_iter=20, importance_rows=200, feature_config=FEATURES
        ),
    )
    runner = CliRunner()
    # This fleet crashes twice per account-day: more than one at-risk onset per account-day is
    # expected, so the sanity limit is raised.
    args = ["train", "risk", "--horizon", "1h,3h", "--max-alerts-per-account-day", "10"]
    args += ["--alert-budget", "5"]
    res = runner.invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    first = last_json(res.stdout)
    assert first["model"] == "fleetml-risk" and first["version"] == 1 and first["champion"] == 1
    assert first["sanity_passed"], first["sanity_reason"]
    assert set(first["metrics"]) == {"1h", "3h"} and "pr_auc" in first["metrics"]["3h"]
    assert first["positives"]["1h"]["train"] > 0 and first["positives"]["3h"]["val"] > 0
    for h in ("1h", "3h"):  # each threshold says how it was chosen, within the budget
        assert first["threshold_rules"][h]["reason"]
        assert first["metrics"][h]["val_alerts_per_account_day"] <= 5
    assert "1h threshold: " in res.stderr
    # the run keeps what the dashboard charts: calibration and precision-recall per horizon
    from fleetml.serving.registry import run_json, version_info

    run_id = version_info("fleetml-risk", 1, settings=sqlite_settings)["run_id"]
    curves = run_json(run_id, "pr_curves.json", settings=sqlite_settings)
    reliability = run_json(run_id, "reliability.json", settings=sqlite_settings)
    assert set(curves) == set(reliability) == {"1h", "3h"}
    assert curves["3h"]["precision"] and len(curves["3h"]["recall"]) == len(
        curves["3h"]["thresholds"]
    )
    assert run_json(run_id, "no-such.json", settings=sqlite_settings) is None
    second = last_json(runner.invoke(cli, args).stdout)
    assert second["version"] == 2 and second["previous_champion"] == 1

    out = tmp_path / "risk.csv"
    res = runner.invoke(cli, ["score", "risk", "--version", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    scored = pd.read_csv(out)
    assert list(scored.columns[:5]) == ["ts", "account_id", "horizon", "risk", "at_risk"]
    assert len(scored) == 2 * len(frame) and scored["risk"].between(0, 1).all()

    res = runner.invoke(
        cli,
        [
            "backtest",
            "risk",
            "--horizon",
            "3h",
            "--folds",
            "2",
            "--out",
            str(tmp_path / "bt.parquet"),
        ],
    )
    assert res.exit_code == 0, res.output
    summary = last_json(res.stdout)
    assert summary["mode"] == "backtest" and "3h" in summary["metrics"]
    bad = runner.invoke(cli, ["train", "risk", "--horizon", "soon"])
    assert bad.exit_code != 0 and "duration" in bad.output
    registry.clear_cache()
