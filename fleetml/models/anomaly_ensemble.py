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
        return self

    def score(self, Z: np.ndarray) -> np.ndarray:
        A = np.abs(np.asarray(Z, dtype=float))
        out = np.zeros(A.shape[0])
        for j, cal in enumerate(self.calibrators_):  # one vectorised call per feature
            out = np.maximum(out, cal.probit(A[:, j]))
        return out


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
