"""Anomaly training, registry round trip, promotion gate, scoring and the causal backtest."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fleetml.cli import cli
from fleetml.training.anomaly import (
    AnomalyTrainConfig,
    backtest_anomaly,
    promotion_decision,
)


def last_json(output: str) -> dict:
    def strict(token):
        raise AssertionError(f"{token} in the printed JSON")

    return json.loads(output.strip().splitlines()[-1], parse_constant=strict)


def invoke(*args: str) -> dict:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return last_json(result.stdout)


# ------------------------------------------------------------------ promotion gate (pure)


def test_gate_needs_labels_and_beats_baseline_and_champion():
    good = {"f1": 0.8, "alert_rate": 0.01}
    assert promotion_decision(good, baseline={"f1": 0.5}, champion={"f1": 0.7})[0]
    assert promotion_decision(good, baseline={"f1": 0.5}, champion=None)[0]
    ok, why = promotion_decision(good, baseline={"f1": 0.9}, champion=None)
    assert not ok and "baseline" in why
    ok, why = promotion_decision(good, baseline={"f1": 0.5}, champion={"f1": 0.85})
    assert not ok and "champion" in why
    assert promotion_decision(good, baseline={"f1": 0.5}, champion={"f1": 0.85}, tolerance=0.1)[0]
    ok, why = promotion_decision({"f1": float("nan")}, baseline=None, champion=None)
    assert not ok and "labelled" in why
    ok, why = promotion_decision({"f1": 0.9, "alert_rate": 0.2}, baseline=None, champion=None)
    assert not ok and "alert rate" in why
    ok, why = promotion_decision({"f1": 0.0}, baseline={"f1": 0.0}, champion=None)
    assert not ok and "F1 = 0" in why


def test_gate_promotes_on_a_tie_with_baseline_and_champion():
    # "At least" the baseline's and the champion's F1: a tie goes to the challenger, which saw
    # more recent data (docs/anomaly.md); a hair below either reference does not promote.
    tie = {"f1": 0.75, "alert_rate": 0.01}
    ok, why = promotion_decision(tie, baseline={"f1": 0.75}, champion={"f1": 0.75})
    assert ok, why
    ok, why = promotion_decision(tie, baseline={"f1": 0.5}, champion={"f1": 0.75 + 1e-9})
    assert not ok and "below the champion" in why
    ok, why = promotion_decision(tie, baseline={"f1": 0.75 + 1e-9}, champion=None)
    assert not ok and "below the baseline" in why
    # The tolerance moves the tie point: exactly the champion's F1 minus the tolerance promotes.
    assert promotion_decision(tie, baseline={"f1": 0.5}, champion={"f1": 1.0}, tolerance=0.25)[0]
    assert not promotion_decision(
        tie, baseline={"f1": 0.5}, champion={"f1": 1.0}, tolerance=0.25 - 1e-9
    )[0]


# ------------------------------------------------------------------ MLflow round trip


@pytest.mark.slow
def test_train_register_promote_load_champion_and_score(stored_fleet, tmp_path):
    settings, engine, frame, events = stored_fleet
    from fleetml.training import registry

    # The fixture puts an incident on every account in its 9 held-out hours (3 alerts in 1.1
    # account-days): the default sanity limit of 1 per account-day is meant for real fleets.
    first = invoke("train", "anomaly", "--max-alerts-per-account-day", "10")
    assert {"run_id", "model", "version", "test_f1", "test_pr_auc", "baseline_f1"} <= set(first)
    assert first["model"] == "fleetml-anomaly" and first["version"] == 1
    assert first["champion"] == 1 and first["promoted"]  # first version becomes champion
    assert first["sanity_passed"] and first["rule"]["threshold"] >= 0.5
    if not first["gate_passed"]:
        assert first["promotion_reason"].startswith("promoted as first version although")
    assert first["test_n_windows"] >= 1
    assert registry.get_champion_version("fleetml-anomaly", settings=settings) == 1
    # the run keeps the held-out precision-recall curve the dashboard draws
    from fleetml.serving.registry import run_json

    curve = run_json(first["run_id"], "pr_curve.json", settings=settings)
    assert curve["recall"] and len(curve["precision"]) == len(curve["thresholds"])
    assert all(0 <= p <= 1 for p in curve["precision"])

    out = tmp_path / "scores.csv"
    scored = invoke("score", "anomaly", "--out", str(out))
    table = pd.read_csv(out)
    assert list(table.columns) == [
        "ts",
        "account_id",
        "anomaly_score",
        "calibrated_score",
        "is_anomaly",
        "top_metrics",
    ]
    assert (table["anomaly_score"] <= table["calibrated_score"] + 1e-12).all()
    assert len(table) == len(frame) == scored["rows"]
    assert table["anomaly_score"].between(0, 1).all()
    flagged = table[table["is_anomaly"]]
    assert len(flagged) and flagged["top_metrics"].notna().all()
    assert set(";".join(flagged["top_metrics"]).split(";")) <= {"reply_latency_ms", "send_failures"}

    # the registered pyfunc (what an external server loads) gives the same scores
    bundle = registry.load_bundle("fleetml-anomaly", use_pyfunc=True, settings=settings)
    direct = bundle.predict(frame)
    np.testing.assert_allclose(
        direct["anomaly_score"].to_numpy(), table["anomaly_score"], atol=1e-9
    )

    second = invoke("train", "anomaly", "--promote", "--seed", "1")
    assert second["version"] == 2 and second["champion"] == 2
    assert second["previous_champion"] == 1
    info = registry.version_info("fleetml-anomaly", 2, settings=settings)
    assert set(info["aliases"]) == {"champion", "challenger"}
    assert "retired_at" in registry.version_info("fleetml-anomaly", 1, settings=settings)["tags"]
    # --version picks an older version explicitly; a missing one is a clear error
    invoke("score", "anomaly", "--version", "1", "--out", str(tmp_path / "v1.parquet"))
    assert len(pd.read_parquet(tmp_path / "v1.parquet")) == len(frame)
    bad = CliRunner().invoke(cli, ["score", "anomaly", "--version", "9", "--out", "x.csv"])
    assert bad.exit_code != 0 and "no version 9" in bad.output


@pytest.mark.slow
def test_score_without_a_model_explains_what_to_do(stored_fleet, tmp_path):
    result = CliRunner().invoke(cli, ["score", "anomaly", "--out", str(tmp_path / "s.csv")])
    assert result.exit_code != 0 and "train one first" in result.output


def test_tracking_uri_honours_mlflow_tracking_uri(monkeypatch, tmp_path, sqlite_settings):
    from fleetml.config import get_settings, reset_settings
    from fleetml.training import registry

    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    reset_settings()
    registry.clear_cache()
    assert registry.configure_mlflow(get_settings()) == uri
    registry.clear_cache()


# ------------------------------------------------------------------ backtest


def test_backtest_is_causal_and_one_row_per_sample(make_fleet):
    frame, _ = make_fleet(n_accounts=1, hours=48)
    config = AnomalyTrainConfig(n_estimators=20)
    base = backtest_anomaly(frame, config=config, warmup=0.2, refit_every=100)
    assert len(base) == len(frame)
    warm = int(0.2 * len(frame))
    assert base["anomaly_score"].iloc[:warm].isna().all()
    assert base["anomaly_score"].iloc[warm:].between(0, 1).all()

    cut = int(0.7 * len(frame))
    changed = frame.copy()
    rng = np.random.default_rng(9)
    changed.loc[cut:, "reply_latency_ms"] = rng.normal(1e4, 1e3, len(frame) - cut)
    other = backtest_anomaly(changed, config=config, warmup=0.2, refit_every=100)
    np.testing.assert_array_equal(
        other["anomaly_score"].iloc[:cut].to_numpy(), base["anomaly_score"].iloc[:cut].to_numpy()
    )
    np.testing.assert_array_equal(other["is_anomaly"].iloc[:cut], base["is_anomaly"].iloc[:cut])
    assert not np.array_equal(other["anomaly_score"].iloc[cut:], base["anomaly_score"].iloc[cut:])


def test_backtest_warmup_max_caps_the_training_only_prefix(make_fleet):
    frame, _ = make_fleet(n_accounts=1, hours=48)
    out = backtest_anomaly(
        frame,
        config=AnomalyTrainConfig(n_estimators=10),
        warmup=0.5,
        warmup_max=60,
        refit_every=400,
    )
    assert out["anomaly_score"].isna().sum() == 60


@pytest.mark.slow
def test_backtest_cli_writes_scores_and_summary(stored_fleet, tmp_path):
    settings, engine, frame, events = stored_fleet
    out = tmp_path / "bt.parquet"
    summary = invoke("backtest", "anomaly", "--out", str(out), "--refit-every", "200")
    table = pd.read_parquet(out)
    assert len(table) == len(frame) == summary["rows"]
    assert summary["scored_rows"] == table["anomaly_score"].notna().sum()
    assert summary["recall"] > 0  # the injected incidents are found


def test_the_library_backtest_replays_what_the_cli_replays_by_default():
    """A notebook calling backtest_anomaly gets the CLI's refit cadence unless it asks."""
    import inspect

    from fleetml.training.anomaly import backtest_series
    from fleetml.training.anomaly_cli import backtest_anomaly as cli

    option = next(p for p in cli.params if p.name == "refit_every")
    for fn in (backtest_anomaly, backtest_series):
        assert inspect.signature(fn).parameters["refit_every"].default == option.default == 500


@pytest.mark.slow
def test_backtest_cli_habituates_the_score_not_the_alerts(stored_fleet, tmp_path):
    """--habituation-half-life 0 reports the calibrated score; the default halves rows that are
    no more anomalous than the account's recent maximum, and alerts the same rows."""
    from fleetml.models.anomaly import ScoreHabituation

    invoke("backtest", "anomaly", "--out", str(tmp_path / "h.csv"), "--refit-every", "200")
    invoke(
        "backtest", "anomaly", "--out", str(tmp_path / "c.csv"), "--refit-every", "200",
        "--habituation-half-life", "0",
    )  # fmt: skip
    hab, cal = pd.read_csv(tmp_path / "h.csv"), pd.read_csv(tmp_path / "c.csv")
    assert (hab["is_anomaly"] == cal["is_anomaly"]).all() and cal["is_anomaly"].any()
    want = ScoreHabituation(half_life=1000.0).apply_by_account(
        cal["anomaly_score"].to_numpy(), cal["account_id"].to_numpy(dtype=object)
    )
    np.testing.assert_allclose(hab["anomaly_score"], want, rtol=1e-9, equal_nan=True)
    assert (hab["anomaly_score"] < cal["anomaly_score"]).any()


def test_the_habituation_setting_is_checked():
    with pytest.raises(ValueError, match="factor"):
        AnomalyTrainConfig(habituation_factor=1.5).habituation()
    with pytest.raises(ValueError, match="margin"):
        AnomalyTrainConfig(habituation_margin=-1.0).habituation()
    # a plateau factor above the default near factor stays valid (the near factor follows it)
    assert AnomalyTrainConfig(habituation_factor=0.75).habituation().near_factor == 0.75


@pytest.mark.parametrize("value", ["nan", "inf", "-0.1"])
def test_a_non_finite_habituation_setting_is_refused_before_any_data_is_read(
    value, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # were it accepted, the backtest would write x.csv here
    result = CliRunner().invoke(
        cli, ["backtest", "anomaly", "--out", "x.csv", "--habituation-margin", value]
    )
    assert result.exit_code == 2 and "--habituation-margin" in result.output
    assert AnomalyTrainConfig(habituation_half_life=0).habituation() is None


@pytest.mark.parametrize(
    ("args", "threshold", "tuned", "half_life", "margin"),
    [
        ([], 0.5, True, 1000.0, 0.05),
        (["--threshold", "0.7"], 0.7, False, 1000.0, 0.05),
        (["--habituation-half-life", "500"], 0.5, True, 500.0, 0.05),
        (["--threshold", "0.6", "--habituation-half-life", "0"], 0.6, False, 0.0, 0.05),
        (["--habituation-margin", "0"], 0.5, True, 1000.0, 0.0),
    ],
)
def test_train_cli_passes_threshold_and_habituation_apart(
    monkeypatch, args, threshold, tuned, half_life, margin
):
    """--threshold fixes the threshold (no tuning); --habituation-half-life only sets the
    habituation and leaves the threshold to be tuned."""
    import fleetml.training.anomaly as training

    seen = {}

    def fake(engine, settings, *, config, **kw):
        seen["config"] = config
        return {"model": "fleetml-anomaly", "threshold": 0.5, "rule": {"range_check": True}}

    monkeypatch.setattr(training, "train_anomaly", fake)
    monkeypatch.setattr("fleetml.training.anomaly_cli.echo_training_outcome", lambda *a: None)
    result = CliRunner().invoke(cli, ["train", "anomaly", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cfg = seen["config"]
    assert (
        cfg.threshold,
        cfg.tune_threshold,
        cfg.habituation_half_life,
        cfg.habituation_margin,
    ) == (threshold, tuned, half_life, margin)
