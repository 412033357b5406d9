"""Anomaly detection in three visible steps (as Merlion separates them), and the served bundle.

1. the detector (:mod:`fleetml.models.anomaly_forest`): per-account normalisation and an
   isolation forest give a *raw* score;
2. the calibrator (:mod:`fleetml.models.anomaly_calibration`): an anomaly likelihood turns raw
   scores into a score in [0, 1) comparable across accounts and versions, that ranks rows across
   its whole range;
3. the alert rule (:mod:`fleetml.models.anomaly_rule`): threshold, minimum duration and
   suppression turn calibrated scores into ``is_anomaly``;
4. habituation (:mod:`fleetml.models.anomaly_habituation`, optional): the reported
   ``anomaly_score`` is the calibrated score, halved on rows that are no more anomalous than the
   account has looked lately (a decaying maximum) and kept at 0.55 on rows above it by less
   than a 5 % margin, so it ranks new incidents above lasting plateaus and slow ramps. The rule
   keeps running on the calibrated score.

:class:`AnomalyModel` bundles feature building, detector (with its fitted calibrator) and rule;
it is what MLflow stores and what serving runs. This module keeps every public name importable
from ``fleetml.models.anomaly``, so bundles pickled before the split still load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, validate_data

from fleetml.models.anomaly_calibration import (
    ScoreCalibrator,
    rolling_mean_by_group,
    score_of_log10_tail,
)
from fleetml.models.anomaly_forest import (
    CALIBRATIONS,
    MAX_FIT_ROWS,
    MAX_LIKELIHOOD_ROWS,
    MAX_STATS_ROWS,
    Z_CLIP,
    IsolationForestDetector,
    PackedForest,
    metric_of,
)
from fleetml.models.anomaly_habituation import ScoreHabituation
from fleetml.models.anomaly_rule import AlertRule, _runs

__all__ = [
    "CALIBRATIONS",
    "MAX_FIT_ROWS",
    "MAX_LIKELIHOOD_ROWS",
    "MAX_STATS_ROWS",
    "Z_CLIP",
    "AlertRule",
    "AnomalyModel",
    "IsolationForestDetector",
    "PackedForest",
    "RobustZBaseline",
    "ScoreCalibrator",
    "ScoreHabituation",
    "_runs",
    "metric_of",
    "rolling_mean_by_group",
    "score_of_log10_tail",
]


@dataclass
class AnomalyModel:
    """Everything serving needs, in one picklable object: features, detector, rule, feature list.

    ``predict(frame)`` takes the canonical wide metrics frame (``ts``, ``account_id``, one column
    per metric) and returns ``ts, account_id, anomaly_score, calibrated_score, is_anomaly,
    top_metrics`` (``calibrated_score``: what the rule thresholds; ``anomaly_score`` is it
    habituated). It is the
    bundle logged to MLflow, so ``fleetml score``, the API and ``mlflow.pyfunc`` all run this code.
    """

    detector: IsolationForestDetector
    rule: AlertRule
    feature_columns: list[str]
    metric_kinds: dict[str, str] = field(default_factory=dict)
    account_groups: dict[str, str] = field(default_factory=dict)
    feature_config: Any = None
    n_top_metrics: int = 3
    info: dict[str, Any] = field(default_factory=dict)
    #: None (and bundles pickled before the step): ``anomaly_score`` is the calibrated score
    habituation: ScoreHabituation | None = None

    def build_features(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Features of ``frame`` exactly as in training (same builder, config and columns)."""
        from fleetml.features import build_features

        feats = build_features(
            frame,
            kinds=self.metric_kinds or None,
            groups=self.account_groups or None,
            config=self.feature_config,
        )
        missing = [c for c in self.feature_columns if c not in feats.columns]
        for col in missing:  # a metric absent from this frame: "not available"
            feats[col] = np.nan
        return feats

    def score_features(self, feats: pd.DataFrame, *, habituate: bool = True) -> pd.DataFrame:
        """Score a feature frame (``ts``, ``account_id``, features) sorted by account and ts.

        With ``habituate=False`` ``anomaly_score`` is the calibrated score the rule runs on."""
        X = feats[self.feature_columns]  # named columns, as in training
        accounts = feats["account_id"].to_numpy(dtype=object)
        calibrated = self.detector.anomaly_score(X, groups=accounts)
        flags = self.rule.apply(calibrated, accounts)
        scores = self.habituate(calibrated, accounts) if habituate else calibrated
        return self._result(feats, X, accounts, scores, flags, calibrated)

    def habituate(self, calibrated: np.ndarray, accounts) -> np.ndarray:
        """The reported score of calibrated rows (grouped by account, in time order)."""
        if self.habituation is None:
            return calibrated
        return self.habituation.apply_by_account(calibrated, accounts)

    def _result(self, feats, X, accounts, scores, flags, calibrated) -> pd.DataFrame:
        top = np.full(len(feats), "", dtype=object)
        if flags.any():
            rows = np.flatnonzero(flags)
            names = self.detector.top_features(
                X.iloc[rows], groups=accounts[rows], k=self.n_top_metrics
            )
            top[rows] = [";".join(n) for n in names]
        return pd.DataFrame(
            {
                "ts": feats["ts"].to_numpy(),
                "account_id": feats["account_id"].astype(str).to_numpy(),
                "anomaly_score": scores,
                "calibrated_score": calibrated,
                "is_anomaly": flags.astype(bool),
                "top_metrics": top.astype(str),
            }
        )

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Score every row of a wide metrics frame (see class docstring)."""
        frame = frame.sort_values(["account_id", "ts"], kind="stable").reset_index(drop=True)
        return self.score_features(self.build_features(frame))


class RobustZBaseline(BaseEstimator):
    """The simple baseline: largest per-account robust z-score of the raw metric levels.

    Parameters
    ----------
    columns : list of int or None, default=None
        Columns of ``X`` to use (e.g. the ``<metric>__value`` features); ``None`` uses all.
    tail_quantile : float, default=0.99
        Calibration as in :class:`IsolationForestDetector`.
    """

    def __init__(self, columns=None, tail_quantile: float = 0.99):
        self.columns = columns
        self.tail_quantile = tail_quantile

    def fit(self, X, y=None, groups=None):
        """Learn per-account medians and robust scales, then calibrate the max |z| score."""
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan")
        self.detector_ = IsolationForestDetector(
            tail_quantile=self.tail_quantile, calibration="cdf"
        )
        self.detector_.n_features_in_ = X.shape[1]
        groups = self.detector_._check_groups(groups, X.shape[0])
        self.detector_._fit_normalisation(X, groups)
        self.detector_.range_index_ = np.zeros(0, dtype=np.intp)
        self.detector_.calibrator_ = ScoreCalibrator(
            method="cdf", tail_quantile=self.tail_quantile
        ).fit_cdf(self._raw(X, groups))
        return self

    def _raw(self, X, groups) -> np.ndarray:
        Z = np.abs(self.detector_._normalise(X, groups))
        if self.columns is not None:
            Z = Z[:, list(self.columns)]
        return Z.max(axis=1) if Z.shape[1] else np.zeros(Z.shape[0])

    def anomaly_score(self, X, groups=None) -> np.ndarray:
        """Calibrated baseline score in [0, 1]."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan", reset=False)
        return self.detector_.calibrate(self._raw(X, groups))
