"""The NAB score: reward shape, penalties, probation, normalisation and the threshold sweep."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fleetml.evaluation.nab import (
    NabSeries,
    corpus_score,
    normalise,
    optimise_threshold,
    probation_rows,
    scaled_sigmoid,
    window_rows,
)


def test_scaled_sigmoid_matches_nab():
    assert scaled_sigmoid(-1.0) == pytest.approx(2 / (1 + np.exp(-5)) - 1)
    assert scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert scaled_sigmoid(3.5) == -1.0


def test_probation_is_15_percent_capped_at_750():
    assert probation_rows(1000) == 150
    assert probation_rows(10000) == 750


@pytest.fixture
def series():
    # 1000 rows, probation 150, two windows of width 100
    return NabSeries(n=1000, windows=[(400, 499), (700, 799)])


def det(n, rows):
    mask = np.zeros(n, dtype=bool)
    mask[list(rows)] = True
    return mask


def test_perfect_null_and_early_vs_late(series):
    assert series.score(det(1000, []))[0] == pytest.approx(-2.0)
    perfect, tp, fp, fn = series.score(det(1000, [400, 700]))
    assert perfect == pytest.approx(2.0) and (tp, fp, fn) == (2, 0, 0)
    late = series.score(det(1000, [499, 700]))[0]
    assert -0.1 < late - 1.0 < 0.05  # the last row of a window earns almost nothing
    # later detections in an already detected window change nothing
    assert series.score(det(1000, [400, 420, 450, 700]))[0] == pytest.approx(2.0)


def test_false_positives_cost_fp_weight_far_from_windows_and_less_right_after(series):
    null = series.score(det(1000, []))[0]
    before_first = series.score(det(1000, [200]))[0] - null
    right_after = series.score(det(1000, [505]))[0] - null
    far_after = series.score(det(1000, [900]))[0] - null  # 101 rows after a width-100 window
    assert before_first == pytest.approx(-0.11)
    assert -0.11 < right_after < 0
    assert far_after == pytest.approx(0.11 * scaled_sigmoid((900 - 799) / 99))


def test_probationary_detections_are_ignored(series):
    assert series.score(det(1000, [10, 100]))[0] == pytest.approx(-2.0)


def test_normalisation_and_threshold_optimisation(series):
    assert normalise(-2.0, 2) == 0.0 and normalise(2.0, 2) == 100.0
    scores = np.zeros(1000)
    scores[[400, 700]] = 0.9  # ideal detections
    scores[[300]] = 0.95  # a stronger false alarm
    best = optimise_threshold([series], [scores])
    assert best["tp"] == 2 and best["fp"] == 1
    assert best["score"] == pytest.approx(100 * (2 - 0.11 + 2) / 4)
    assert corpus_score([series], [scores], 0.96)["score"] == 0.0


def test_window_rows_from_timestamps():
    ts = pd.date_range("2026-01-01", periods=10, freq="h", tz="UTC")
    rows = window_rows(ts, [("2026-01-01 02:00:00", "2026-01-01 04:30:00")])
    assert rows == [(2, 4)]
