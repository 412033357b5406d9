"""The alert rule, the third step of anomaly detection: calibrated scores in, ``is_anomaly`` out.

Kept apart from the detector and its calibrator (as Merlion keeps its post-rule apart), so the
threshold can change without refitting anything. The live loop
(:mod:`fleetml.serving.live`) replays the same three fields tick by tick.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _runs(flag: np.ndarray, new_series: np.ndarray) -> np.ndarray:
    """Length of the run of consecutive True values ending at each row (restarting per series)."""
    idx = np.arange(flag.size)
    marker = np.where(~flag, idx, np.where(new_series, idx - 1, -1))
    last = np.maximum.accumulate(marker) if flag.size else marker
    return np.where(flag, idx - last, 0)


@dataclass
class AlertRule:
    """The threshold, kept apart from the score: turns calibrated scores into alerts.

    A row is anomalous when the calibrated score has been at or above ``threshold`` for at least
    ``min_duration`` consecutive samples of the same account. An alert *onset* is the first such
    row of an episode. An alert re-arms only after ``suppression`` samples without an episode: an
    onset that follows the end of the previous episode sooner continues the same incident and is
    dropped together with its rows, so a long episode with brief dips pages once, at its start.
    Everything depends only on the past, so the rule is causal.
    """

    threshold: float = 0.995
    min_duration: int = 1
    suppression: int = 0

    def apply(
        self, scores, accounts=None, *, return_onsets: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Boolean ``is_anomaly`` per row (rows grouped by account, in time order).

        NaN scores (warm-up) are never anomalous. With ``return_onsets`` also returns the
        boolean onset mask (first row of each kept alert episode).
        """
        scores = np.asarray(scores, dtype=float)
        n = scores.size
        if accounts is None:
            new_series = np.zeros(n, dtype=bool)
        else:
            acc = np.asarray(accounts, dtype=object)
            new_series = np.ones(n, dtype=bool)
            new_series[1:] = acc[1:] != acc[:-1]
        if n:
            new_series[0] = True
        above = np.nan_to_num(scores, nan=-np.inf) >= self.threshold
        candidate = _runs(above, new_series) >= max(int(self.min_duration), 1)
        prev = np.zeros(n, dtype=bool)
        prev[1:] = candidate[:-1]
        onset = candidate & (~prev | new_series)
        flags, kept = self._suppress(candidate, onset, new_series)
        return (flags, kept) if return_onsets else flags

    def _suppress(self, candidate, onset, new_series):
        if self.suppression <= 0 or not onset.any():
            return candidate, onset
        n = candidate.size
        idx = np.arange(n)
        series_start = np.maximum.accumulate(np.where(new_series, idx, 0))
        # last row of an earlier episode (a run that lasted min_duration) before each row; lone
        # rows above the threshold that never became an episode do not hold the alert back
        last = np.maximum.accumulate(np.where(candidate, idx, -1))
        prev = np.r_[-1, last[:-1]]
        quiet = idx - prev - 1  # rows since that episode ended (meaningful at onsets)
        kept = onset & ((prev < series_start) | (quiet >= int(self.suppression)))
        episode = np.cumsum(onset)  # episode number of each candidate row
        kept_episode = np.zeros(episode.max() + 1, dtype=bool)
        kept_episode[episode[onset]] = kept[onset]
        flags = candidate & kept_episode[episode]
        return flags, kept
