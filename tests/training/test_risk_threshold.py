"""The risk threshold's alert budget: onsets counted as the sanity check counts them, chosen on
validation only, recorded with the model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fleetml.training.risk import RiskTrainConfig, choose_threshold, fit_risk
from fleetml.training.sanity import (
    account_days,
    alerts_per_account_day,
    budget_threshold,
    onsets_by_threshold,
)


def scored_rows(n_accounts=4, minutes=720, seed=0) -> pd.DataFrame:
    """Shuffled rows of a few accounts with a rounded, flickering risk and some missing values."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2026-03-01", periods=minutes, freq="min", tz="UTC")
    parts = []
    for k in range(n_accounts):
        smooth = np.convolve(rng.random(minutes), np.ones(15) / 15, mode="same")
        parts.append(pd.DataFrame({"ts": ts, "account_id": f"acc-{k}", "risk": smooth.round(2)}))
    frame = pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=seed)
    frame.loc[frame.index[:20], "risk"] = np.nan
    return frame


def rate_at(frame: pd.DataFrame, threshold: float) -> float:
    return alerts_per_account_day(frame.assign(at_risk=frame["risk"] >= threshold), flag="at_risk")


def test_onsets_by_threshold_counts_what_the_sanity_check_counts():
    frame = scored_rows()
    thresholds = np.r_[-1.0, np.unique(frame["risk"].dropna()), 2.0]
    counts = onsets_by_threshold(frame, thresholds)
    days = account_days(frame)
    expected = [rate_at(frame, t) for t in thresholds]
    np.testing.assert_allclose(counts / days, expected)
    assert counts[-1] == 0
    complete = frame.dropna()  # below every risk, each account is one episode from its first row
    assert onsets_by_threshold(complete, [-1.0])[0] == complete["account_id"].nunique()


@pytest.mark.parametrize("budget", [2.0, 10.0, 40.0])
def test_budget_threshold_keeps_it_and_every_higher_threshold_within_the_budget(budget):
    frame = scored_rows()
    threshold, rate = budget_threshold(frame, budget=budget)
    values = np.unique(frame["risk"].dropna())
    assert rate == pytest.approx(rate_at(frame, threshold))
    assert all(rate_at(frame, t) <= budget for t in values[values >= threshold])
    lower = values[values < threshold]
    assert len(lower) == 0 or rate_at(frame, lower[-1]) > budget  # the lowest such threshold


def validation(n_accounts=8, hours=24, seed=1, quiet=False):
    """Validation rows of accounts with one fault each, a risk that rises before it, noise
    (with ``quiet``, rows far from a fault have a flat risk)."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2026-03-01", periods=hours * 60, freq="min", tz="UTC")
    ids, y, risk = [], [], []
    for k in range(n_accounts):
        label = np.zeros(len(ts))
        start = rng.integers(60, len(ts) - 120)
        label[start : start + 60] = 1
        ids.append(pd.DataFrame({"ts": ts, "account_id": f"acc-{k}"}))
        y.append(label)
        noise = rng.normal(0, 0.08, len(ts)) * (label if quiet else 1)
        risk.append(np.clip(0.05 + 0.6 * label + noise, 0, 1))
    return pd.concat(ids, ignore_index=True), np.concatenate(y), np.concatenate(risk)


def test_reachable_target_precision_within_the_budget_keeps_its_threshold():
    ids, y, risk = validation(quiet=True)
    choice = choose_threshold(y, risk, ids, target_precision=0.8, alert_budget=5.0)
    assert choice.rule == "target precision" and choice.val_precision >= 0.8
    assert choice.val_alerts_per_account_day <= 5.0
    assert "within" not in choice.reason and "validation:" in choice.reason


def test_a_loud_target_precision_threshold_is_raised_to_the_budget():
    ids, y, risk = validation()
    loud = choose_threshold(y, risk, ids, target_precision=0.8, alert_budget=None)
    choice = choose_threshold(y, risk, ids, target_precision=0.8, alert_budget=0.5)
    assert loud.rule == "target precision" and rate_of(ids, risk, loud.threshold) > 0.5
    assert choice.rule == "alert budget" and choice.threshold > loud.threshold
    assert choice.val_alerts_per_account_day <= 0.5
    assert choice.val_alerts_per_account_day == pytest.approx(rate_of(ids, risk, choice.threshold))
    assert "raised to the lowest threshold" in choice.reason


def rate_of(ids, risk, threshold) -> float:
    return rate_at(ids.assign(risk=risk), threshold)


def test_unreachable_target_precision_falls_back_to_the_budget_not_to_a_low_threshold():
    ids, y, risk = validation(quiet=True)
    # Every account also has a false alarm exactly as loud as its fault: precision 0.5 at best.
    decoy = ids.groupby("account_id").cumcount().to_numpy() < 60
    risk = np.where(decoy | (y == 1), 0.65, risk)
    choice = choose_threshold(y, risk, ids, target_precision=0.9, alert_budget=3.0)
    assert choice.rule == "alert budget" and "unreachable" in choice.reason
    assert choice.threshold == 0.65  # never the quiet rows' level, though within the budget
    assert choice.val_alerts_per_account_day == pytest.approx(2.0, rel=0.01)
    assert choice.val_recall == 1.0 and choice.val_precision == pytest.approx(0.5)
    tight = choose_threshold(y, risk, ids, target_precision=0.9, alert_budget=1.0)
    assert tight.rule == "disabled" and "alerts off" in tight.reason
    assert tight.threshold > 0.65 and tight.val_alerts_per_account_day == 0.0


def test_alerts_no_better_than_chance_are_turned_off():
    ids, y, _ = validation()
    random_risk = np.random.default_rng(3).random(len(y))
    choice = choose_threshold(y, random_risk, ids, target_precision=0.8, alert_budget=2.0)
    if choice.rule != "disabled":  # a random score may beat the base rate by luck at the top
        assert choice.val_precision > y.mean()
    else:
        assert choice.threshold > random_risk.max() and "alerts off" in choice.reason


def test_fit_risk_bounds_validation_onsets_and_never_looks_at_held_out_labels():
    from test_risk_training import FAST, FEATURES, risk_fleet

    frame, events = risk_fleet(n_accounts=4, days=5)
    faults = events[events["kind"] == "crash"]
    cfg = RiskTrainConfig(
        horizons=("1h", "3h"), feature_config=FEATURES, enforcement=False, alert_budget=1.0, **FAST
    )
    fit = fit_risk(frame, faults=faults, config=cfg)
    for h, hm in fit.model.horizons.items():
        choice = fit.threshold_choices[h]
        assert hm.threshold == choice.threshold and hm.threshold_reason == choice.reason
        assert choice.val_alerts_per_account_day <= 1.0
        assert fit.metrics[h]["val_alerts_per_account_day"] == choice.val_alerts_per_account_day
        assert fit.threshold_rules[h]["rule"] in ("target precision", "alert budget", "disabled")
    # Remove every fault of the held-out period: the thresholds must not move.
    test_start = fit.data_range["test_start"]
    blind = fit_risk(frame, faults=faults[faults["ts"] < test_start], config=cfg)
    assert blind.model.thresholds == fit.model.thresholds
