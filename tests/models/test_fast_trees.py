"""The packed boosting trees give scikit-learn's probabilities, missing values included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from fleetml.models.fast_trees import PackedBoosting


@pytest.mark.parametrize("seed", [0, 1])
def test_packed_trees_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(3000, 8))
    X[rng.random(X.shape) < 0.15] = np.nan  # NaN rows follow missing_go_to_left
    y = ((np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 3]) * X[:, 1].clip(0)) > 0.3).astype(int)
    model = HistGradientBoostingClassifier(max_iter=60, max_leaf_nodes=15, random_state=0)
    model.fit(X[:2000], y[:2000])
    packed = PackedBoosting(model)
    got = packed.predict_proba(X[2000:])
    want = model.predict_proba(X[2000:])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert (got[:, 1] > 0.5).any() and (got[:, 1] < 0.5).any()


def test_multiclass_is_refused():
    X = np.random.default_rng(0).normal(size=(300, 3))
    y = np.arange(300) % 3
    with pytest.raises(ValueError, match="binary"):
        PackedBoosting(HistGradientBoostingClassifier(max_iter=5).fit(X, y))
