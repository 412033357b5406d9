"""Sanity checks a version must pass before it may serve, whatever its promotion gate says.

The promotion gate compares a challenger with a baseline and the champion; the sanity check asks
whether the model is usable at all. It matters most for a first version: with no champion to beat,
a model that alerts on most rows would otherwise become champion. Each check is a pure function
returning ``(passed, reason)``; :func:`fleetml.training.registry.apply_promotion_rule` combines it
with the gate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from fleetml.evaluation.events import alert_onsets

#: Default limit of alert onsets per account-day on the held-out period (anomaly and risk).
MAX_ALERTS_PER_ACCOUNT_DAY = 1.0


def account_days(scored: pd.DataFrame) -> float:
    """Sum over accounts of the time each spans in ``scored`` (``ts``, ``account_id``), in days."""
    if not len(scored):
        return 0.0
    span = scored.groupby("account_id")["ts"].agg(["min", "max"])
    return float(((span["max"] - span["min"]).dt.total_seconds() / 86400.0).sum())


def alerts_per_account_day(scored: pd.DataFrame, *, flag: str = "is_anomaly") -> float:
    """Alert onsets (first row of each run of flagged rows of an account) per account-day."""
    days = account_days(scored)
    if days <= 0:
        return float("nan")
    return len(alert_onsets(scored, flag=flag)) / days


def onsets_by_threshold(
    scored: pd.DataFrame, thresholds: np.ndarray, *, score: str = "risk"
) -> np.ndarray:
    """Alert onsets when the rows with ``score >= t`` are flagged, for every ``t`` of
    ``thresholds`` at once.

    Onsets are counted exactly as :func:`alerts_per_account_day` counts them (the first flagged
    row of each run of flagged rows of an account, rows ordered by account and time): row ``i``
    starts an episode at ``t`` when ``prev_i < t <= score_i``, where ``prev_i`` is the score of the
    account's previous row (``-inf`` for its first row). So the count at ``t`` is
    ``#{score >= t} - #{min(score, prev) >= t}``, two binary searches per threshold. A missing
    score is never flagged.
    """
    data = scored[["account_id", "ts", score]].sort_values(["account_id", "ts"], kind="stable")
    values = data[score].to_numpy(dtype=np.float64)
    values = np.where(np.isnan(values), -np.inf, values)
    acc = data["account_id"].astype(str).to_numpy()
    prev = np.r_[-np.inf, values[:-1]] if len(values) else values
    if len(acc):
        prev[np.r_[True, acc[1:] != acc[:-1]]] = -np.inf
    t = np.asarray(thresholds, dtype=np.float64)
    flagged = len(values) - np.searchsorted(np.sort(values), t, side="left")
    stay = len(values) - np.searchsorted(np.sort(np.minimum(values, prev)), t, side="left")
    return (flagged - stay).astype(np.int64)


def budget_threshold(
    scored: pd.DataFrame, *, budget: float, score: str = "risk"
) -> tuple[float, float]:
    """The lowest threshold at which, and at every higher threshold, ``score >= threshold``
    raises at most ``budget`` alert onsets per account-day on ``scored``; and its rate.

    Onsets are not monotone in the threshold (a lower one can merge episodes), so the threshold
    is the bottom of the highest run of thresholds that all stay within the budget: raising it
    never makes the alert volume exceed the budget. When even the highest score alone exceeds
    it, the threshold is just above the highest score (nothing on ``scored`` is flagged).
    Returns ``(nan, nan)`` when ``scored`` spans no time.
    """
    days = account_days(scored)
    values = scored[score].to_numpy(dtype=np.float64)
    values = np.unique(values[np.isfinite(values)])
    if days <= 0 or not len(values):
        return float("nan"), float("nan")
    rates = onsets_by_threshold(scored, values, score=score) / days
    over = np.flatnonzero(rates > budget)
    if not len(over):
        return float(values[0]), float(rates[0])
    if over[-1] + 1 < len(values):
        k = over[-1] + 1
        return float(values[k]), float(rates[k])
    return float(np.nextafter(values[-1], np.inf)), 0.0


def anomaly_sanity(
    metrics: Mapping[str, float], *, max_alerts_per_account_day: float = MAX_ALERTS_PER_ACCOUNT_DAY
) -> tuple[bool, str]:
    """An anomaly model may serve when it raises at most ``max_alerts_per_account_day`` alert
    onsets per account-day on the held-out period."""
    rate = metrics.get("alerts_per_account_day", float("nan"))
    share = metrics.get("alert_rate", float("nan"))
    if not math.isfinite(rate):
        return False, "no held-out period to measure the alert volume on"
    if rate > max_alerts_per_account_day:
        return False, (
            f"{rate:.2f} alert onsets per account-day on the held-out period "
            f"({100 * share:.1f} % of rows flagged; limit {max_alerts_per_account_day:g})"
        )
    return True, f"{rate:.2f} alert onsets per account-day (limit {max_alerts_per_account_day:g})"


def risk_sanity(
    metrics: Mapping[str, Mapping[str, float]],
    positives: Mapping[str, Mapping[str, int]],
    *,
    min_positives: int = 1,
    max_alerts_per_account_day: float = MAX_ALERTS_PER_ACCOUNT_DAY,
) -> tuple[bool, str]:
    """A risk model may serve when every horizon it holds had at least ``min_positives`` positive
    training rows and some positive validation rows, and raises at most
    ``max_alerts_per_account_day`` at-risk onsets per account-day on the held-out period."""
    problems = []
    for h, m in metrics.items():
        counts = positives.get(h, {})
        if counts.get("train", 0) < min_positives:
            problems.append(f"{h}: {counts.get('train', 0)} positive training rows")
        if counts.get("val", 0) == 0:
            problems.append(f"{h}: no positive validation rows (threshold not calibrated)")
        rate = m.get("alerts_per_account_day", float("nan"))
        if math.isfinite(rate) and rate > max_alerts_per_account_day:
            problems.append(
                f"{h}: {rate:.2f} at-risk onsets per account-day on the held-out period "
                f"(limit {max_alerts_per_account_day:g})"
            )
    if not metrics:
        problems.append("no horizon was trained")
    if problems:
        return False, "; ".join(problems)
    return True, "every horizon has positive rows and a sane alert volume"


def forecast_sanity(
    evaluation: Mapping[str, float], naive: Mapping[str, float], *, tolerance: float = 1e-9
) -> tuple[bool, str]:
    """A forecast version may serve when its mean held-out MASE beats or ties the seasonal-naive
    forecast's on the same series and periods."""
    ours = evaluation.get("mase", float("nan"))
    theirs = naive.get("mase", float("nan"))
    if not math.isfinite(ours):
        return False, "no series could be scored on its held-out end"
    if not math.isfinite(theirs):
        return True, f"mean MASE {ours:.3f}; seasonal naive could not be scored"
    if ours > theirs * (1 + tolerance) + tolerance:
        return False, f"mean MASE {ours:.3f} worse than seasonal naive's {theirs:.3f}"
    return True, f"mean MASE {ours:.3f} vs seasonal naive's {theirs:.3f}"
