"""Causal, vectorised features shared by training and scoring.

``build_features`` turns the canonical wide metrics frame into per-row features; models store the
:class:`FeatureConfig` they were trained with so scoring rebuilds exactly the same columns.
"""

from fleetml.features.builder import (
    build_feature_matrix,
    build_features,
    feature_columns,
    latest_features,
    metric_columns,
    metric_of_feature,
    planned_columns,
)
from fleetml.features.config import DEFAULT_RATIOS, RISK_FEATURES, FeatureConfig
from fleetml.features.history import history_columns, history_lookback_ms, history_matrix
from fleetml.features.latest import FeatureState, LatestMatrix, latest_matrix

__all__ = [
    "DEFAULT_RATIOS",
    "RISK_FEATURES",
    "FeatureConfig",
    "FeatureState",
    "LatestMatrix",
    "build_feature_matrix",
    "build_features",
    "feature_columns",
    "history_columns",
    "history_lookback_ms",
    "history_matrix",
    "latest_features",
    "latest_matrix",
    "metric_columns",
    "metric_of_feature",
    "planned_columns",
]
