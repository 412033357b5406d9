"""Event-wise precision, recall, F1 and lead time; point-wise AUCs; walk-forward segments."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fleetml.evaluation.backtest import walk_forward_segments, warmup_rows
from fleetml.evaluation.events import alert_onsets, event_metrics, label_rows
from fleetml.evaluation.pointwise import pointwise_metrics


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


@pytest.fixture
def windows():
    return pd.DataFrame(
        {
            "account_id": ["a", "a", "b"],
            "start": [ts("2026-01-01 10:00"), ts("2026-01-02 10:00"), ts("2026-01-01 12:00")],
            "end": [ts("2026-01-01 11:00"), ts("2026-01-02 11:00"), ts("2026-01-01 13:00")],
        }
    )


def test_precision_recall_f1_and_lead_time(windows):
    alerts = pd.DataFrame(
        {
            "account_id": ["a", "a", "b", "b"],
            "ts": [
                ts("2026-01-01 10:30"),  # inside a's first window, 30 min late
                ts("2026-01-01 20:00"),  # false alarm
                ts("2026-01-01 12:30"),  # inside b's window (same time on a would not count)
                ts("2026-01-02 10:15"),  # b has no window then: false alarm
            ],
        }
    )
    m = event_metrics(alerts, windows)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert m["median_lead_time_s"] == pytest.approx(-1800.0)


def test_early_tolerance_counts_alerts_before_the_incident_as_positive_lead(windows):
    alerts = pd.DataFrame({"account_id": ["a"], "ts": [ts("2026-01-01 09:40")]})
    assert event_metrics(alerts, windows)["recall"] == 0.0
    m = event_metrics(alerts, windows, early="30min")
    assert m["n_detected"] == 1 and m["median_lead_time_s"] == pytest.approx(1200.0)


def test_no_alerts_gives_nan_precision_and_zero_recall(windows):
    m = event_metrics(pd.DataFrame({"account_id": [], "ts": []}), windows)
    assert math.isnan(m["precision"]) and m["recall"] == 0.0 and m["f1"] == 0.0


def test_alert_onsets_one_per_episode_per_account():
    frame = pd.DataFrame(
        {
            "ts": pd.date_range("2026-01-01", periods=6, freq="5min", tz="UTC").tolist() * 2,
            "account_id": ["a"] * 6 + ["b"] * 6,
            "is_anomaly": [0, 1, 1, 0, 1, 1] + [1, 1, 0, 0, 0, 0],
        }
    )
    onsets = alert_onsets(frame.astype({"is_anomaly": bool}))
    assert onsets["account_id"].tolist() == ["a", "a", "b"]
    assert onsets["ts"].dt.minute.tolist() == [5, 20, 0]


def test_label_rows_marks_rows_inside_the_accounts_windows(windows):
    frame = pd.DataFrame(
        {
            "ts": [ts("2026-01-01 10:30"), ts("2026-01-01 10:30"), ts("2026-01-01 12:00")],
            "account_id": ["a", "b", "b"],
        }
    )
    assert label_rows(frame, windows).tolist() == [True, False, True]
    fleet_wide = windows.drop(columns="account_id").iloc[[0]]
    assert label_rows(frame.iloc[::-1], fleet_wide).tolist() == [False, True, True]


def test_pointwise_aucs():
    labels = np.array([0, 0, 0, 1, 1])
    assert pointwise_metrics(labels, [0.1, 0.2, 0.3, 0.8, 0.9]) == pytest.approx(
        {"pr_auc": 1.0, "roc_auc": 1.0, "prevalence": 0.4}
    )
    worst = pointwise_metrics(labels, [0.9, 0.8, 0.7, 0.1, 0.2])
    assert worst["roc_auc"] == 0.0
    assert math.isnan(pointwise_metrics([0, 0], [0.1, 0.2])["roc_auc"])


def test_walk_forward_segments_never_fit_on_what_they_score():
    assert warmup_rows(4000, warmup=0.15, warmup_max=750) == 600
    assert warmup_rows(10000, warmup=0.15, warmup_max=750) == 750
    segs = walk_forward_segments(1000, warmup=0.15, refit_every=300)
    assert [(s.fit_end, s.start, s.stop) for s in segs] == [
        (150, 150, 450),
        (450, 450, 750),
        (750, 750, 1000),
    ]
    assert all(s.fit_end <= s.start for s in segs)
