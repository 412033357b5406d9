"""Features at each account's last row, from raw history, without a full build.

:func:`latest_rows` returns the same values as the last row per account of
:func:`fleetml.features.build_features` (no train/serve skew), but touches only the rows that last
row depends on:

* the *tail* of each account: samples within the longest window or ``4 x`` the longest rate of
  change window of the last timestamp, sliced once into one flat array of all tails;
* for counters, the sample carrying the counter just before a row (a counter's rate needs it),
  found by a short backward probe;
* the sample nearest to each seasonal lag (one binary search per lag, all accounts at once);
* the rows of the other accounts in the account's (group, time bucket) cell, for ``peer_z``.

Every window statistic is a segment reduction (``np.add.reduceat``) over the flat tails, for all
accounts at once; per-account searches are vectorised binary searches. There is no per-account
Python loop. What still scans the whole frame is cheap and sequential: finding where each account's
rows start (one Arrow run-length pass) and, when ``seasonal_tolerance`` or ``peer_bucket`` is not
set, the frame-wide median sampling step the full build infers from the data.

Values agree with a full build to floating-point rounding: the full build takes window sums as
differences of prefix sums over the whole history, this module sums each window directly (more
accurately). One documented edge: a ratio's denominator is treated as zero below ``1e-12`` times
its cumulative sum, which the full build takes over the whole history and this module over the
tail; the two differ only for a window total between those two thresholds.

:func:`latest_matrix` returns the same values as arrays (no DataFrame: what scoring one account
on demand wants); :class:`FeatureState` keeps the latest features of every account from one pass
per sampling tick, so scoring an account on demand is a row read plus the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from fleetml.features.config import FeatureConfig
from fleetml.features.config import window_ms as _window_ms
from fleetml.features.counters import MINUTE_MS, counter_increase_between
from fleetml.features.layout import DAY_MS, HOUR_MS, Layout, ts_to_ms
from fleetml.features.trends import cusum_values, peak_values, stats_config, trend_values
from fleetml.features.windows import WindowStats
from fleetml.vocab import default_metric_kind

#: Rows probed one by one before a backward search for a counter's previous sample falls back to
#: an index of all the rows carrying the metric (only sparse counters ever get there).
_PROBE = 8
#: Below this many rows, account runs are found with numpy (no Arrow conversion).
_SMALL = 50_000
#: From this many tail rows on, ``threads > 1`` computes metrics in parallel.
_THREADED_ROWS = 200_000
_REL_FLOOR = 0.01  # same scale floors as fleetml.features.peers
_ABS_FLOOR = 1e-9


# --------------------------------------------------------------------------------------------
# account runs and vectorised searches

#: Parsing a duration costs ~40 us; scoring one account uses about twenty of them.
window_ms = lru_cache(maxsize=256)(_window_ms)


def _account_runs(account: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """First row of each run of equal account ids, and the ids of the runs."""
    if isinstance(account.dtype, pd.CategoricalDtype):
        # The live loop's window hands accounts as categorical codes: no strings to compare.
        codes = account.cat.codes.to_numpy()
        if len(codes) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        cats = np.asarray(account.cat.categories, dtype=object)
        return starts, np.asarray([str(c) for c in cats[codes[starts]]], dtype=object)
    if len(account) < _SMALL:
        ids = account.to_numpy(dtype=object)
        if len(ids) == 0:
            return np.zeros(0, dtype=np.int64), ids
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        return starts, np.asarray([str(i) for i in ids[starts]], dtype=object)
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(account.astype(str), from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
    runs = pc.run_end_encode(arr)
    ends = np.asarray(runs.run_ends.to_numpy(zero_copy_only=False), dtype=np.int64)
    starts = np.r_[0, ends[:-1]].astype(np.int64)
    ids = np.asarray(runs.values.to_pylist(), dtype=object)
    return starts, ids


def _ts_ms(ts: pd.Series) -> np.ndarray:
    """Epoch ms of the ``ts`` column: a view when it is already ``datetime64[ms, UTC]``."""
    dtype = ts.dtype
    if isinstance(dtype, pd.DatetimeTZDtype) and dtype.unit == "ms" and str(dtype.tz) == "UTC":
        return ts.array.asi8
    return ts_to_ms(ts)


def _seg_search(key_at, lo: np.ndarray, hi: np.ndarray, target, *, right: bool) -> np.ndarray:
    """Per query, the first position in ``[lo, hi)`` whose key is ``> target`` (``right``) or
    ``>= target``; ``hi`` when there is none. ``key_at(positions)`` gives non-decreasing keys
    inside each range. A binary search of all queries at once (log2 of the longest range steps)."""
    lo = lo.astype(np.int64, copy=True)
    hi = hi.astype(np.int64, copy=True)
    if len(lo) == 1:  # one account: one plain binary search over its own keys
        keys = key_at(np.arange(lo[0], hi[0]))
        side = "right" if right else "left"
        return lo + np.searchsorted(keys, target, side=side)
    active = lo < hi
    while active.any():
        mid = (lo + hi) // 2
        key = key_at(np.where(active, mid, 0))
        go_right = active & ((key <= target) if right else (key < target))
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(active & ~go_right, mid, hi)
        active = lo < hi
    return lo


def _prev_valid(values: np.ndarray, pos: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Last row before ``pos`` (and at or after ``start``) where ``values`` is not NaN, or -1."""
    out = np.full(len(pos), -1, dtype=np.int64)
    if len(pos) == 0:
        return out
    cand = pos[:, None] - np.arange(1, _PROBE + 1)
    inside = cand >= start[:, None]
    hit = inside & ~np.isnan(values[np.where(inside, cand, 0)])
    found = hit.any(axis=1)
    first = hit.argmax(axis=1)
    out[found] = cand[found, first[found]]
    rest = ~found & (pos - _PROBE > start)
    if rest.any():  # a sparse counter: index every row carrying it once
        carrying = np.flatnonzero(~np.isnan(values))
        j = np.searchsorted(carrying, pos[rest]) - 1
        prev = np.where(j >= 0, carrying[np.clip(j, 0, None)], -1)
        out[rest] = np.where(prev >= start[rest], prev, -1)
    return out


def _rate(values: np.ndarray, ts_ms: np.ndarray, pos: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """Per-minute counter rate at ``pos`` from the previous sample ``prev`` (the restart rule of
    :func:`fleetml.features.counters.counter_rate`, and the same float operations)."""
    safe = np.clip(prev, 0, None)
    cur = values[pos]
    increase = counter_increase_between(values[safe], cur)
    dt = (ts_ms[pos] - ts_ms[safe]) / MINUTE_MS
    ok = (prev >= 0) & ~np.isnan(cur) & (dt > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, increase / np.where(ok, dt, 1.0), np.nan)


#: Public names for the live loop's window, which keeps counter rates per row between ticks.
prev_carrying = _prev_valid
rate_between = _rate


def _regular_step(d: np.ndarray, starts: np.ndarray) -> int | None:
    """The step when every within-account step (``d``: ``np.diff`` of the timestamps) is one and
    the same positive value, else None: one comparison pass answers both "in time order?" and
    "sampling step?" for regularly sampled fleets."""
    if len(d) == 0:
        return None
    boundary = d[starts[1:] - 1]
    c = int(np.median(d[:: max(1, len(d) // 4096)]))
    equal = int(np.count_nonzero(d == c)) - int(np.count_nonzero(boundary == c))
    return c if c > 0 and equal == len(d) - len(boundary) else None


def sampling_step_ms(ts_ms: np.ndarray, starts: np.ndarray, d: np.ndarray | None = None) -> int:
    """Exactly :meth:`fleetml.features.layout.Layout.sampling_step_ms` of the whole frame.

    The median of the positive within-account steps, checked by counting around a candidate
    (a few comparison passes) instead of a full selection; falls back to ``np.median``.
    ``d`` is ``np.diff(ts_ms)`` when the caller has it.
    """
    n = len(ts_ms)
    if n < 2:
        return 60_000
    d = np.diff(ts_ms) if d is None else d
    boundary = d[starts[1:] - 1]  # steps from one account's last row to the next one's first
    sample = d[:: max(1, len(d) // 4096)]
    sample = sample[sample > 0]
    if len(sample) == 0:
        sample = d[d > 0]
    if len(sample) == 0:
        return 60_000

    def count(op, c) -> int:
        return int(np.count_nonzero(op(d, c))) - int(np.count_nonzero(op(boundary, c)))

    c = int(np.median(sample))
    non_pos = count(np.less_equal, 0)
    total = (len(d) - len(boundary)) - non_pos
    if total == 0:
        return 60_000
    below = count(np.less, c) - non_pos
    upto = count(np.less_equal, c) - non_pos
    lo_k, hi_k = (total - 1) // 2, total // 2  # positions of the middle value(s)
    if below <= lo_k and hi_k < upto:
        return max(c, 1)
    same = np.ones(len(d), dtype=bool)
    same[starts[1:] - 1] = False
    steps = d[same & (d > 0)]
    return max(int(np.median(steps)), 1)


# --------------------------------------------------------------------------------------------
# the raw frame seen as accounts and their tails


@dataclass
class _Accounts:
    ts_ms: np.ndarray  # all rows, int64 epoch ms
    start: np.ndarray  # first row of each account
    end: np.ndarray  # one past its last row
    ids: np.ndarray  # account ids (str objects)

    @property
    def last(self) -> np.ndarray:
        return self.end - 1

    @property
    def now(self) -> np.ndarray:
        return self.ts_ms[self.end - 1]

    def ts_search(self, target: np.ndarray, *, right: bool, lo=None) -> np.ndarray:
        lo = self.start if lo is None else lo
        if len(lo) == 1:  # one account: search a view of its timestamps
            keys = self.ts_ms[lo[0] : self.end[0]]
            return lo + np.searchsorted(keys, target, side="right" if right else "left")
        return _seg_search(lambda p: self.ts_ms[p], lo, self.end, target, right=right)


@dataclass
class _Tail:
    """Each account's rows ``[first, end)`` laid end to end in one flat array."""

    rows: np.ndarray  # flat -> frame row
    seg: np.ndarray  # flat -> account
    offset: np.ndarray  # flat position of each account's first tail row
    first: np.ndarray  # frame row of each account's first tail row
    lens: np.ndarray  # tail rows of each account

    @classmethod
    def build(cls, acc: _Accounts, first: np.ndarray) -> _Tail:
        lens = acc.end - first
        offset = np.r_[0, np.cumsum(lens)[:-1]].astype(np.int64)
        seg = np.repeat(np.arange(len(lens)), lens)
        rows = np.arange(int(lens.sum()), dtype=np.int64)
        rows += np.repeat(first - offset, lens)
        return cls(rows, seg, offset, first, lens)

    def spread(self, per_account: np.ndarray) -> np.ndarray:
        """One value per account repeated over its tail rows."""
        return np.repeat(per_account, self.lens)

    @property
    def last(self) -> np.ndarray:
        """Flat position of each account's last row."""
        return self.offset + self.lens - 1

    def flat(self, row: np.ndarray) -> np.ndarray:
        """Flat position of a frame row that lies in its account's tail."""
        return row - self.first + self.offset


def _tail_level(values: np.ndarray, counter: bool, acc: _Accounts, tail: _Tail) -> np.ndarray:
    """The level (gauge value or counter rate) at every tail row."""
    if not counter:
        return values[tail.rows]
    vals = values[tail.rows]
    seen = _last_present(vals)
    prev_flat = np.r_[-1, seen[:-1]]
    inside = prev_flat >= tail.spread(tail.offset)
    before_tail = _prev_valid(values, tail.first, acc.start)
    prev = np.where(inside, tail.rows[np.clip(prev_flat, 0, None)], tail.spread(before_tail))
    return _rate(values, acc.ts_ms, tail.rows, prev)


def _level_at(
    values: np.ndarray, counter: bool, acc: _Accounts, rows: np.ndarray, account: np.ndarray
) -> np.ndarray:
    """The level at arbitrary frame rows (``-1``: no row, NaN) of the given accounts."""
    safe = np.clip(rows, 0, None)
    if counter:
        prev = _prev_valid(values, safe, acc.start[account])
        out = _rate(values, acc.ts_ms, safe, prev)
    else:
        out = values[safe]
    return np.where(rows >= 0, out, np.nan)


# --------------------------------------------------------------------------------------------
# window statistics at the last row


class _Windows:
    """Sums over the trailing windows ``(now - w, now]`` of every account, by segment reduction.

    The windows of one account are nested and end at the same row, so the tail is cut into pieces
    at each window's first row; one ``reduceat`` sums every piece and a reversed cumulative sum
    over the pieces gives every window. Sums that depend only on where a metric is present
    (counts, hours) are kept for the last presence mask seen: dense metrics share them.
    """

    def __init__(self, acc: _Accounts, tail: _Tail, windows: list[str]):
        self.windows = sorted(set(windows), key=window_ms, reverse=True)
        cuts = [tail.offset]
        for w in self.windows:
            row = acc.ts_search(acc.now - window_ms(w), right=True, lo=tail.first)
            cuts.append(tail.flat(row))
        self.pieces = np.stack(cuts, axis=1)  # (accounts, 1 + windows), non-decreasing per row
        flat = self.pieces.ravel()
        self._flat = flat
        self._empty = np.r_[flat[1:], len(tail.rows)] <= flat
        self.index = {w: i + 1 for i, w in enumerate(self.windows)}
        # Hours relative to the account's last row keep the slope sums small.
        self.hours = (acc.ts_ms[tail.rows] - tail.spread(acc.now)) / HOUR_MS
        self.origin = (acc.now - acc.ts_ms[acc.start]) / HOUR_MS  # full build's hour origin
        self._masks: list[tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]] = []

    def sums(self, quantities: np.ndarray) -> np.ndarray:
        """``(q, accounts, 1 + windows)``: sums of each quantity over each window."""
        s = np.add.reduceat(quantities, self._flat, axis=1)
        s[:, self._empty] = 0.0
        s = s.reshape(len(quantities), *self.pieces.shape)
        return np.cumsum(s[:, :, ::-1], axis=2)[:, :, ::-1]

    def mask_sums(self, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hours where present (0 elsewhere), and the window sums of count, hours, hours^2.

        Kept for the last few presence masks seen: metrics sampled together (the gauges of one
        sample, the counters) share them."""
        for mask, found in self._masks:
            if np.array_equal(mask, valid):
                return found
        x = np.where(valid, self.hours, 0.0)
        q = np.empty((3, len(x)))
        np.copyto(q[0], valid)
        q[1] = x
        np.multiply(x, x, out=q[2])
        found = (x, self.sums(q))
        self._masks = [(valid, found), *self._masks[:3]]
        return found


def _level_stats(
    level: np.ndarray, tail: _Tail, win: _Windows, config: FeatureConfig, value: np.ndarray
) -> dict[str, np.ndarray]:
    """``mean_<w>``, ``std_<w>``, ``slope_<w>``, ``z_<w>`` of one metric (see WindowStats)."""
    valid = ~np.isnan(level)
    shift = np.fmax.reduceat(level, tail.offset)  # any in-tail value keeps the sums small
    shift = np.nan_to_num(shift)
    x, msums = win.mask_sums(valid)
    want_sq = bool(config.std_windows or config.z_windows)
    want_xy = bool(config.slope_windows)
    q = np.empty((1 + want_sq + want_xy, len(level)))
    y = q[0]
    np.subtract(level, tail.spread(shift), out=y)
    np.copyto(y, 0.0, where=~valid)
    if want_sq:
        np.multiply(y, y, out=q[1])
    if want_xy:
        np.multiply(x, y, out=q[-1])
    sums = win.sums(q)
    out: dict[str, np.ndarray] = {}
    wanted = config.mean_windows + config.std_windows + config.slope_windows + config.z_windows
    for w in dict.fromkeys(wanted):
        k = win.index[w]
        n, sx, sxx = np.rint(msums[0, :, k]), msums[1, :, k], msums[2, :, k]
        sy = sums[0, :, k]
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_c = np.where(n > 0, sy / n, np.nan)
            if w in config.mean_windows:
                out[f"mean_{w}"] = mean_c + shift
            if w in config.std_windows or w in config.z_windows:
                var = (sums[1, :, k] - sy * mean_c) / (n - 1)
                std = np.where(n >= 2, np.sqrt(np.clip(var, 0.0, None)), np.nan)
                if w in config.std_windows:
                    out[f"std_{w}"] = std
                if w in config.z_windows:
                    out[f"z_{w}"] = (value - (mean_c + shift)) / np.where(std > 0, std, np.nan)
            if w in config.slope_windows:
                sxy = sums[-1, :, k]
                den = n * sxx - sx * sx
                num = n * sxy - sx * sy
                # The full build's degeneracy test uses hours since the account's first row.
                c = win.origin
                sxx_abs = sxx + 2 * c * sx + n * c * c
                ok = (n >= 2) & (den > 1e-9 * np.maximum(n * sxx_abs, 1e-12))
                out[f"slope_{w}"] = np.where(ok, num / np.where(ok, den, 1.0), np.nan)
    return out


def _last_present(level: np.ndarray) -> np.ndarray:
    """Flat position of the last row at or before each row where ``level`` is not NaN, or -1."""
    return np.maximum.accumulate(np.where(np.isnan(level), -1, np.arange(len(level))))


def _present_at_or_before(level: np.ndarray, pos: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Last flat position in ``[start, pos]`` where ``level`` is not NaN, or -1 (``pos`` may be
    below ``start``). A short probe back, then one scan of the tail for sparse levels."""
    out = np.full(len(pos), -1, dtype=np.int64)
    cand = pos[:, None] - np.arange(_PROBE)
    inside = cand >= start[:, None]
    hit = inside & ~np.isnan(level[np.where(inside, cand, 0)])
    found = hit.any(axis=1)
    out[found] = cand[found, hit.argmax(axis=1)[found]]
    rest = ~found & (pos - _PROBE >= start)
    if rest.any():
        seen = _last_present(level)[pos[rest]]
        out[rest] = np.where(seen >= start[rest], seen, -1)
    return out


def _rate_of_change(level: np.ndarray, acc: _Accounts, tail: _Tail, window: str) -> np.ndarray:
    """``roc_<w>``: the reference sample is the last one with a level at or before ``now - w``,
    at most ``4 w`` old; the tail reaches ``4 w`` back, so an older one means NaN anyway."""
    w = window_ms(window)
    pos = acc.ts_search(acc.now - w, right=True) - 1
    ref = _present_at_or_before(level, tail.flat(pos), tail.offset)  # -1 unless in the tail
    ok = ref >= 0
    ref_safe = np.clip(ref, 0, None)
    cur = level[tail.last]
    dt_ms = acc.now - acc.ts_ms[tail.rows[ref_safe]]
    ok &= (dt_ms <= 4 * w) & ~np.isnan(cur) & (dt_ms > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        roc = (cur - level[ref_safe]) / (dt_ms / HOUR_MS)
    return np.where(ok, roc, np.nan)


def _ratios(
    num: np.ndarray, den: np.ndarray, win: _Windows, windows: tuple[str, ...]
) -> dict[str, np.ndarray]:
    both = ~np.isnan(num) & ~np.isnan(den)
    sums = win.sums(np.stack([np.where(both, num, 0.0), np.where(both, den, 0.0)]))
    floor = 1e-12 * np.abs(sums[1, :, 0]).clip(1.0)  # tail total (full build: history total)
    out = {}
    for w in windows:
        k = win.index[w]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[w] = np.where(sums[1, :, k] > floor, sums[0, :, k] / sums[1, :, k], np.nan)
    return out


# --------------------------------------------------------------------------------------------
# seasonal lags and peers at the last row


def _nearest(acc: _Accounts, lags_ms: np.ndarray, tol_ms: int) -> np.ndarray:
    """``(lags, accounts)``: row of each account nearest to ``now - lag`` within the tolerance
    (ties: the earlier row), or -1. All lags and accounts in one search."""
    n_lags, n_acc = len(lags_ms), len(acc.start)
    target = (acc.now[None, :] - lags_ms[:, None]).ravel()  # lag-major
    start, end = np.tile(acc.start, n_lags), np.tile(acc.end, n_lags)
    if n_acc == 1:
        right = start + np.searchsorted(acc.ts_ms[start[0] : end[0]], target, side="left")
    else:
        right = _seg_search(lambda p: acc.ts_ms[p], start, end, target, right=False)
    left = right - 1
    big = np.iinfo(np.int64).max
    d_r = np.where(right < end, np.abs(acc.ts_ms[np.minimum(right, end - 1)] - target), big)
    d_l = np.where(left >= start, np.abs(acc.ts_ms[np.maximum(left, start)] - target), big)
    pick = np.where(d_l <= d_r, left, right)
    return np.where(np.minimum(d_l, d_r) <= tol_ms, pick, -1).reshape(n_lags, n_acc)


def _seasonal_lags(acc: _Accounts, config: FeatureConfig, step_ms) -> tuple[np.ndarray, int]:
    """Rows at every seasonal lag, ``(daily lags + weekly lags, accounts)``, and how many of
    them are daily."""
    tol = window_ms(config.seasonal_tolerance) if config.seasonal_tolerance else step_ms() // 2
    if tol >= DAY_MS:
        raise ValueError("seasonal_tolerance must be shorter than a day")
    daily = [k * DAY_MS for k in range(1, config.seasonal_days + 1)]
    weekly = [k * 7 * DAY_MS for k in range(1, config.seasonal_weeks + 1)]
    unique = np.array(sorted(set(daily + weekly)), dtype=np.int64)
    rows = _nearest(acc, unique, tol)
    order = np.searchsorted(unique, np.array(daily + weekly, dtype=np.int64))
    return rows[order], len(daily)


def _seasonal_residual(
    values, counter, acc: _Accounts, lag_rows: np.ndarray, n_daily: int, min_weeks: int, cur
) -> np.ndarray:
    n_lags, n_acc = lag_rows.shape
    account = np.tile(np.arange(n_acc), n_lags)
    vals = _level_at(values, counter, acc, lag_rows.ravel(), account).reshape(n_lags, n_acc)

    def mean_over(block):
        if len(block) == 0:
            return np.zeros(n_acc), np.zeros(n_acc)
        return np.nansum(block, axis=0), (~np.isnan(block)).sum(axis=0)

    d_sum, d_cnt = mean_over(vals[:n_daily])
    w_sum, w_cnt = mean_over(vals[n_daily:])
    with np.errstate(divide="ignore", invalid="ignore"):
        baseline = np.where(
            (w_cnt >= max(min_weeks, 1)) & (w_cnt > 0),
            w_sum / w_cnt,
            np.where(d_cnt > 0, d_sum / d_cnt, np.nan),
        )
    return cur - baseline


def _bucket(ts_ms: np.ndarray, bucket_ms: int) -> np.ndarray:
    return np.floor((ts_ms + bucket_ms // 2) / bucket_ms).astype(np.int64)


@dataclass
class _PeerCells:
    """Rows of every (group, bucket) cell that holds some account's last row."""

    rows: np.ndarray  # frame rows in the cells
    account: np.ndarray  # their accounts
    cell: np.ndarray  # their cell
    last_cell: np.ndarray  # cell of each account's last row, -1 without a group


def _peer_cells(acc: _Accounts, group: np.ndarray, bucket_ms: int) -> _PeerCells:
    """``group``: group code per account (-1: none)."""
    last_bucket = _bucket(acc.now, bucket_ms)
    has = group >= 0
    cells = pd.DataFrame({"g": group[has], "b": last_bucket[has]}).drop_duplicates()
    cell_g, cell_b = cells["g"].to_numpy(), cells["b"].to_numpy()
    last_cell = np.full(len(group), -1, dtype=np.int64)
    if len(cells):
        lookup = pd.MultiIndex.from_arrays([cell_g, cell_b])
        last_cell[has] = lookup.get_indexer(
            pd.MultiIndex.from_arrays([group[has], last_bucket[has]])
        )
    # Every (account of the group, cell) pair: usually one cell per group, so about one pair
    # per account; stale accounts in many buckets add pairs.
    members = pd.DataFrame({"g": group, "a": np.arange(len(group))})
    pairs = members[has].merge(pd.DataFrame({"g": cell_g, "cell": np.arange(len(cell_g))}), on="g")
    pa_, pc_ = pairs["a"].to_numpy(), pairs["cell"].to_numpy()
    b = cell_b[pc_]

    def key(p):
        return _bucket(acc.ts_ms[p], bucket_ms)

    lo = _seg_search(key, acc.start[pa_], acc.end[pa_], b, right=False)
    hi = _seg_search(key, lo, acc.end[pa_], b, right=True)
    lens = hi - lo
    rep = np.repeat(np.arange(len(pa_)), lens)
    offs = np.r_[0, np.cumsum(lens)[:-1]]
    rows = np.arange(int(lens.sum())) - offs[rep] + lo[rep]
    return _PeerCells(rows, pa_[rep], pc_[rep], last_cell)


def _peer_z(level_rows: np.ndarray, cur: np.ndarray, cells: _PeerCells, min_accounts: int):
    """Robust z of each account's last level against its cell (as fleetml.features.peers)."""
    out = np.full(len(cur), np.nan)
    if len(cells.rows) == 0:
        return out
    values = pd.Series(level_rows, copy=False)
    grouped = values.groupby(cells.cell, sort=True)
    md = grouped.median()
    cnt = grouped.count()
    mad = (values - md.reindex(cells.cell).to_numpy()).abs().groupby(cells.cell, sort=True).median()
    has = cells.last_cell >= 0
    c = cells.last_cell[has]
    m = md.reindex(c).to_numpy()
    scale = np.maximum(
        1.4826 * mad.reindex(c).to_numpy(), np.maximum(_REL_FLOOR * np.abs(m), _ABS_FLOOR)
    )
    z = (cur[has] - m) / scale
    out[has] = np.where(cnt.reindex(c).to_numpy() >= min_accounts, z, np.nan)
    return out


# --------------------------------------------------------------------------------------------
# the public entry point


@dataclass
class LatestMatrix:
    """Features of each account's last row as arrays (no DataFrame to build: scoring one account
    on demand spends most of its time in pandas otherwise)."""

    account_id: np.ndarray  # str objects, in the frame's account order
    ts_ms: np.ndarray  # int64 epoch ms of each account's last row
    values: np.ndarray  # (accounts, features) float64
    columns: list[str]  # feature names, as planned_columns

    def to_frame(self) -> pd.DataFrame:
        """The :func:`latest_rows` frame: ``ts``, ``account_id``, features, ordered by account."""
        result = pd.DataFrame(self.values, columns=self.columns, copy=False)
        ids = self.account_id.astype(str)
        result.insert(0, "account_id", pd.array(ids, dtype="str"))
        now = pd.DatetimeIndex(self.ts_ms.astype("datetime64[ms]")).tz_localize("UTC")
        result.insert(0, "ts", now)
        order = np.argsort(ids, kind="stable")
        if not np.array_equal(order, np.arange(len(order))):
            result = result.iloc[order].reset_index(drop=True)
        return result


def latest_rows(
    frame: pd.DataFrame,
    *,
    kinds: Mapping[str, str] | None = None,
    groups: Mapping[str, str] | None = None,
    config: FeatureConfig | None = None,
) -> pd.DataFrame:
    """Features of each account's last row, equal to the last rows of a full build.

    Same arguments as :func:`fleetml.features.build_features`; returns one row per account,
    ordered by account id, with the columns a full build would have. Cost grows with the number
    of accounts and the rows in their longest window, not with the history length (except two
    cheap sequential passes, see the module docstring).
    """
    if len(frame) == 0:
        from fleetml.features.builder import build_features

        if "account_id" in frame.columns and "ts" in frame.columns:
            return build_features(frame, kinds=kinds, groups=groups, config=config)
    return latest_matrix(frame, kinds=kinds, groups=groups, config=config).to_frame()


def latest_matrix(
    frame: pd.DataFrame,
    *,
    kinds: Mapping[str, str] | None = None,
    groups: Mapping[str, str] | None = None,
    config: FeatureConfig | None = None,
    threads: int = 1,
) -> LatestMatrix:
    """:func:`latest_rows` as arrays, accounts in the frame's order (sorted when it was not
    grouped by account). ``threads > 1`` computes metrics in parallel threads on large frames
    (the live loop's worker; the values do not depend on it)."""
    from fleetml.features.builder import (  # the builder imports this module lazily
        ID_COLUMNS,
        _metric_feature_names,
        _ratio_pairs,
        metric_columns,
        planned_columns,
    )

    config = config or FeatureConfig()
    kinds = dict(kinds or {})
    for col in ID_COLUMNS:
        if col not in frame.columns:
            raise ValueError(f"metrics frame has no {col!r} column; columns: {list(frame.columns)}")
    metrics = metric_columns(frame)
    peers = bool(groups) and config.peers
    names = planned_columns(metrics, config, peers=peers)
    if len(frame) == 0:
        none = np.zeros(0, dtype=np.int64)
        return LatestMatrix(np.zeros(0, dtype=object), none, np.zeros((0, len(names))), names)

    ts_ms = _ts_ms(frame["ts"])
    starts, ids = _account_runs(frame["account_id"])
    d = np.diff(ts_ms)
    regular = _regular_step(d, starts)
    backwards = 0
    if regular is None:
        backwards = np.count_nonzero(d < 0) - np.count_nonzero(d[starts[1:] - 1] < 0)
    if backwards or len(set(ids)) != len(ids):
        # Not grouped by account or not in time order: sort once, then the fast path applies.
        codes, _ = pd.factorize(frame["account_id"].astype(str))
        order = np.lexsort((ts_ms, codes))
        frame = frame.iloc[order].reset_index(drop=True)
        return latest_matrix(frame, kinds=kinds, groups=groups, config=config, threads=threads)

    acc = _Accounts(ts_ms, starts, np.r_[starts[1:], len(ts_ms)].astype(np.int64), ids)
    per_metric = _metric_feature_names(config, peers=peers)
    ratio_pairs = _ratio_pairs(metrics, config)

    step_cache: list[int] = []

    def step_ms() -> int:
        if not step_cache:
            step = regular if regular is not None else sampling_step_ms(ts_ms, starts, d)
            step_cache.append(step)
        return step_cache[0]

    stats_cfg = stats_config(config)  # plus the windows the trend pairs read
    stat_windows = list(
        stats_cfg.mean_windows + stats_cfg.std_windows + config.slope_windows + config.z_windows
    )
    ratio_windows = list(config.ratio_windows) if ratio_pairs else []
    # A CUSUM sums standardised values over its window, each against its own reference window.
    cusum_reach = [window_ms(w) + window_ms(config.cusum_reference) for w in config.cusum_windows]
    reach = max(
        [window_ms(w) for w in stat_windows + ratio_windows]
        + [4 * window_ms(w) for w in config.roc_windows]
        + cusum_reach
        + [window_ms(w) for w in config.peak_windows]
        + [0]
    )
    tail = _Tail.build(acc, acc.ts_search(acc.now - reach, right=False))
    win = _Windows(acc, tail, stat_windows + ratio_windows)
    last_flat = tail.last
    tail_layout = tail_stats = None
    if config.cusum_windows or config.peak_windows:
        # The batch CUSUM and peaks over the tails laid end to end: every row they read is in
        # the tail.
        tail_layout = Layout.build(acc.ts_ms[tail.rows], tail.seg, config.lookback_ms())
        tail_stats = WindowStats(tail_layout, last_flat)

    if config.seasonal:
        lag_rows, n_daily = _seasonal_lags(acc, config, step_ms)
    if peers:
        group_names = pd.Series(acc.ids).map(dict(groups)).to_numpy(dtype=object)
        group_code, _ = pd.factorize(group_names, use_na_sentinel=True)
        bucket = window_ms(config.peer_bucket) if config.peer_bucket else step_ms()
        cells = _peer_cells(acc, group_code.astype(np.int64), bucket)

    out = np.full((len(acc.start), len(names)), np.nan)
    levels: dict[str, np.ndarray] = {}
    width = len(per_metric)

    def one_metric(i: int, m: str) -> None:
        values = frame[m].to_numpy(dtype=np.float64, na_value=np.nan)
        counter = str(kinds.get(m) or default_metric_kind(m)) == "counter"
        level = _tail_level(values, counter, acc, tail)
        levels[m] = level
        cur = level[last_flat]
        cols = {"value": cur}
        cols.update(_level_stats(level, tail, win, stats_cfg, cur))
        cols.update(trend_values(cols, config))
        if tail_layout is not None:
            cols.update(peak_values(level, tail_stats, config, cols))
            cols.update(cusum_values(level, tail_layout, config, last_flat))
        for w in config.roc_windows:
            cols[f"roc_{w}"] = _rate_of_change(level, acc, tail, w)
        if config.seasonal:
            cols["seasonal_resid"] = _seasonal_residual(
                values, counter, acc, lag_rows, n_daily, config.seasonal_min_weeks, cur
            )
        if peers:
            peer_levels = _level_at(values, counter, acc, cells.rows, cells.account)
            cols["peer_z"] = _peer_z(peer_levels, cur, cells, config.peer_min_accounts)
        for j, name in enumerate(per_metric):
            out[:, i * width + j] = cols[name]

    if threads > 1 and len(tail.rows) >= _THREADED_ROWS:
        # numpy releases the GIL on large arrays: metrics in parallel threads (each writes its
        # own columns); step_ms is cached first so no thread computes it twice
        from concurrent.futures import ThreadPoolExecutor

        step_ms()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(one_metric, range(len(metrics)), metrics))
    else:
        for i, m in enumerate(metrics):
            one_metric(i, m)
    col = len(metrics) * width
    for _, num, den in ratio_pairs:
        ratios = _ratios(levels[num], levels[den], win, config.ratio_windows)
        for w in config.ratio_windows:
            out[:, col] = ratios[w]
            col += 1

    return LatestMatrix(acc.ids, acc.now, out, names)


class FeatureState:
    """Each account's latest features, kept in memory for the live loop.

    :meth:`refresh` runs one :func:`latest_matrix` pass over the raw recent frame (every account
    at once, the same values as a full build's last rows); :meth:`row` then reads one account's
    features without touching raw data, so scoring an account on demand costs the read plus the
    model. Features are as fresh as the last refresh (the live loop refreshes on every sampling
    tick); to include samples that arrived since, refresh again or use :func:`latest_matrix` on the
    account's own rows.

    Parameters are those of :func:`latest_features`.
    """

    def __init__(
        self,
        *,
        kinds: Mapping[str, str] | None = None,
        groups: Mapping[str, str] | None = None,
        config: FeatureConfig | None = None,
    ):
        self.kinds = dict(kinds or {})
        self.groups = dict(groups or {})
        self.config = config or FeatureConfig()
        self.matrix: LatestMatrix | None = None
        self._where: dict[str, int] = {}
        self._take: dict[tuple[str, ...], np.ndarray] = {}

    def refresh(self, frame: pd.DataFrame) -> LatestMatrix:
        """Recompute every account's latest features from the raw frame."""
        self.matrix = latest_matrix(
            frame, kinds=self.kinds, groups=self.groups or None, config=self.config
        )
        self._where = {str(a): i for i, a in enumerate(self.matrix.account_id)}
        self._take = {}
        return self.matrix

    def row(self, account_id: str, columns: list[str] | tuple[str, ...] | None = None):
        """``(ts_ms, features)`` of one account: a float64 row of ``columns`` (default: all, in
        :attr:`LatestMatrix.columns` order), ready for a model's ``score_array``."""
        if self.matrix is None:
            raise RuntimeError("FeatureState has no features yet: call refresh(frame) first")
        i = self._where.get(str(account_id))
        if i is None:
            raise KeyError(
                f"account {account_id!r} had no samples in the last refresh "
                f"({len(self._where)} accounts); refresh with a frame that holds it"
            )
        if columns is None:
            return int(self.matrix.ts_ms[i]), self.matrix.values[i : i + 1]
        key = tuple(columns)
        take = self._take.get(key)
        if take is None:
            index = {c: j for j, c in enumerate(self.matrix.columns)}
            missing = [c for c in key if c not in index]
            if missing:
                raise KeyError(f"features {missing} are not built from this frame and config")
            take = self._take[key] = np.array([index[c] for c in key])
        return int(self.matrix.ts_ms[i]), self.matrix.values[i : i + 1, take]
