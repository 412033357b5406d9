"""Habituation, the step between the calibrator and the reported ``anomaly_score``.

The calibrated score (:mod:`fleetml.models.anomaly_calibration`) says how unlikely a row is
given the account's *training* period. A lasting change - a new level outside the training
range, a noisier regime - keeps it high on every row until the next refit learns the change, so
a long run of ordinary-for-now rows ranks above a short, new incident elsewhere, and any
threshold on the score either misses the incident or charges the whole run. A person watching
the account habituates: the tenth hour of the same oddity is not news.

:class:`ScoreHabituation` does the same with one number per account, a *decaying maximum* of its
calibrated scores, ``M_t = max(c_t, M_{t-1} * 2**(-1 / half_life))``. A row keeps its calibrated
score ``c_t`` only when it is above ``M_{t-1}`` - the most anomalous the account has looked
lately, fading with a half-life of ``half_life`` rows - by more than ``margin`` (5 %: ``c_t >
1.05 M_{t-1}``); a row above ``M_{t-1}`` by less reports ``near_factor * c_t`` (0.55), any other
row ``factor * c_t`` (0.5). So the first rows of an episode, and any row clearly worse than what
came before, rank at full height; a plateau ranks at half height until it has been forgotten; a
slow ramp, whose every row is only a little above the last, ranks just above the plateau (without
the margin each of its rows was a "new high" at full height, and charged as one). The order of
rows *within* a series is unchanged where it matters (a clear new high always outranks what
preceded it).

Only the reported score habituates: the alert rule (:class:`~fleetml.models.anomaly_rule.
AlertRule`) keeps running on the calibrated score, so ``is_anomaly`` pages exactly as before
(a long episode pages once, at its start, by the rule's own suppression).

It is causal and needs no fitting. Rows of one account must come in time order; the state to
carry between calls (the live loop's ticks) is ``M`` after each account's last row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Scores at or below this count as zero (their logarithm is floored here).
_TINY = 1e-12
_LOG_TINY = float(np.log(_TINY))
#: Relative margin (in log) by which a score must exceed the maximum to count as above it.
_TIE = 1e-9


@dataclass(frozen=True)
class ScoreHabituation:
    """A decaying maximum per account halves rows that are no news (see the module docstring).

    Parameters
    ----------
    half_life : float
        Rows after which the remembered maximum has faded to half; must be positive.
    factor : float
        What a row that is not above the remembered maximum keeps of its score, in [0, 1).
    margin : float
        By how much (relatively) a row must exceed the remembered maximum to keep its score;
        at least 0.
    near_factor : float
        What a row above the remembered maximum by less than ``margin`` keeps of its score, in
        [``factor``, 1].
    """

    half_life: float = 1000.0
    factor: float = 0.5
    margin: float = 0.05
    near_factor: float = 0.55

    def __setstate__(self, state: dict) -> None:
        """Unpickling: a bundle saved before the margin existed keeps its rule (no margin)."""
        state = {"margin": 0.0, "near_factor": state.get("factor", 0.5), **state}
        for key, value in state.items():
            object.__setattr__(self, key, value)

    def __post_init__(self):
        if not (np.isfinite(self.half_life) and self.half_life > 0):
            raise ValueError(f"habituation half_life must be positive, got {self.half_life!r}")
        if not 0.0 <= self.factor < 1.0:
            raise ValueError(f"habituation factor must be in [0, 1), got {self.factor!r}")
        if not (np.isfinite(self.margin) and self.margin >= 0.0):
            raise ValueError(f"habituation margin must be at least 0, got {self.margin!r}")
        if not self.factor <= self.near_factor <= 1.0:
            raise ValueError(
                f"habituation near_factor must be in [factor, 1] = [{self.factor}, 1], "
                f"got {self.near_factor!r}"
            )

    def apply(
        self,
        scores,
        new_series: np.ndarray | None = None,
        start_max: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Habituated scores and the running maximum ``M_t`` after each row.

        ``new_series`` marks the first row of each account's rows (all rows one account when
        None); ``start_max`` (read at those first rows only) is the account's ``M`` carried from
        an earlier call, 0 when it has none. NaN scores (warm-up) stay NaN and leave ``M`` to
        fade. Vectorised: ``log M_t = max(log M_-1 - l, cummax_{s<=t}(log c_s + s l)) - t l``
        with ``l = ln 2 / half_life`` and ``t`` counted from the account's first row here.
        """
        c = np.asarray(scores, dtype=float)
        n = c.size
        if n == 0:
            return np.zeros(0), np.zeros(0)
        if new_series is None:
            new_series = np.zeros(n, dtype=bool)
        new_series = np.asarray(new_series, dtype=bool).copy()
        new_series[0] = True
        lam = np.log(2.0) / float(self.half_life)
        idx = np.arange(n)
        first = np.maximum.accumulate(np.where(new_series, idx, 0))
        t = (idx - first).astype(float)
        sid = np.cumsum(new_series) - 1
        with np.errstate(divide="ignore", invalid="ignore"):
            logc = np.log(np.where(np.isfinite(c) & (c > _TINY), c, _TINY))
        m0 = np.zeros(n) if start_max is None else np.nan_to_num(np.asarray(start_max, float))
        with np.errstate(divide="ignore"):
            log_m0 = np.log(np.maximum(m0[first], _TINY))
        value = logc + t * lam
        # a per-account cumulative maximum in one pass: lift each account above the previous
        # ones by more than the range of its own values
        span = float(value.max() - _LOG_TINY) + 1.0
        lift = sid * span
        running = np.maximum.accumulate(value + lift) - lift
        log_m = np.maximum(running, log_m0 - lam) - t * lam
        prev = np.where(new_series, log_m0, np.r_[_LOG_TINY, log_m[:-1]])
        # above by the margin, and by more than rounding: a maximum carried between calls went
        # through exp and log, and a repeated score (a saturated range check) must not count as
        # new even without a margin
        above = np.isfinite(c) & (logc > prev + _TIE)
        keep = above & (logc > prev + np.log1p(self.margin) + _TIE)
        out = np.where(keep, c, np.where(above, self.near_factor * c, self.factor * c))
        return out, np.exp(log_m)

    def apply_by_account(self, scores, accounts) -> np.ndarray:
        """Habituated scores of rows grouped by account in time order, from no memory."""
        acc = np.asarray(accounts, dtype=object)
        new_series = np.ones(acc.size, dtype=bool)
        new_series[1:] = acc[1:] != acc[:-1]
        return self.apply(scores, new_series)[0]
