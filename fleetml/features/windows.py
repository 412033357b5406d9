"""Trailing time-window statistics: level, dispersion, slope and rate of change.

All windows are durations over ``(t - w, t]`` found on the frame-wide monotonic key (see
:mod:`fleetml.features.layout`): strictly causal, correct under gaps and irregular sampling, and
one vectorised pass per window, never a per-row or per-account Python loop.

Every function evaluates features at target rows (all rows, or e.g. each account's last row for
scoring "now"); the sums they need are prefix sums over all rows, which are cheap.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fleetml.features.config import window_ms
from fleetml.features.layout import HOUR_MS, Layout


class WindowStats:
    """Trailing-window sums shared by the window features of one frame.

    Window bounds come from one ``searchsorted`` per window on the frame-wide monotonic key; sums
    are differences of per-account prefix sums, so each metric pays one cumulative sum per
    quantity and one gather per window. Prefix sums only include earlier rows of the same account,
    so every value is causal and no account's rounding reaches another. Sums over sample counts
    and time depend only on where a metric is present and are cached per presence mask.
    """

    def __init__(self, layout: Layout, rows: np.ndarray | None = None):
        self.layout = layout
        self.rows = rows
        self.hours = layout.hours_since_start()
        self._prev: dict[str, np.ndarray] = {}
        self.account_start = np.repeat(layout.starts, np.diff(np.r_[layout.starts, layout.n]))
        self._mask_cache: dict[tuple, dict[str, np.ndarray]] = {}

    def at(self, values: np.ndarray) -> np.ndarray:
        """Values at the target rows."""
        return values if self.rows is None else values[self.rows]

    def previous(self, window: str) -> np.ndarray:
        """Row just before each target row's window ``(t - w, t]``, or ``n`` (a zero sentinel)
        when the window starts at the account's first row."""
        prev = self._prev.get(window)
        if prev is None:
            key = self.layout.key_ms
            lo = np.searchsorted(key, self.at(key) - window_ms(window), side="right")
            prev = np.where(lo > self.at(self.account_start), lo - 1, self.layout.n)
            self._prev[window] = prev
        return prev

    def window_sum(self, prefix: np.ndarray, window: str) -> np.ndarray:
        """Sum over each target row's window, from a prefix-sum array (see ``prefix``)."""
        return self.at(prefix[:-1]) - prefix[self.previous(window)]

    def prefix(self, **columns: np.ndarray) -> dict[str, np.ndarray]:
        """Cumulative sums restarted at every account, followed by one zero."""
        frame = pd.DataFrame(columns, copy=False)
        summed = frame.groupby(self.layout.code, sort=False).cumsum()
        out = {}
        for name in columns:
            arr = np.empty(self.layout.n + 1)
            arr[:-1] = summed[name].to_numpy()
            arr[-1] = 0.0
            out[name] = arr
        return out

    def _mask_prefix(self, valid: np.ndarray) -> dict[str, np.ndarray]:
        key = (hash(np.packbits(valid).tobytes()), int(valid.sum()))
        hit = self._mask_cache.get(key)
        if hit is None:
            x = np.where(valid, self.hours, 0.0)
            hit = self.prefix(n=valid.astype(np.float64), sx=x, sxx=x * x)
            self._mask_cache = {key: hit}  # keep one mask: bounded memory
        return hit

    def compute(
        self,
        level: np.ndarray,
        *,
        mean_windows: tuple[str, ...],
        std_windows: tuple[str, ...],
        slope_windows: tuple[str, ...],
        z_windows: tuple[str, ...] = (),
    ) -> dict[str, np.ndarray]:
        """``mean_<w>``, ``std_<w>``, ``slope_<w>`` (units per hour) and ``z_<w>`` (the current
        level in standard deviations from the window's mean) of one metric's level."""
        valid = ~np.isnan(level)
        # Shift by the account's first value so the sums stay small (numerically stable variance);
        # the first value is at or before every row that uses it, so this stays causal.
        first_valid = np.full(len(self.layout.starts), np.nan)
        vidx = np.flatnonzero(valid)
        if len(vidx):
            vcode = self.layout.code[vidx]
            first = np.flatnonzero(np.r_[True, vcode[1:] != vcode[:-1]])
            first_valid[vcode[first]] = level[vidx[first]]
        shift_all = np.nan_to_num(first_valid[self.layout.code])
        y = np.where(valid, level - shift_all, 0.0)
        shift = self.at(shift_all)
        cols = {"y": y}
        if std_windows or z_windows:
            cols["yy"] = y * y
        if slope_windows:
            cols["xy"] = np.where(valid, self.hours, 0.0) * y
        pre = self.prefix(**cols)
        mp = self._mask_prefix(valid)
        out: dict[str, np.ndarray] = {}
        level_at = self.at(level)
        for window in dict.fromkeys(mean_windows + std_windows + slope_windows + z_windows):
            n = np.rint(self.window_sum(mp["n"], window))  # exact integer counts
            sy = self.window_sum(pre["y"], window)
            with np.errstate(divide="ignore", invalid="ignore"):
                mean_c = np.where(n > 0, sy / n, np.nan)
                if window in mean_windows:
                    out[f"mean_{window}"] = mean_c + shift
                if window in std_windows or window in z_windows:
                    var = (self.window_sum(pre["yy"], window) - sy * mean_c) / (n - 1)
                    std = np.where(n >= 2, np.sqrt(np.clip(var, 0.0, None)), np.nan)
                    if window in std_windows:
                        out[f"std_{window}"] = std
                    if window in z_windows:
                        # A flat window (std 0) says nothing about how unusual the level is.
                        z = (level_at - (mean_c + shift)) / np.where(std > 0, std, np.nan)
                        out[f"z_{window}"] = z
                if window in slope_windows:
                    sx = self.window_sum(mp["sx"], window)
                    sxx = self.window_sum(mp["sxx"], window)
                    den = n * sxx - sx * sx
                    num = n * self.window_sum(pre["xy"], window) - sx * sy
                    ok = (n >= 2) & (den > 1e-9 * np.maximum(n * sxx, 1e-12))
                    out[f"slope_{window}"] = np.where(ok, num / np.where(ok, den, 1.0), np.nan)
        return out


def rate_of_change(
    level: np.ndarray,
    layout: Layout,
    window_ms_: int,
    positions: np.ndarray,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """``(level(t) - level(t')) / hours`` with ``t'`` the last sample at or before ``t - w``.

    ``positions`` is ``layout.at_or_before(window_ms_, rows)``; the reference sample must carry
    the metric and be at most ``4 w`` old, otherwise NaN.
    """
    valid = ~np.isnan(level)
    last_valid = np.maximum.accumulate(np.where(valid, np.arange(layout.n), -1))
    ref = np.where(positions >= 0, last_valid[np.clip(positions, 0, None)], -1)
    ref_safe = np.clip(ref, 0, None)
    ts = layout.ts_ms if rows is None else layout.ts_ms[rows]
    code = layout.code if rows is None else layout.code[rows]
    cur = level if rows is None else level[rows]
    dt_ms = ts - layout.ts_ms[ref_safe]
    ok = (ref >= 0) & (layout.code[ref_safe] == code) & (dt_ms <= 4 * window_ms_) & ~np.isnan(cur)
    with np.errstate(divide="ignore", invalid="ignore"):
        roc = (cur - level[ref_safe]) / (dt_ms / HOUR_MS)
    return np.where(ok & (dt_ms > 0), roc, np.nan)


def window_ratios(
    numerator: np.ndarray, denominator: np.ndarray, stats: WindowStats, windows: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """``sum(numerator) / sum(denominator)`` over rows of ``(t - w, t]`` carrying both."""
    both = ~np.isnan(numerator) & ~np.isnan(denominator)
    pre = stats.prefix(num=np.where(both, numerator, 0.0), den=np.where(both, denominator, 0.0))
    out = {}
    for w in windows:
        num, den = stats.window_sum(pre["num"], w), stats.window_sum(pre["den"], w)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[w] = np.where(
                den > 1e-12 * np.abs(stats.at(pre["den"][:-1])).clip(1.0), num / den, np.nan
            )
    return out
