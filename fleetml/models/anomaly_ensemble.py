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
from scipy.special import ndtri, ndtri_exp

from fleetml.models.anomaly_calibration import ScoreCalibrator

SCORERS = ("forest", "deviation", "tails")
#: Batches up to this many rows take the all-features-at-once path of the tail scorer.
SMALL_BATCH_ROWS = 8
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
        """All features' CDF grids in one array, for the vectorised paths of :meth:`score`."""
        cals = self.calibrators_
        self.probs_ = cals[0].probs_ if cals else np.linspace(0.0, self.tail_quantile, 201)
        self.grids_ = np.array([c.scores_ for c in cals]).reshape(len(cals), self.probs_.size)
        self.tail_start_ = np.array([c.tail_start_ for c in cals])
        self.tail_scale_ = np.array([c.tail_scale_ for c in cals])

    def score(self, Z: np.ndarray) -> np.ndarray:
        """Largest per-feature normal quantile of the training CDF (0 at or below the median).

        The largest ``ScoreCalibrator.probit`` over the features. Small batches (on-demand
        scoring of an account's latest rows) compute every feature at once instead - one
        ``log(1 - cdf)`` per feature, one normal quantile of the rarest - with the same bits.
        """
        A = np.abs(np.asarray(Z, dtype=float))
        n, k = A.shape
        if k == 0:
            return np.zeros(n)
        if n > SMALL_BATCH_ROWS:  # one vectorised call per feature
            out = np.zeros(n)
            for j, cal in enumerate(self.calibrators_):
                out = np.maximum(out, cal.probit(A[:, j]))
            return out
        if not hasattr(self, "grids_"):
            self._pack()
        body = self._body_at_once(A)
        log_sf = np.log1p(-np.clip(body, 0.5, 1.0 - 1e-12))
        tail = A > self.tail_start_
        excess = np.maximum(A - self.tail_start_, 0.0)
        log_tail = np.log1p(-self.tail_quantile) - excess / self.tail_scale_
        log_sf = np.where(tail, np.minimum(log_tail, np.log(0.5)), log_sf)
        # the normal quantile of the rarest feature, computed the way ScoreCalibrator.probit does
        # (ndtri in the body, ndtri_exp in the tail) so both give the same bits
        rarest = np.argmin(log_sf, axis=1)[:, None]
        in_tail = np.take_along_axis(tail, rarest, 1)[:, 0]
        p_body = np.clip(np.take_along_axis(body, rarest, 1)[:, 0], 0.5, 1.0 - 1e-12)
        q_tail = np.maximum(-ndtri_exp(np.take_along_axis(log_tail, rarest, 1)[:, 0]), 0.0)
        return np.where(in_tail, q_tail, ndtri(p_body))

    def _body_at_once(self, A: np.ndarray) -> np.ndarray:
        """Empirical CDF of every feature at once, computed exactly as ``np.interp`` does, so
        both paths give the same bits (grids hold ties: a value one ulp below a run of equal grid
        points must not jump to the run's end, which would move its calibrated score)."""
        G, p = self.grids_, self.probs_
        m = p.size
        lo = (G[None, :, :] <= A[:, :, None]).sum(axis=2) - 1  # last grid point <= x; -1: below
        j = np.clip(lo, 0, m - 2)
        x0 = np.take_along_axis(G[None], j[..., None], 2)[..., 0]
        x1 = np.take_along_axis(G[None], (j + 1)[..., None], 2)[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = (p[j + 1] - p[j]) / (x1 - x0)
            body = slope * (A - x0) + p[j]
        body = np.where(A == x0, p[j], body)
        return np.where(lo < 0, 0.0, np.where(lo >= m - 1, p[-1], body))


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
