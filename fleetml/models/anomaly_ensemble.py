"""Raw scorers of the detector step, and their combination.

The isolation forest dilutes a large deviation in one feature among many (a tree rarely splits on
that feature near the root), so a broken seasonal pattern or a frozen metric can score lower than
noise in ten other features. :class:`DeviationScorer` sees exactly that case: the largest
per-account robust z-score over the features; :class:`FeatureTailScorer` the feature furthest out
in its *own* training tail (so features with heavy tails do not drown the others).
:class:`CombinedScorer` makes the members comparable by calibrating each through its own
training CDF (to a normal quantile, unbounded in the exponential tail) and returns the largest:
"as unusual as the most unusual member says", in the manner of Merlion's ensembles of
calibrated detectors.

A scorer takes the detector's normalised feature matrix (per-account robust z-scores, clipped,
NaN as 0) and returns one raw score per row, higher is more anomalous; it looks at one row at a
time, so it is causal.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri_exp

from fleetml.models.anomaly_calibration import ScoreCalibrator

SCORERS = ("forest", "deviation", "tails")
#: Smallest exponential-tail scale of one feature's ``|z|`` (robust z units): beyond a feature's
#: 99 % training quantile, every 5 robust standard deviations more make a row e times rarer at
#: least. Without a floor a feature that was (almost) constant in training - a counter that is
#: zero 99 % of the time - puts every small move at the top of the tail, and with 150 features
#: some feature always does. Chosen on the 13 dev NAB series and simulator seed 1 (1, 3 and 5
#: tried; see docs/anomaly.md).
MIN_FEATURE_TAIL_SCALE = 5.0


class DeviationScorer:
    """Largest absolute robust z-score of a row over all features."""

    def score(self, Z: np.ndarray) -> np.ndarray:
        Z = np.asarray(Z, dtype=float)
        return np.abs(Z).max(axis=1) if Z.shape[1] else np.zeros(Z.shape[0])


class FeatureTailScorer:
    """Largest per-feature tail score of a row: each feature's ``|z|`` through its own training CDF.

    :class:`DeviationScorer` compares raw ``|z|`` across features, but features differ in their
    tails: on an account whose level jumps between two states the level's robust z of an ordinary
    row is 20 or more (the MAD sees one state only), which hides a seasonal residual of 30 that
    training never came near. Here every feature's ``|z|`` goes through its own empirical CDF with
    an exponential tail (scale at least :data:`MIN_FEATURE_TAIL_SCALE`) to a normal quantile, and
    the largest counts: "the feature furthest out in its own training tail".

    Parameters
    ----------
    tail_quantile : float
        Start of each feature's exponential tail.
    """

    def __init__(self, tail_quantile: float = 0.99):
        self.tail_quantile = tail_quantile

    def fit(self, Z: np.ndarray) -> FeatureTailScorer:
        """Fit one tail calibrator per feature on normalised training rows."""
        A = np.abs(np.asarray(Z, dtype=float))
        self.calibrators_ = []
        for j in range(A.shape[1]):
            cal = ScoreCalibrator(method="cdf", tail_quantile=self.tail_quantile).fit_cdf(A[:, j])
            cal.tail_scale_ = max(cal.tail_scale_, MIN_FEATURE_TAIL_SCALE)
            self.calibrators_.append(cal)
        self._pack()
        return self

    def _pack(self) -> None:
        """All features' CDF grids in one increasing array (feature ``j`` offset by ``j * span``),
        so one ``searchsorted`` interpolates every feature of every row at once."""
        cals = self.calibrators_
        self.probs_ = cals[0].probs_ if cals else np.linspace(0.0, self.tail_quantile, 201)
        grids = np.array([c.scores_ for c in cals]).reshape(len(cals), self.probs_.size)
        self.span_ = float(np.nanmax(grids)) + 1.0 if grids.size else 1.0
        self.offset_ = np.arange(len(cals)) * self.span_
        self.flat_ = (grids + self.offset_[:, None]).ravel()
        self.tail_start_ = np.array([c.tail_start_ for c in cals])
        self.tail_scale_ = np.array([c.tail_scale_ for c in cals])

    def score(self, Z: np.ndarray) -> np.ndarray:
        """Largest per-feature normal quantile of the training CDF (0 at or below the median).

        Equal to the largest ``ScoreCalibrator.probit`` over the features, computed as one
        ``log(1 - cdf)`` per feature (the exponential tail exactly, however far out) and one
        normal quantile of the smallest.
        """
        if not hasattr(self, "flat_"):
            self._pack()
        A = np.abs(np.asarray(Z, dtype=float))
        n, k = A.shape
        if k == 0:
            return np.zeros(n)
        body = self._body_by_feature(A) if n > 256 else self._body_at_once(A)
        log_sf = np.log1p(-np.clip(body, 0.5, 1.0 - 1e-12))
        tail = A > self.tail_start_
        excess = np.maximum(A - self.tail_start_, 0.0)
        log_tail = np.log1p(-self.tail_quantile) - excess / self.tail_scale_
        log_sf = np.where(tail, np.minimum(log_tail, np.log(0.5)), log_sf)
        return np.maximum(-ndtri_exp(log_sf.min(axis=1)), 0.0)

    def _body_by_feature(self, A: np.ndarray) -> np.ndarray:
        """Empirical CDF of every feature, one ``np.interp`` per feature (large batches)."""
        m = self.probs_.size
        grids = self.flat_.reshape(-1, m) - self.offset_[:, None]
        return np.column_stack(
            [np.interp(A[:, j], grids[j], self.probs_, left=0.0) for j in range(A.shape[1])]
        )

    def _body_at_once(self, A: np.ndarray) -> np.ndarray:
        """Empirical CDF of every feature with one ``searchsorted`` (small batches: serving)."""
        k = A.shape[1]
        m = self.probs_.size
        within = np.clip(A, 0.0, self.span_ - 1.0)  # |z| is clipped far below span - 1
        pos = np.searchsorted(self.flat_, within + self.offset_, side="right") - 1
        local = pos - np.arange(k) * m  # index in the feature's own grid; -1: below its minimum
        lo = np.clip(local, 0, m - 1)
        hi = np.clip(local + 1, 0, m - 1)
        base = np.arange(k) * m
        x0, x1 = self.flat_[base + lo], self.flat_[base + hi]
        frac = np.where(x1 > x0, (within + self.offset_ - x0) / np.where(x1 > x0, x1 - x0, 1.0), 0)
        body = self.probs_[lo] + frac * (self.probs_[hi] - self.probs_[lo])
        return np.where(local < 0, 0.0, np.where(local >= m - 1, self.probs_[-1], body))


class CombinedScorer:
    """Largest calibrated member score (normal quantile of each member's training CDF).

    Parameters
    ----------
    members : list of (name, scorer)
        Each scorer has ``score(Z) -> ndarray``.
    Z : ndarray
        Normalised training rows the member CDFs are fitted on.
    tail_quantile : float
        Start of each member's exponential tail.
    """

    def __init__(self, members, Z: np.ndarray, tail_quantile: float = 0.99):
        self.names = [name for name, _ in members]
        self.members = [scorer for _, scorer in members]
        self.calibrators = [
            ScoreCalibrator(method="cdf", tail_quantile=tail_quantile).fit_cdf(m.score(Z))
            for m in self.members
        ]

    def member_scores(self, Z: np.ndarray) -> np.ndarray:
        """Calibrated (normal quantile) score of every member, shape ``(n_rows, n_members)``."""
        return np.column_stack(
            [c.probit(m.score(Z)) for m, c in zip(self.members, self.calibrators, strict=True)]
        )

    def score(self, Z: np.ndarray) -> np.ndarray:
        """Raw combined score: the largest calibrated member score."""
        return self.member_scores(Z).max(axis=1)
