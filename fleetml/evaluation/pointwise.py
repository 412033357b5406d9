"""Point-wise metrics: the one precision/recall/F1, and ranking metrics PR-AUC and ROC-AUC.

:func:`precision_recall_f1` is the single implementation of precision, recall and F1 in fleetml
(event-wise matching in :mod:`fleetml.evaluation.events` calls it with its own counts): precision
is NaN with nothing predicted, recall NaN with nothing to find, and F1 is 0 when either side
exists but they do not meet, NaN only when both are empty.


PR-AUC is average precision, ``sum_k (R_k - R_{k-1}) P_k`` over score thresholds; ROC-AUC is the
probability that a random anomalous row scores above a random normal one. Both ignore the time
structure (use :mod:`fleetml.evaluation.events` and :mod:`fleetml.evaluation.nab` for that) and
are NaN when the labels hold a single class.
"""

from __future__ import annotations

import numpy as np


def precision_recall_f1(
    true_predictions: int, n_predictions: int, found: int, n_true: int
) -> tuple[float, float, float]:
    """``(precision, recall, f1)`` from counts.

    ``true_predictions`` of ``n_predictions`` predictions were right; ``found`` of ``n_true``
    true items were found. Row-wise both numerators are the true positives; event-wise they
    differ (alerts inside a window vs windows with an alert), hence four counts.
    """
    precision = true_predictions / n_predictions if n_predictions else float("nan")
    recall = found / n_true if n_true else float("nan")
    if np.isfinite(precision) and np.isfinite(recall) and precision + recall > 0:
        return precision, recall, 2 * precision * recall / (precision + recall)
    return precision, recall, 0.0 if n_predictions or n_true else float("nan")


def pointwise_metrics(labels, scores) -> dict[str, float]:
    """``pr_auc``, ``roc_auc`` and the positive ``prevalence`` (rows with NaN scores dropped)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    keep = np.isfinite(scores)
    labels, scores = labels[keep], scores[keep]
    prevalence = float(labels.mean()) if labels.size else float("nan")
    if labels.size == 0 or labels.all() or not labels.any():
        return {"pr_auc": float("nan"), "roc_auc": float("nan"), "prevalence": prevalence}
    return {
        "pr_auc": float(average_precision_score(labels, scores)),
        "roc_auc": float(roc_auc_score(labels, scores)),
        "prevalence": prevalence,
    }
