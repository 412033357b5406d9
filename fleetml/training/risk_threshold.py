"""The decision threshold of one horizon, chosen on validation rows only."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fleetml.evaluation.risk import precision_recall_at, threshold_for_precision
from fleetml.training.sanity import account_days, budget_threshold, onsets_by_threshold


@dataclass
class ThresholdChoice:
    """A horizon's decision threshold, the rule that set it and what it gave on validation."""

    threshold: float
    #: ``target precision``, ``alert budget`` or ``disabled`` (alerts off: no positive
    #: validation rows, no threshold within the budget, or alerts no better than chance).
    rule: str
    reason: str
    val_alerts_per_account_day: float = math.nan
    val_precision: float = math.nan
    val_recall: float = math.nan

    def metrics(self) -> dict[str, float]:
        """The numeric part, for the horizon's metrics (``val_`` prefixed)."""
        return {
            "val_alerts_per_account_day": self.val_alerts_per_account_day,
            "val_precision": self.val_precision,
            "val_recall": self.val_recall,
        }


def choose_threshold(
    y_val: np.ndarray,
    val_risk: np.ndarray,
    val_ids: pd.DataFrame | None,
    *,
    target_precision: float,
    alert_budget: float | None,
) -> ThresholdChoice:
    """The decision threshold of one horizon, from validation rows only.

    The threshold reaching ``target_precision`` on validation, when there is one and it raises
    at most ``alert_budget`` at-risk onsets per account-day there. Otherwise the *budget
    threshold*: the lowest threshold at which, and at every threshold above which, validation
    onsets stay within the budget. Onsets are not monotone in the threshold (a lower one can
    merge episodes), and the run above guards against a dip where flickering alerts happen to
    merge, and against flagging every row (one long episode per account) on a long validation
    period. The budget threshold then moves up to the lowest one whose validation precision
    beats the validation positive rate (alerts better than rows picked at random), or alerts
    are off when none does. Onsets and account-days are counted as the sanity check counts
    them on the held-out period (:func:`fleetml.training.sanity.budget_threshold`). When
    ``val_ids`` (``ts`` and ``account_id`` of the validation rows) or ``alert_budget`` is
    ``None``: target precision only.
    """
    y = np.asarray(y_val, dtype=np.float64)
    p = np.asarray(val_risk, dtype=np.float64)
    prec_thr, prec_reason = threshold_for_precision(y, p, target_precision)
    at = precision_recall_at(y, p, prec_thr)
    reachable = math.isfinite(at["precision"]) and at["precision"] >= target_precision
    if val_ids is None or alert_budget is None or len(val_ids) != len(p):
        return _threshold_choice(
            prec_thr, "target precision", prec_reason + "; alert volume not bounded", y, p, None
        )
    scored = pd.DataFrame(
        {"ts": val_ids["ts"].to_numpy(), "account_id": val_ids["account_id"].to_numpy()}
    ).assign(risk=p)
    days = account_days(scored)
    if days <= 0:
        return _threshold_choice(
            prec_thr, "target precision", prec_reason + "; alert volume not measurable", y, p, None
        )
    within = f"within {alert_budget:g} at-risk onsets per account-day"
    prec_rate = float(onsets_by_threshold(scored, np.array([prec_thr]))[0]) / days
    if reachable and prec_rate <= alert_budget:
        return _threshold_choice(prec_thr, "target precision", prec_reason, y, p, scored)
    budget_thr, _ = budget_threshold(scored, budget=alert_budget)
    if reachable:
        reason = (
            f"precision {target_precision} reached on validation at {prec_thr:.4g} but with "
            f"{prec_rate:.2f} at-risk onsets per account-day; raised to the lowest threshold "
            f"keeping validation {within}"
        )
    else:
        reason = (
            f"target precision {target_precision} unreachable on validation; lowest threshold "
            f"keeping validation {within}"
        )
    if budget_thr > p.max():
        reason += ", which is above every validation risk: alerts off until retrained"
        return _threshold_choice(budget_thr, "disabled", reason, y, p, scored)
    # A threshold whose alerts are no more precise than rows picked at random (flagging every
    # row, one long episode per account, is the extreme) carries no warning: move up to the
    # lowest one that beats the positive rate, still within the budget, or turn alerts off.
    base_rate = float(np.nanmean(y))
    values = np.unique(p[np.isfinite(p) & (p >= budget_thr)])
    better = np.flatnonzero(_precision_by_threshold(y, p, values) > base_rate)
    if not len(better):
        off = float(np.nextafter(p.max(), np.inf))
        reason += (
            f" ({budget_thr:.4g}) and every threshold above it flag rows no more precisely than "
            f"chance (validation positive rate {base_rate:.3f}): alerts off until retrained"
        )
        return _threshold_choice(off, "disabled", reason, y, p, scored)
    if values[better[0]] > budget_thr:
        reason += (
            f", moved up from {budget_thr:.4g} to the lowest one flagging rows more precisely "
            f"than chance (validation positive rate {base_rate:.3f})"
        )
    return _threshold_choice(float(values[better[0]]), "alert budget", reason, y, p, scored)


def _precision_by_threshold(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Precision of ``p >= t`` for every ``t`` (NaN when nothing is flagged); NaN rows ignored."""
    ok = ~np.isnan(y) & ~np.isnan(p)
    order = np.argsort(p[ok], kind="stable")
    ps, ys = p[ok][order], y[ok][order]
    tp_above = np.r_[np.cumsum(ys[::-1])[::-1], 0.0]  # positives among rows i.. of ps
    first = np.searchsorted(ps, thresholds, side="left")
    flagged = len(ps) - first
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(flagged > 0, tp_above[first] / np.maximum(flagged, 1), np.nan)


def _threshold_choice(threshold, rule, reason, y, p, scored) -> ThresholdChoice:
    at = precision_recall_at(y, p, threshold)
    rate = math.nan
    if scored is not None:
        days = account_days(scored)
        if days > 0:
            rate = float(onsets_by_threshold(scored, np.array([threshold]))[0]) / days
    measured = f"{rate:.2f} at-risk onsets per account-day" if math.isfinite(rate) else ""
    pr = f"precision {at['precision']:.3f}, recall {at['recall']:.3f}"
    reason = f"{reason} (validation: {', '.join(x for x in (measured, pr) if x)})"
    return ThresholdChoice(float(threshold), rule, reason, rate, at["precision"], at["recall"])
