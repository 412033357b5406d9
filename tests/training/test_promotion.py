"""The shared promotion rule with its sanity checks, risk horizons without positives, and the
progress bars of the training commands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fleetml.cli import cli
from fleetml.training import registry
from fleetml.training.sanity import anomaly_sanity, forecast_sanity, risk_sanity


@pytest.fixture
def promotions(monkeypatch):
    """Record registry.promote calls instead of talking to MLflow."""
    calls = []
    monkeypatch.setattr(registry, "promote", lambda name, version, **kw: calls.append(version))
    return calls


def rule(**kw):
    args = dict(champion_version=None, force=False, gate_passed=True, gate_reason="gate ok")
    return registry.apply_promotion_rule("m", 1, **{**args, **kw})


# ------------------------------------------------------------------ the rule (pure)


def test_first_version_failing_sanity_is_not_promoted_and_says_why(promotions):
    promoted, reason = rule(sanity_passed=False, sanity_reason="12.60 alert onsets per day")
    assert not promoted and promotions == []
    assert "first version failed its sanity check: 12.60 alert onsets per day" in reason
    assert "heuristic fallback" in reason and "--promote" in reason


def test_forced_version_says_it_was_promoted_although_its_gate_failed(promotions):
    promoted, reason = rule(
        force=True, gate_passed=False, gate_reason="F1 = 0", sanity_passed=False, sanity_reason="x"
    )
    assert promoted and promotions == [1]
    assert "promoted although its gate failed: F1 = 0 and its sanity check failed: x" in reason


def test_sane_first_version_with_failed_gate_is_promoted_and_says_so(promotions):
    promoted, reason = rule(gate_passed=False, gate_reason="F1 0.2 below the baseline's 0.4")
    assert promoted and promotions == [1]
    why = "F1 0.2 below the baseline's 0.4"
    assert reason == f"promoted as first version although its gate failed: {why}"
    warnings = registry.promotion_warnings(
        promoted=True, gate_passed=False, sanity_passed=True, reason=reason
    )
    assert warnings == [reason]


def test_later_versions_need_gate_and_sanity(promotions):
    assert rule(champion_version=3)[0]
    assert not rule(champion_version=3, gate_passed=False)[0]
    promoted, reason = rule(champion_version=3, sanity_passed=False, sanity_reason="too loud")
    assert not promoted and "failed its sanity check: too loud" in reason
    assert promotions == [1]


def test_sanity_checks():
    ok, why = anomaly_sanity({"alerts_per_account_day": 12.6, "alert_rate": 0.63})
    assert not ok and "12.60 alert onsets per account-day" in why and "63.0 %" in why
    assert anomaly_sanity({"alerts_per_account_day": 0.4, "alert_rate": 0.01})[0]
    metrics = {"1h": {"alerts_per_account_day": 0.2}, "6h": {"alerts_per_account_day": 3.0}}
    positives = {"1h": {"train": 5, "val": 0, "test": 1}, "6h": {"train": 9, "val": 4, "test": 2}}
    ok, why = risk_sanity(metrics, positives, min_positives=3)
    assert not ok and "1h: no positive validation rows" in why and "6h: 3.00 at-risk" in why
    assert not forecast_sanity({"mase": 1.3}, {"mase": 1.1})[0]
    assert forecast_sanity({"mase": 1.1}, {"mase": 1.1})[0]  # a tie passes


# ------------------------------------------------------------------ risk horizons


def test_horizon_without_positive_validation_rows_is_dropped_with_a_warning():
    from test_risk_training import FAST, FEATURES, risk_fleet

    from fleetml.training.risk import RiskTrainConfig, fit_risk

    frame, events = risk_fleet(n_accounts=4, days=5)
    faults = events[events["kind"] == "crash"]
    ts = pd.DatetimeIndex(frame["ts"])
    lo, hi = ts.min(), ts.max()
    val_start, test_start = lo + 0.6 * (hi - lo), lo + 0.8 * (hi - lo)
    # No fault in the validation period (nor shortly after): the horizon cannot be calibrated.
    quiet = (faults["ts"] >= val_start - pd.Timedelta("3h")) & (
        faults["ts"] < test_start + pd.Timedelta("3h")
    )
    cfg = RiskTrainConfig(horizons=("1h",), feature_config=FEATURES, enforcement=False, **FAST)
    with pytest.raises(ValueError, match="no horizon could be trained"):
        fit_risk(frame, faults=faults[~quiet], config=cfg)

    cfg = RiskTrainConfig(
        horizons=("1h", "30h"), feature_config=FEATURES, enforcement=False, **FAST
    )
    fit = fit_risk(frame, faults=faults, config=cfg)
    assert list(fit.model.horizons) == ["1h"]
    assert fit.positives["1h"]["train"] > 0 and fit.positives["1h"]["val"] > 0
    assert fit.positives["30h"]["val"] == 0
    assert any("30h dropped: no validation rows" in w for w in fit.warnings)
    assert np.isfinite(fit.metrics["1h"]["alerts_per_account_day"])


# ------------------------------------------------------------------ CLI, MLflow


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


@pytest.mark.slow
def test_train_anomaly_refuses_an_insane_first_version_and_shows_progress(stored_fleet):
    settings = stored_fleet[0]
    runner = CliRunner()
    args = ["train", "anomaly", "--max-alerts-per-account-day", "0.0001"]
    first = runner.invoke(cli, [*args, "--progress"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "train anomaly" in first.stderr and "%|" in first.stderr  # the bar, on stderr
    out = last_json(first.stdout)  # stdout's last line stays strict JSON
    assert out["promoted"] is False and out["champion"] is None
    assert out["sanity_passed"] is False and "alert onsets per account-day" in out["sanity_reason"]
    assert "first version failed its sanity check" in out["promotion_reason"]
    assert out["warnings"] and "warning: not promoted: first version failed" in first.stderr
    assert registry.get_champion_version("fleetml-anomaly", settings=settings) is None

    forced = runner.invoke(cli, [*args, "--promote", "--no-progress"], catch_exceptions=False)
    assert forced.exit_code == 0, forced.output
    assert "%|" not in forced.stderr
    out = last_json(forced.stdout)
    assert out["promoted"] is True and out["champion"] == 2
    assert "promoted although its" in out["promotion_reason"]
    assert out["promoted_despite_failed_gate"] is True
    assert "promoted although its" in forced.stderr


@pytest.mark.slow
def test_train_risk_reports_positives_and_warns_about_dropped_horizons(sqlite_settings):
    from test_risk_training import risk_fleet

    from fleetml.cli_support import open_engine
    from fleetml.ingest.files import import_events_frame, import_metrics_frame

    frame, events = risk_fleet(n_accounts=3, days=4, step="15min")
    with open_engine(sqlite_settings).begin() as conn:
        import_metrics_frame(conn, frame, actor="test")
        import_events_frame(conn, events, actor="test")
    result = CliRunner().invoke(
        cli, ["train", "risk", "--horizon", "1h,40h", "--no-progress"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    out = last_json(result.stdout)
    assert out["horizons"] == ["1h"] and out["requested_horizons"] == ["1h", "40h"]
    assert out["positives"]["1h"]["train"] > 0 and out["positives"]["40h"]["val"] == 0
    assert any(w.startswith("risk horizon 40h dropped") for w in out["warnings"])
    assert "warning: risk horizon 40h dropped" in result.stderr
    assert "positive rows train/val/test" in result.stderr


def test_run_with_progress_keeps_order_and_writes_the_bar_to_stderr(capsys):
    from fleetml.training.progress import progress_enabled, run_with_progress

    out = run_with_progress(abs, [-3, 1, -2], enabled=True, desc="series", n_jobs=1, chunks=2)
    assert out == [3, 1, 2]
    captured = capsys.readouterr()
    assert "series" in captured.err and "3/3" in captured.err and captured.out == ""
    assert progress_enabled(True) and not progress_enabled(False)
