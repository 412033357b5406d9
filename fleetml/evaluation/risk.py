"""Metrics of failure-risk predictions: ranking, thresholded, calibration and lead time.

Pure functions of labels, probabilities and event times; the risk training and backtest call them
per horizon.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from fleetml.evaluation.pointwise import precision_recall_f1


def _clean(y_true, prob) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(prob, dtype=np.float64)
    ok = ~np.isnan(y) & ~np.isnan(p)
    return y[ok].astype(int), p[ok]


def pr_auc(y_true, prob) -> float:
    """Area under the precision-recall curve (average precision); NaN without positives."""
    from sklearn.metrics import average_precision_score

    y, p = _clean(y_true, prob)
    if y.sum() == 0 or len(y) == 0:
        return float("nan")
    return float(average_precision_score(y, p))


def precision_recall_at(y_true, prob, threshold: float) -> dict[str, float]:
    """Precision, recall, F1 and alert rate of ``prob >= threshold``."""
    y, p = _clean(y_true, prob)
    pred = p >= threshold
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    precision, recall, f1 = precision_recall_f1(tp, tp + fp, tp, tp + fn)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "alert_rate": float(pred.mean()) if len(pred) else float("nan"),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


#: When the target precision is out of reach, the fallback threshold must still catch this share.
MIN_FALLBACK_RECALL = 0.05


def threshold_for_precision(y_true, prob, target: float) -> tuple[float, str]:
    """Lowest threshold whose precision reaches ``target`` (highest recall at that precision).

    When no threshold reaches the target, falls back to the most precise threshold that still
    recalls at least 5 % of the positives, with a reason saying so; to 1.0 (alert never) when
    there are no positives.
    """
    from sklearn.metrics import precision_recall_curve

    y, p = _clean(y_true, prob)
    if len(y) == 0 or y.sum() == 0:
        return 1.0, "no positive labels in validation: alerts disabled"
    precision, recall, thresholds = precision_recall_curve(y, p)
    precision, recall = precision[:-1], recall[:-1]  # align with thresholds
    ok = precision >= target
    if ok.any():
        best = np.flatnonzero(ok)
        i = best[np.argmax(recall[best])]
        return float(
            thresholds[i]
        ), f"precision {precision[i]:.3f} >= target {target} on validation"
    # The target cannot be met. Flagging whatever maximises F1 can flag most of the fleet when a
    # calibrated model is flat (isotonic plateaus), and at_risk drives pre-emptive failover, so
    # be conservative: the most precise threshold that still catches some faults.
    useful = recall >= MIN_FALLBACK_RECALL
    candidates = np.flatnonzero(useful) if useful.any() else np.arange(len(precision))
    best = candidates[precision[candidates] == precision[candidates].max()]
    i = int(best[np.argmax(recall[best])])
    return (
        float(thresholds[i]),
        f"target precision {target} unreachable on validation (max {precision.max():.3f}); "
        f"most precise threshold with recall >= {MIN_FALLBACK_RECALL} used "
        f"(precision {precision[i]:.3f}, recall {recall[i]:.3f})",
    )


def recall_at_precision(y_true, prob, target: float) -> float:
    """Best recall among thresholds whose precision is at least ``target`` (0 when none)."""
    from sklearn.metrics import precision_recall_curve

    y, p = _clean(y_true, prob)
    if len(y) == 0 or y.sum() == 0:
        return float("nan")
    precision, recall, _ = precision_recall_curve(y, p)
    ok = precision >= target
    return float(recall[ok].max()) if ok.any() else 0.0


def brier(y_true, prob) -> float:
    """Mean squared error of the probabilities."""
    y, p = _clean(y_true, prob)
    return float(np.mean((p - y) ** 2)) if len(y) else float("nan")


def reliability_table(y_true, prob, *, bins: int = 10) -> pd.DataFrame:
    """Equal-width probability bins: count, mean predicted probability, observed frequency."""
    y, p = _clean(y_true, prob)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    sum_p = np.bincount(which, weights=p, minlength=bins)
    sum_y = np.bincount(which, weights=y, minlength=bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.DataFrame(
            {
                "bin_low": edges[:-1],
                "bin_high": edges[1:],
                "count": count,
                "mean_predicted": np.where(count > 0, sum_p / count, np.nan),
                "observed_rate": np.where(count > 0, sum_y / count, np.nan),
            }
        )


def expected_calibration_error(y_true, prob, *, bins: int = 10) -> float:
    """ECE: count-weighted mean of |observed rate - mean predicted| over equal-width bins."""
    table = reliability_table(y_true, prob, bins=bins)
    used = table[table["count"] > 0]
    if not len(used):
        return float("nan")
    gap = (used["observed_rate"] - used["mean_predicted"]).abs()
    return float((gap * used["count"]).sum() / used["count"].sum())


def lead_times(
    alerts: pd.DataFrame, faults: pd.DataFrame, horizon: str | pd.Timedelta
) -> pd.DataFrame:
    """For each fault: the earliest alert of its account in ``[fault - horizon, fault)``.

    ``alerts``: ``ts``, ``account_id`` of rows predicted at risk; ``faults``: ``ts``,
    ``account_id``. Returns the faults with ``caught`` and ``lead_time_s`` (NaN when missed).
    """
    horizon = pd.Timedelta(horizon)
    out = faults[["ts", "account_id"]].copy().reset_index(drop=True)
    out["caught"] = False
    out["lead_time_s"] = np.nan
    if not len(out) or not len(alerts):
        return out
    a_ts = pd.DatetimeIndex(alerts["ts"]).as_unit("ms").asi8
    a_acc = alerts["account_id"].astype(str).to_numpy()
    f_ts = pd.DatetimeIndex(out["ts"]).as_unit("ms").asi8
    f_acc = out["account_id"].astype(str).to_numpy()
    accounts = np.union1d(a_acc, f_acc)
    a_code, f_code = np.searchsorted(accounts, a_acc), np.searchsorted(accounts, f_acc)
    stride = np.int64(1) << 42  # ms: accounts laid end to end never overlap
    a_key = np.sort(a_code.astype(np.int64) * stride + (a_ts - a_ts.min()))
    f_key = f_code.astype(np.int64) * stride + (f_ts - a_ts.min())
    h_ms = int(horizon / pd.Timedelta(milliseconds=1))
    first = np.searchsorted(a_key, f_key - h_ms, side="left")
    safe = np.clip(first, 0, len(a_key) - 1)
    caught = (first < len(a_key)) & (a_key[safe] < f_key)
    out["caught"] = caught
    out["lead_time_s"] = np.where(caught, (f_key - a_key[safe]) / 1000.0, np.nan)
    return out


def lead_time_summary(leads: pd.DataFrame) -> dict[str, float]:
    """Fault-wise recall and lead-time statistics from :func:`lead_times`."""
    n = len(leads)
    caught = leads["lead_time_s"].dropna() if n else pd.Series(dtype=float)
    return {
        "faults": n,
        "faults_caught": int(len(caught)),
        "fault_recall": len(caught) / n if n else float("nan"),
        "median_lead_time_s": float(caught.median()) if len(caught) else float("nan"),
        "mean_lead_time_s": float(caught.mean()) if len(caught) else float("nan"),
    }


def horizon_metrics(
    y_true,
    prob,
    *,
    threshold: float,
    target_precision: float,
    bins: int = 10,
) -> dict[str, float]:
    """Every row-wise metric of one horizon: PR-AUC, recall at the target precision, precision /
    recall / F1 at the stored threshold, Brier score, ECE, positives and rows."""
    y, p = _clean(y_true, prob)
    at = precision_recall_at(y, p, threshold)
    return {
        "rows": int(len(y)),
        "positives": int(y.sum()),
        "pr_auc": pr_auc(y, p),
        "recall_at_target_precision": recall_at_precision(y, p, target_precision),
        "precision": at["precision"],
        "recall": at["recall"],
        "f1": at["f1"],
        "alert_rate": at["alert_rate"],
        "brier": brier(y, p),
        "ece": expected_calibration_error(y, p, bins=bins),
    }


def flatten(metrics: dict[str, dict[str, float]], keys: Iterable[str] | None = None) -> dict:
    """``{"6h": {"pr_auc": x}}`` -> ``{"6h_pr_auc": x}`` (MLflow metric names)."""
    out = {}
    for horizon, values in metrics.items():
        for k, v in values.items():
            if keys is None or k in keys:
                out[f"{horizon}_{k}"] = v
    return out


def pr_curve(y_true, prob, *, max_points: int = 200) -> dict[str, list[float]]:
    """The precision-recall curve, thinned to at most ``max_points`` points (for charts).

    ``precision[i]`` and ``recall[i]`` are what flagging ``prob >= thresholds[i]`` gives; empty
    lists when there are no positives.
    """
    from sklearn.metrics import precision_recall_curve

    y, p = _clean(y_true, prob)
    if len(y) == 0 or y.sum() == 0:
        return {"precision": [], "recall": [], "thresholds": []}
    precision, recall, thresholds = precision_recall_curve(y, p)
    precision, recall = precision[:-1], recall[:-1]  # aligned with thresholds
    keep = np.unique(
        np.linspace(0, len(thresholds) - 1, min(max_points, len(thresholds))).astype(int)
    )
    return {
        "precision": [round(float(x), 5) for x in precision[keep]],
        "recall": [round(float(x), 5) for x in recall[keep]],
        "thresholds": [round(float(x), 6) for x in thresholds[keep]],
    }
