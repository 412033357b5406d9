"""Prediction intervals calibrated by split conformal prediction on rolling-origin residuals.

Each method states normal intervals from its own error variance. Those widths are then
corrected per level: at every validation origin (cut from the end of the training history, see
:class:`~fleetml.models.forecasting.selection.LoadForecaster`) the chosen model forecasts the
next window, and each actual value gets a *nonconformity score*: its error divided by the
model's own half-width at that level on the error's side (below or above the forecast). The
level's factor is the finite-sample conformal quantile of the pooled scores,
``ceil((n + 1) level / 100)``-th smallest of ``n``; the refitted model's intervals are widened or
narrowed by it. Scores are normalised by the model's width, which already grows with the step
ahead, so one factor serves every step of the horizon (a few origins cannot give a quantile per
step).
"""

from __future__ import annotations

import math

import numpy as np

#: Bounds of a conformal widening factor (guards against a degenerate validation window).
MIN_INTERVAL_SCALE, MAX_INTERVAL_SCALE = 0.25, 10.0


def nonconformity(actual, forecast: dict, level) -> np.ndarray:
    """Errors of ``forecast`` (``yhat`` and the ``level`` bounds) in units of its half-width.

    A score at most one means the value fell inside the stated interval. Non-finite actual
    values are skipped.
    """
    y = np.asarray(actual, dtype="float64")
    yhat = np.asarray(forecast["yhat"], dtype="float64")
    below = yhat - np.asarray(forecast[f"yhat_lower_{level}"], dtype="float64")
    above = np.asarray(forecast[f"yhat_upper_{level}"], dtype="float64") - yhat
    err = y - yhat
    width = np.where(err < 0, below, above)
    ok = np.isfinite(err) & np.isfinite(width)
    err, width = np.abs(err[ok]), width[ok]
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(width > 0, err / np.where(width > 0, width, 1.0), np.inf)
    return np.where(err == 0, 0.0, score)


def conformal_factor(scores, level) -> float:
    """The split-conformal quantile of ``scores`` at ``level`` % (1.0 without scores), bounded
    to [MIN_INTERVAL_SCALE, MAX_INTERVAL_SCALE]."""
    s = np.sort(np.asarray(scores, dtype="float64"))
    n = s.size
    if n == 0:
        return 1.0
    k = min(n, math.ceil((n + 1) * float(level) / 100))
    q = float(s[k - 1])
    if not math.isfinite(q):
        return MAX_INTERVAL_SCALE
    return max(MIN_INTERVAL_SCALE, min(q, MAX_INTERVAL_SCALE))


def conformal_scales(windows, levels) -> dict[int, float]:
    """Per-level widening factors from validation windows.

    ``windows`` is a sequence of ``(actual, forecast)`` pairs, one per origin, each forecast a
    dict of arrays as returned by a fitted method's ``predict(horizon, levels)`` at scale one.
    """
    out = {}
    for level in levels:
        pooled = [nonconformity(actual, fc, level) for actual, fc in windows]
        scores = np.concatenate(pooled) if pooled else np.empty(0)
        out[level] = conformal_factor(scores, level)
    return out
