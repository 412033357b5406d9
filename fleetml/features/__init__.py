"""Causal, vectorised features shared by training and scoring.

``build_features`` turns the canonical wide metrics frame into per-row features; models store the
:class:`FeatureConfig` they were trained with so scoring rebuilds exactly the same columns.
"""

from fleetml.features.builder import (
    build_features,
    feature_columns,
    latest_features,
    metric_columns,
    metric_of_feature,
    planned_columns,
)
from fleetml.features.config import DEFAULT_RATIOS, FeatureConfig

__all__ = [
    "DEFAULT_RATIOS",
    "FeatureConfig",
    "build_features",
    "feature_columns",
    "latest_features",
    "metric_columns",
    "metric_of_feature",
    "planned_columns",
]
