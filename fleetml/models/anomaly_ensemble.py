"""Raw scorers of the detector step, and their combination.

The isolation forest dilutes a large deviation in one feature among many (a tree rarely splits on
that feature near the root), so a broken seasonal pattern or a frozen metric can score lower than
noise in ten other features. :class:`DeviationScorer` sees exactly that case: the largest
per-account robust z-score over the features. :class:`CombinedScorer` makes the members
comparable by calibrating each through its own training CDF (to a normal quantile, unbounded in
the exponential tail) and returns the largest: "as unusual as the most unusual member says",
in the manner of Merlion's ensembles of calibrated detectors.

A scorer takes the detector's normalised feature matrix (per-account robust z-scores, clipped,
NaN as 0) and returns one raw score per row, higher is more anomalous; it looks at one row at a
time, so it is causal.
"""

from __future__ import annotations

import numpy as np

from fleetml.models.anomaly_calibration import ScoreCalibrator

SCORERS = ("forest", "deviation")


class DeviationScorer:
    """Largest absolute robust z-score of a row over all features."""

    def score(self, Z: np.ndarray) -> np.ndarray:
        Z = np.asarray(Z, dtype=float)
        return np.abs(Z).max(axis=1) if Z.shape[1] else np.zeros(Z.shape[0])


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
