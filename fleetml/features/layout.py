"""Row layout shared by every feature function: account codes and a single monotonic time key.

Accounts are laid end to end on one time axis, each shifted far enough from the previous one that
no window reaches across: one vectorised rolling or ``searchsorted`` pass over the whole frame then
never mixes accounts, with no per-account Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DAY_MS = 86_400_000
HOUR_MS = 3_600_000


def ts_to_ms(ts: pd.Series | pd.Index) -> np.ndarray:
    """Epoch milliseconds (int64) of a timestamp column; naive timestamps are taken as UTC."""
    idx = pd.DatetimeIndex(ts)
    if idx.tz is None:
        idx = idx.tz_localize("UTC")
    return idx.as_unit("ms").asi8.astype(np.int64, copy=False)


def account_codes(account_id: np.ndarray) -> np.ndarray:
    """0, 1, 2... per run of equal account ids (the frame is sorted by account)."""
    n = len(account_id)
    codes = np.zeros(n, dtype=np.int64)
    if n > 1:
        codes[1:] = np.cumsum(account_id[1:] != account_id[:-1])
    return codes


@dataclass
class Layout:
    """Positions of a frame sorted by (account, ts)."""

    ts_ms: np.ndarray  # int64 epoch ms
    code: np.ndarray  # int64 account code, non-decreasing
    key_ms: np.ndarray  # int64, strictly monotonic across the whole frame
    starts: np.ndarray  # first row of each account

    @classmethod
    def build(cls, ts_ms: np.ndarray, account_id: np.ndarray, lookback_ms: int) -> Layout:
        code = account_codes(account_id)
        n = len(ts_ms)
        if n == 0:
            empty = np.zeros(0, dtype=np.int64)
            return cls(ts_ms, code, empty, empty)
        starts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
        t0 = int(ts_ms.min())
        span = int(ts_ms.max()) - t0
        stride = span + int(lookback_ms) + DAY_MS
        key = (ts_ms - t0) + code * stride
        return cls(ts_ms, code, key, starts)

    @property
    def n(self) -> int:
        return len(self.ts_ms)

    def hours_since_start(self) -> np.ndarray:
        """Hours since the account's first row (causal: that row is never after the current one)."""
        first = self.ts_ms[self.starts]
        return (self.ts_ms - np.repeat(first, np.diff(np.r_[self.starts, self.n]))) / HOUR_MS

    def at_or_before(self, lag_ms: int, rows: np.ndarray | None = None) -> np.ndarray:
        """For each row (or each of ``rows``): the latest row of the same account at or before
        ``t - lag``, or -1."""
        key = self.key_ms if rows is None else self.key_ms[rows]
        code = self.code if rows is None else self.code[rows]
        pos = np.searchsorted(self.key_ms, key - lag_ms, side="right") - 1
        safe = np.clip(pos, 0, None)
        ok = (pos >= 0) & (self.code[safe] == code)
        return np.where(ok, pos, -1)

    def nearest(self, lag_ms: int, tolerance_ms: int, rows: np.ndarray | None = None) -> np.ndarray:
        """For each row (or each of ``rows``): the row of the same account closest to
        ``t - lag`` within the tolerance, or -1.

        With ``tolerance < lag`` the row found is always strictly before ``t``.
        """
        n = self.n
        key = self.key_ms if rows is None else self.key_ms[rows]
        code = self.code if rows is None else self.code[rows]
        target = key - lag_ms
        right = np.searchsorted(self.key_ms, target, side="left")
        left = right - 1
        r_ok = right < n
        l_ok = left >= 0
        r_safe = np.clip(right, 0, n - 1)
        l_safe = np.clip(left, 0, n - 1)
        d_r = np.where(r_ok, np.abs(self.key_ms[r_safe] - target), np.iinfo(np.int64).max)
        d_l = np.where(l_ok, np.abs(self.key_ms[l_safe] - target), np.iinfo(np.int64).max)
        pick = np.where(d_l <= d_r, l_safe, r_safe)
        dist = np.minimum(d_l, d_r)
        ok = (dist <= tolerance_ms) & (self.code[pick] == code)
        return np.where(ok, pick, -1)

    def sampling_step_ms(self) -> int:
        """Median spacing of consecutive samples of one account (1 min when unknown)."""
        if self.n < 2:
            return 60_000
        d = np.diff(self.ts_ms)
        same = self.code[1:] == self.code[:-1]
        d = d[same & (d > 0)]
        if len(d) == 0:
            return 60_000
        return max(int(np.median(d)), 1)
