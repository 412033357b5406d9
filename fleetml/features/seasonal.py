"""Residual against the account's own seasonal baseline (same time of day / of week)."""

from __future__ import annotations

import numpy as np

from fleetml.features.config import FeatureConfig, window_ms
from fleetml.features.layout import DAY_MS, Layout


class SeasonalLags:
    """Rows at the same time of day on previous days and of week on previous weeks.

    The baseline at ``t`` is the mean of the values at ``t - k days`` (k = 1..seasonal_days), or at
    ``t - k weeks`` (k = 1..seasonal_weeks) once at least ``seasonal_min_weeks`` of those exist.
    Each lag takes the sample nearest to the exact lag within ``seasonal_tolerance`` (clock jitter,
    irregular sampling); a missing lag is skipped. Only strictly earlier days are used.
    """

    def __init__(self, layout: Layout, config: FeatureConfig, rows: np.ndarray | None = None):
        if config.seasonal_tolerance:
            tol = window_ms(config.seasonal_tolerance)
        else:
            tol = layout.sampling_step_ms() // 2
        if tol >= DAY_MS:
            raise ValueError("seasonal_tolerance must be shorter than a day")
        cache: dict[int, np.ndarray] = {}

        def lag(ms: int) -> np.ndarray:
            if ms not in cache:
                cache[ms] = _sentinel(layout.nearest(ms, tol, rows), layout.n)
            return cache[ms]

        self.daily = _stack([lag(k * DAY_MS) for k in range(1, config.seasonal_days + 1)])
        self.weekly = _stack([lag(k * 7 * DAY_MS) for k in range(1, config.seasonal_weeks + 1)])
        self.min_weeks = config.seasonal_min_weeks
        self.rows = rows

    @staticmethod
    def _mean_over(level: np.ndarray, positions: np.ndarray | None, size: int):
        if positions is None:
            return np.zeros(size), np.zeros(size)
        # Missing lags point at a NaN sentinel appended to the values.
        padded = np.append(level, np.nan)
        vals = padded[positions]
        count = (~np.isnan(vals)).sum(axis=0)
        total = np.nansum(vals, axis=0)
        return total, count

    def residual(self, level: np.ndarray) -> np.ndarray:
        """Level minus baseline at the target rows (NaN until a lag exists)."""
        cur = level if self.rows is None else level[self.rows]
        d_sum, d_cnt = self._mean_over(level, self.daily, len(cur))
        w_sum, w_cnt = self._mean_over(level, self.weekly, len(cur))
        with np.errstate(divide="ignore", invalid="ignore"):
            baseline = np.where(
                (w_cnt >= max(self.min_weeks, 1)) & (w_cnt > 0),
                w_sum / w_cnt,
                np.where(d_cnt > 0, d_sum / d_cnt, np.nan),
            )
        return cur - baseline


def _sentinel(positions: np.ndarray, n: int) -> np.ndarray:
    """Replace -1 (no sample) by ``n``, the index of the NaN sentinel."""
    return np.where(positions >= 0, positions, n).astype(np.int32 if n < 2**31 - 1 else np.int64)


def _stack(positions: list[np.ndarray]) -> np.ndarray | None:
    return np.stack(positions) if positions else None
