"""Point-wise ranking metrics of an anomaly score against row labels: PR-AUC and ROC-AUC.

PR-AUC is average precision, ``sum_k (R_k - R_{k-1}) P_k`` over score thresholds; ROC-AUC is the
probability that a random anomalous row scores above a random normal one. Both ignore the time
structure (use :mod:`fleetml.evaluation.events` and :mod:`fleetml.evaluation.nab` for that) and
are NaN when the labels hold a single class.
"""

from __future__ import annotations

import numpy as np


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
