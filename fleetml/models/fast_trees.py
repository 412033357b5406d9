"""A fitted binary :class:`~sklearn.ensemble.HistGradientBoostingClassifier` packed into flat
arrays, for scoring a few rows fast.

scikit-learn predicts tree after tree through a Cython call per tree (about 3 ms for one row and
150 trees, with input validation). For the handful of rows an on-demand score has, walking every
tree in lock-step with numpy is ten times faster and gives the same numbers: the same split rule
(NaN follows ``missing_go_to_left``, else ``x <= num_threshold`` goes left), the same leaf
values, the same baseline and link (the logistic function). Larger batches keep using
scikit-learn, whose per-tree loop is then the faster one.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit


class PackedBoosting:
    """The trees of a fitted binary HistGradientBoostingClassifier as flat arrays."""

    #: Below this many rows the lock-step walk beats scikit-learn's per-tree loop.
    max_rows = 256

    def __init__(self, model):
        if getattr(model, "n_trees_per_iteration_", None) != 1:
            raise ValueError("only binary classifiers (one tree per iteration) can be packed")
        trees = [iteration[0] for iteration in model._predictors]
        if any(t.nodes["is_categorical"].any() for t in trees):
            raise ValueError("categorical splits are not supported")
        sizes = np.array([t.nodes.size for t in trees], dtype=np.int64)
        offsets = np.r_[0, np.cumsum(sizes)[:-1]]
        nodes = np.concatenate([t.nodes for t in trees]) if trees else np.zeros(0)
        shift = np.repeat(offsets, sizes)
        self.is_leaf = nodes["is_leaf"].astype(bool)
        self.left = np.where(self.is_leaf, np.arange(nodes.size), nodes["left"] + shift)
        self.right = np.where(self.is_leaf, np.arange(nodes.size), nodes["right"] + shift)
        self.feature = np.where(self.is_leaf, 0, nodes["feature_idx"]).astype(np.int64)
        self.threshold = nodes["num_threshold"].astype(np.float64)
        self.missing_left = nodes["missing_go_to_left"].astype(bool)
        self.value = nodes["value"].astype(np.float64)
        self.roots = offsets.astype(np.int64)
        self.depth = int(nodes["depth"].max()) if nodes.size else 0
        self.baseline = float(np.asarray(model._baseline_prediction).ravel()[0])

    def raw(self, X: np.ndarray) -> np.ndarray:
        """Raw log-odds of each row (``X`` float64, the model's feature columns)."""
        X = np.asarray(X, dtype=np.float64)
        n = X.shape[0]
        nodes = np.broadcast_to(self.roots, (n, self.roots.size)).copy()
        rows = np.arange(n)[:, None]
        for _ in range(self.depth):
            x = X[rows, self.feature[nodes]]
            go_left = np.where(np.isnan(x), self.missing_left[nodes], x <= self.threshold[nodes])
            nodes = np.where(go_left, self.left[nodes], self.right[nodes])
        return self.baseline + self.value[nodes].sum(axis=1)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = expit(self.raw(X))
        return np.column_stack([1.0 - p, p])
