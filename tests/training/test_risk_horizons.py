"""Risk across horizons: monotone risk, the end-purged test split, censoring alike for positives
and negatives, and a negative-sampling budget per horizon."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fleetml.training.risk import (
    RiskTrainConfig,
    fit_risk,
    make_labels,
    split_masks,
    split_times,
    training_rows,
)
from tests.training.test_risk_training import FAST, FEATURES, risk_fleet


def test_positive_and_negative_rows_are_censored_alike_near_the_end():
    ts = pd.date_range("2026-01-01", periods=10, freq="1h", tz="UTC").as_unit("ms")
    events = pd.DataFrame({"ts": [ts[9]], "account_id": ["a"], "kind": ["crash"]})
    y = make_labels(ts.asi8, np.array(["a"] * 10), events, ("3h",), int(ts.asi8[-1]))["3h"]
    # Rows 7 and 8 already see the fault at 9 h, but their 3 h window reaches past the data end
    # (a negative there would be unknown): both kinds are censored, so the positive rate near
    # the end is not inflated.
    assert np.isnan(y[7:]).all()
    np.testing.assert_array_equal(y[:7], [0, 0, 0, 0, 0, 0, 1])


def test_test_split_is_purged_at_the_data_end():
    ts_ms = pd.date_range("2026-01-01", periods=200, freq="1h", tz="UTC").as_unit("ms").asi8
    t_val, t_test = split_times(ts_ms, 0.2, 0.2)
    end = int(ts_ms.max())
    m = split_masks(ts_ms, "24h", t_val, t_test, end)
    assert m["test"].any()
    assert (ts_ms[m["test"]] + 24 * 3_600_000 <= end).all()
    assert (ts_ms[m["test"]] >= t_test).all()
    assert not m["test"][-1]  # the last rows' windows are not observed


def test_each_horizon_gets_its_own_negative_budget():
    rng = np.random.default_rng(0)
    n = 20_000
    y1 = np.zeros(n)
    y1[rng.choice(n, 20, replace=False)] = 1
    y24 = np.zeros(n)
    y24[rng.choice(n, 400, replace=False)] = 1
    train = np.ones(n, dtype=bool)
    rows = training_rows(
        {"1h": y1, "24h": y24},
        {"1h": train, "24h": train},
        max_negative_ratio=5.0,
        max_rows=100_000,
        rng=rng,
    )
    for h, y, pos in (("1h", y1, 20), ("24h", y24, 400)):
        assert (rows[h] & (y == 1)).sum() == pos  # every positive kept
        negatives = int((rows[h] & (y == 0)).sum())
        assert 0.7 * 5 * pos <= negatives <= 1.3 * 5 * pos


def test_risk_is_monotone_across_horizons_and_calibration_still_reports():
    frame, events = risk_fleet(n_accounts=6, days=6, faults_per_day=1.0)
    faults = events[events["kind"] == "crash"]
    cfg = RiskTrainConfig(horizons=("1h", "3h", "12h"), feature_config=FEATURES, **FAST)
    fit = fit_risk(frame, faults=faults, config=cfg)
    assert list(fit.model.horizons) == ["1h", "3h", "12h"]
    wide = fit.test_scores.pivot_table(index=["ts", "account_id"], columns="horizon", values="risk")
    assert len(wide) > 100
    assert (wide["1h"] <= wide["3h"] + 1e-12).all() and (wide["3h"] <= wide["12h"] + 1e-12).all()
    # each horizon model alone (what live serving calls) is monotone too
    X = np.random.default_rng(1).normal(300, 150, size=(500, len(fit.model.feature_columns)))
    r = {h: m.risk(X) for h, m in fit.model.horizons.items()}
    assert (r["1h"] <= r["3h"]).all() and (r["3h"] <= r["12h"]).all()
    for h in fit.model.horizons:  # calibration and reliability output still there
        assert fit.reliability[h]["count"].sum() > 0
        assert 0 <= fit.metrics[h]["ece"] <= 1


def test_scoring_with_the_stored_events_reproduces_the_training_scores(monkeypatch):
    frame, events = risk_fleet(n_accounts=4, days=5)
    faults = events[events["kind"] == "crash"]
    cfg = RiskTrainConfig(horizons=("1h", "3h"), feature_config=FEATURES, enforcement=False, **FAST)
    fit = fit_risk(frame, faults=faults, config=cfg)
    assert fit.model.uses_events
    assert any(c.startswith("fault_history__") for c in fit.model.feature_columns)
    ordered = frame.sort_values(["account_id", "ts"]).reset_index(drop=True)
    rows = np.flatnonzero((ordered["ts"] >= fit.data_range["test_start"]).to_numpy())
    got = fit.model.predict(ordered, rows=rows, events=faults)
    both = got.merge(fit.test_scores, on=["ts", "account_id", "horizon"], suffixes=("", "_fit"))
    assert len(both) > 50
    np.testing.assert_allclose(both["risk"], both["risk_fit"], rtol=1e-9)
    # the warning itself, not its trip through logging's global configuration (which other
    # tests in the same process may have changed: the full suite captured nothing)
    import fleetml.models.risk as risk_module

    warned: list[str] = []
    monkeypatch.setattr(
        risk_module._log, "warning", lambda msg, *a, **k: warned.append(msg % a if a else msg)
    )
    fit.model.predict(ordered, rows=rows[:10])
    assert any("event-history" in w for w in warned)
