"""Failure risk: the probability of a technical fault within ``(t, t + horizon]``.

Three visible steps, kept apart as in the anomaly family:

1. :class:`RiskClassifier` (scikit-learn contract) - gradient-boosted trees
   (``HistGradientBoostingClassifier``, native missing values) giving a *raw* probability,
   trained on all positives and subsampled negatives (class imbalance);
2. :class:`ProbabilityCalibrator` - isotonic or Platt scaling fitted on a later, held-out period,
   so ``0.3`` means "about 30 % of such rows see a fault within the horizon";
3. a per-horizon decision threshold chosen on validation for a target precision
   (:func:`fleetml.evaluation.risk.threshold_for_precision`) and stored with the model.

:class:`RiskModel` bundles features, one classifier/calibrator/threshold per horizon and, when
trained, a separate platform-enforcement risk (``restricted``/``banned``): enforcement is never a
fault label; its risk only feeds draining and recommendations.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

_log = logging.getLogger(__name__)

RESULT_COLUMNS = ["ts", "account_id", "horizon", "risk", "at_risk"]
#: Share of the raw score mixed into isotonic-calibrated risk, so ties are broken by raw order.
TIE_BREAK = 1e-6


#: Packed trees of each fitted boosting model (see RiskClassifier._packed).
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@lru_cache(maxsize=1)
def _controller():
    """One threadpoolctl controller per process: finding the loaded thread-pool libraries reads
    the process's memory map (about 5 ms), too slow to repeat for every one-row prediction."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


class RiskClassifier(ClassifierMixin, BaseEstimator):
    """Gradient-boosted trees for "a fault within the horizon", missing values allowed.

    Parameters
    ----------
    learning_rate, max_iter, max_leaf_nodes, min_samples_leaf, l2_regularization, max_features
        Passed to :class:`~sklearn.ensemble.HistGradientBoostingClassifier`.
    class_weight : "balanced", dict or None
        Class weights. Off by default: with any sample weight, scikit-learn 1.9 bins features
        with weighted quantiles, measured 15x slower here (48 s instead of 3 s for 50,000 rows);
        training handles imbalance by subsampling negatives instead, and calibration restores
        true probabilities.
    n_threads : int or None
        OpenMP threads for fitting and prediction (``None``: the library default, all cores).
        On a small machine shared with the API, 1 thread was measured 3.6x faster than 2.
    random_state : int or None
        Seed.

    Attributes
    ----------
    estimator_ : HistGradientBoostingClassifier
    classes_ : ndarray
    n_features_in_ : int
    n_iter_ : int
    used_features_ : ndarray
        Columns with at least one value in training (all-missing columns are ignored).
    """

    def __init__(
        self,
        *,
        learning_rate: float = 0.08,
        max_iter: int = 200,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 40,
        l2_regularization: float = 1.0,
        max_features: float = 0.5,
        class_weight: str | dict | None = None,
        n_threads: int | None = None,
        random_state: int | None = 0,
    ):
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.max_features = max_features
        self.class_weight = class_weight
        self.n_threads = n_threads
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def fit(self, X, y, sample_weight=None):
        """Fit the trees; returns ``self``."""
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan")
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        # A column with no value at all (a metric never seen in the training period) would
        # break the binning; the trees never use it, so it is dropped here and at prediction.
        self.used_features_ = np.flatnonzero(~np.isnan(X).all(axis=0))
        if len(self.used_features_) == 0:
            raise ValueError("every feature is missing in the training rows; nothing to learn from")
        X = X[:, self.used_features_]
        with self._threads():
            self._fit_trees(X, y, sample_weight)
        self.n_iter_ = self.estimator_.n_iter_
        return self

    def _threads(self):
        from contextlib import nullcontext

        if self.n_threads is None:
            return nullcontext()
        return _controller().limit(limits=int(self.n_threads), user_api="openmp")

    def _fit_trees(self, X, y, sample_weight) -> None:
        self.estimator_ = HistGradientBoostingClassifier(
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            max_features=self.max_features,
            class_weight=self.class_weight,
            early_stopping=False,
            random_state=self.random_state,
        ).fit(X, y, sample_weight=sample_weight)

    def predict_proba(self, X) -> np.ndarray:
        """Raw (uncalibrated) class probabilities, columns in ``classes_`` order."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan")
        X = X[:, self.used_features_]
        packed = self._packed() if X.shape[0] <= 256 else None
        if packed is not None:  # a few rows (on-demand scoring): the lock-step walk is faster
            return packed.predict_proba(X)
        with self._threads():
            return self.estimator_.predict_proba(X)

    def _packed(self):
        """The fitted trees as flat arrays (built once per fitted model, kept outside the
        estimator so predicting never changes its state; None when they cannot be packed)."""
        key = self.estimator_
        if key not in _PACKED:
            from fleetml.models.fast_trees import PackedBoosting

            try:
                _PACKED[key] = PackedBoosting(key)
            except (ValueError, AttributeError, KeyError):
                _PACKED[key] = None
        return _PACKED[key]

    def decision_function(self, X) -> np.ndarray:
        """Raw log-odds (binary) or per-class scores."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan")
        with self._threads():
            return self.estimator_.decision_function(X[:, self.used_features_])

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def risk(self, X) -> np.ndarray:
        """Raw probability of the positive class (the largest label)."""
        proba = self.predict_proba(X)
        return proba[:, -1] if proba.shape[1] > 1 else np.zeros(len(proba))


class ProbabilityCalibrator(BaseEstimator):
    """Maps raw probabilities to calibrated ones; fitted on a held-out period.

    Parameters
    ----------
    method : {"auto", "isotonic", "sigmoid"}
        ``auto`` uses isotonic regression with at least ``min_isotonic_positives`` positives,
        Platt scaling (logistic regression on the raw log-odds) otherwise.
    min_isotonic_positives : int
    """

    def __init__(self, *, method: str = "auto", min_isotonic_positives: int = 1000):
        self.method = method
        self.min_isotonic_positives = min_isotonic_positives

    @staticmethod
    def _logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p)).reshape(-1, 1)

    def fit(self, raw, y):
        raw = np.asarray(raw, dtype=np.float64).ravel()
        y = np.asarray(y, dtype=np.float64).ravel()
        if self.method not in ("auto", "isotonic", "sigmoid"):
            raise ValueError(f"calibration method {self.method!r}: use auto, isotonic or sigmoid")
        positives = int(y.sum())
        if positives == 0 or positives == len(y):
            self.method_ = "constant"
            self.constant_ = float(y.mean()) if len(y) else 0.0
            return self
        method = self.method
        if method == "auto":
            method = "isotonic" if positives >= self.min_isotonic_positives else "sigmoid"
        self.method_ = method
        if method == "isotonic":
            self.model_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
        else:
            self.model_ = LogisticRegression(C=1e4).fit(self._logit(raw), y.astype(int))
        return self

    def predict(self, raw) -> np.ndarray:
        """Calibrated probabilities in ``[0, 1]``."""
        check_is_fitted(self, "method_")
        raw = np.asarray(raw, dtype=np.float64).ravel()
        if self.method_ == "constant":
            return np.full(len(raw), self.constant_)
        if self.method_ == "isotonic":
            # Isotonic regression is a step function: every raw score of a plateau would get the
            # same risk, and the classifier's order inside it (most of the fleet sits on a few
            # wide plateaus) would be lost. A share of 1e-6 of the raw score keeps that order
            # (strictly increasing, still in [0, 1]) and moves no probability visibly. On
            # validation fleets of the simulator the plateaus cost 0.01-0.03 of 24 h PR-AUC.
            step = np.clip(self.model_.predict(raw), 0.0, 1.0)
            return (1.0 - TIE_BREAK) * step + TIE_BREAK * np.clip(raw, 0.0, 1.0)
        return self.model_.predict_proba(self._logit(raw))[:, 1]


@dataclass
class HorizonModel:
    """Classifier, calibrator and stored threshold of one horizon.

    ``floor`` is the next shorter horizon's model: a fault within 1 h is also a fault within
    6 h, so :meth:`risk` never returns less than the floor's risk and the horizons stay ordered
    (1 h <= 6 h <= 24 h) whoever calls it. Models trained before the floor existed have none.
    """

    horizon: str
    classifier: RiskClassifier
    calibrator: ProbabilityCalibrator
    threshold: float
    threshold_reason: str = ""
    floor: HorizonModel | None = None

    def own_risk(self, X: np.ndarray) -> np.ndarray:
        """Calibrated risk of this horizon's own classifier (no floor)."""
        return self.calibrator.predict(self.classifier.risk(X))

    def risk(self, X: np.ndarray) -> np.ndarray:
        """Calibrated risk, never below the shorter horizons' risk."""
        out = self.own_risk(X)
        if self.floor is not None:
            out = np.maximum(out, self.floor.risk(X))
        return out


@dataclass
class RiskModel:
    """Everything serving needs for failure risk, in one picklable object.

    ``predict(frame)`` takes the canonical wide metrics frame and returns one row per
    (sample, horizon): ``ts, account_id, horizon, risk, at_risk`` (plus ``enforcement_risk`` when
    an enforcement model was trained). It is the bundle logged to MLflow.
    """

    horizons: dict[str, HorizonModel]
    feature_columns: list[str]
    feature_config: Any = None
    metric_kinds: dict[str, str] = field(default_factory=dict)
    account_groups: dict[str, str] = field(default_factory=dict)
    account_masters: dict[str, str] = field(default_factory=dict)
    target_precision: float = 0.8
    enforcement: dict[str, HorizonModel] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def masters(self) -> dict[str, str] | None:
        """Servant -> master as known at training (models pickled before the field: none)."""
        return getattr(self, "account_masters", None) or None

    @property
    def uses_events(self) -> bool:
        """Whether the features include event history (scoring should pass ``events``)."""
        from fleetml.features.history import ENFORCEMENT_PREFIX, FAULT_PREFIX

        return any(c.startswith((FAULT_PREFIX, ENFORCEMENT_PREFIX)) for c in self.feature_columns)

    def _check_events(self, events) -> None:
        if events is None and self.uses_events:
            # Scoring still works (the columns are missing, so the trees take their missing-value
            # branches, as for an account without any fault in the look-back), but it no longer
            # sees recent faults: say so in the log instead of failing a live loop.
            _log.warning(
                "risk model uses event-history features but scoring passed no events; "
                "recent faults are ignored (pass events=... covering FeatureConfig.lookback_ms())"
            )

    def build_features(self, frame: pd.DataFrame, *, rows=None, events=None) -> pd.DataFrame:
        """Features of ``frame`` exactly as in training (same builder, config and columns);
        ``events`` (stored fault and enforcement events) feed the event-history columns."""
        from fleetml.features import build_features

        self._check_events(events)
        feats = build_features(
            frame,
            kinds=self.metric_kinds or None,
            groups=self.account_groups or None,
            config=self.feature_config,
            rows=rows,
            events=events if self.uses_events else None,
            masters=self.masters,
        )
        return feats

    def matrix(self, feats: pd.DataFrame) -> np.ndarray:
        """The training feature columns of a feature frame; absent metrics become NaN."""
        return feats.reindex(columns=self.feature_columns).to_numpy(dtype=np.float64)

    def risk_wide(self, feats: pd.DataFrame) -> pd.DataFrame:
        """One column of calibrated risk per horizon (and ``enforcement_<h>``), one row per row."""
        return self.risk_matrix(feats, self.matrix(feats))

    def risk_matrix(self, ids: pd.DataFrame, X: np.ndarray) -> pd.DataFrame:
        """``risk_wide`` from ``ts``/``account_id`` rows and their matrix of feature columns."""
        feats = ids
        out = pd.DataFrame(
            {"ts": feats["ts"].to_numpy(), "account_id": feats["account_id"].to_numpy()}
        )
        own = {h: m.own_risk(X) if len(X) else np.zeros(0) for h, m in self.horizons.items()}
        # Shortest first, so each floor's (already floored) risk is there when needed.
        for h in sorted(self.horizons, key=pd.Timedelta):
            model, risk = self.horizons[h], own[h]
            if model.floor is not None:
                floor = model.floor.horizon
                below = out[floor] if floor in out else model.floor.risk(X)
                risk = np.maximum(risk, below) if len(X) else risk
            out[h] = risk
        out = out[["ts", "account_id", *self.horizons]]
        for h, model in self.enforcement.items():
            out[f"enforcement_{h}"] = model.risk(X) if len(X) else np.zeros(0)
        return out

    def to_long(self, wide: pd.DataFrame) -> pd.DataFrame:
        """``risk_wide`` output to the long result format (rows x horizons)."""
        parts = []
        for h, model in self.horizons.items():
            part = pd.DataFrame(
                {
                    "ts": wide["ts"].to_numpy(),
                    "account_id": wide["account_id"].astype(str).to_numpy(),
                    "horizon": h,
                    "risk": wide[h].to_numpy(dtype=np.float64),
                }
            )
            part["at_risk"] = part["risk"] >= model.threshold
            if f"enforcement_{h}" in wide:
                part["enforcement_risk"] = wide[f"enforcement_{h}"].to_numpy(dtype=np.float64)
            parts.append(part)
        if not parts:
            return pd.DataFrame(columns=RESULT_COLUMNS)
        out = pd.concat(parts, ignore_index=True)
        out["horizon"] = out["horizon"].astype("str")
        return out

    def predict(self, frame: pd.DataFrame, *, rows=None, events=None) -> pd.DataFrame:
        """Risk of every row (or of ``rows``) of a wide metrics frame, in long format;
        ``events``: stored events for the event-history features."""
        return self.to_long(self.risk_wide(self.build_features(frame, rows=rows, events=events)))

    def predict_latest(self, frame: pd.DataFrame, events=None) -> pd.DataFrame:
        """Risk at each account's last sample only (the fast path for "now")."""
        from fleetml.features import latest_features

        self._check_events(events)
        feats = latest_features(
            frame,
            kinds=self.metric_kinds or None,
            groups=self.account_groups or None,
            config=self.feature_config,
            events=events if self.uses_events else None,
            masters=self.masters,
        )
        return self.to_long(self.risk_wide(feats))

    @property
    def thresholds(self) -> dict[str, float]:
        return {h: m.threshold for h, m in self.horizons.items()}
