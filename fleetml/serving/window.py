"""The raw samples the live loop keeps in memory between ticks.

A tick must not re-read weeks of the whole fleet every minute. :class:`RawWindow` holds, per
account, the samples its features can still reach: the recent *tail* (the longest window, or four
times the longest rate-of-change window) and short slices around each seasonal lag (the same time
of day on previous days, of week on previous weeks). Each tick merges the samples read since the
last one (late and duplicated samples included: a sample already held is updated in place) and
trims what no feature can reach any more.

Rows are kept sorted by (account, ts) in flat arrays under one int64 key ``code << 42 | ts``, so a
merge is a vectorised search-and-insert and the frame handed to the feature code is already
grouped by account, with the account column categorical (no strings to compare).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fleetml.features.config import DAY_MS, FeatureConfig, window_ms

_TS_BITS = 42  # epoch ms below 2**42 reach the year 2109
_TS_MASK = (1 << _TS_BITS) - 1
#: A counter's rate is taken over at most this gap (seasonal slices lie a day or more apart).
_MAX_RATE_GAP_MS = 12 * 3_600_000


def seasonal_lags_ms(config: FeatureConfig) -> list[int]:
    """The lags (ms) at which seasonal features read past samples; empty when off."""
    if not config.seasonal:
        return []
    days = {d * DAY_MS for d in range(1, int(config.seasonal_days) + 1)}
    weeks = {w * 7 * DAY_MS for w in range(1, int(config.seasonal_weeks) + 1)}
    return sorted(days | weeks)


def tail_reach_ms(config: FeatureConfig) -> int:
    """How far back from an account's newest sample its window features read."""
    windows = (
        list(config.mean_windows)
        + list(config.std_windows)
        + list(config.slope_windows)
        + list(config.z_windows)
        + list(config.ratio_windows)
        + [w for pair in config.trend_pairs for w in pair]
        + list(config.peak_windows)
        + ([config.peak_reference] if config.peak_windows else [])
    )
    reach = max([window_ms(w) for w in windows] + [0])
    roc = max([4 * window_ms(w) for w in config.roc_windows] + [0])
    # a CUSUM standardises each sample of its window against the reference window before it
    ref = window_ms(config.cusum_reference) if config.cusum_windows else 0
    cusum = max([window_ms(w) + ref for w in config.cusum_windows] + [0])
    return max(reach, roc, cusum)


class RawWindow:
    """Per-account raw samples kept between ticks (see the module docstring)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._code: dict[str, int] = {}
        self.key = np.zeros(0, dtype=np.int64)
        self.values: dict[str, np.ndarray] = {}
        #: newest sample time (epoch ms) per account code; -1 before any sample
        self.newest = np.zeros(0, dtype=np.int64)
        #: cumulative counters among the metrics: their per-minute rate ("level") is kept per row
        #: in :attr:`levels`, computed once when a sample arrives, since a row's rate needs the
        #: sample before it, which the window may have trimmed away since
        self.counters: set[str] = set()
        self.levels: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ shape
    def __len__(self) -> int:
        return int(self.key.size)

    @property
    def metrics(self) -> list[str]:
        return list(self.values)

    def codes_of(self, account_ids) -> np.ndarray:
        """Codes of ``account_ids``, registering unknown ones."""
        rows, uniq = pd.factorize(pd.Series(account_ids, dtype=object).astype(str))
        for acc in uniq:
            if acc not in self._code:
                self._code[acc] = len(self.ids)
                self.ids.append(acc)
        if len(self.newest) < len(self.ids):
            grow = np.full(len(self.ids) - len(self.newest), -1, dtype=np.int64)
            self.newest = np.r_[self.newest, grow]
        mapped = np.fromiter((self._code[a] for a in uniq), dtype=np.int64, count=len(uniq))
        return mapped[rows]

    def code(self, account_id: str) -> int | None:
        return self._code.get(str(account_id))

    @property
    def ts_ms(self) -> np.ndarray:
        return self.key & _TS_MASK

    @property
    def account_codes(self) -> np.ndarray:
        return self.key >> _TS_BITS

    # ------------------------------------------------------------------ merge and trim
    def merge(self, frame: pd.DataFrame, *, contiguous: bool = True) -> np.ndarray:
        """Add (or update) the samples of a wide frame; returns, per account code, how many of
        its samples are newer than its previous newest one (what the tick scores).

        ``contiguous`` says the frame continues what the window holds (a tail read): a counter
        sample whose previous sample is not in the frame takes it from the window. A seasonal
        slice read from further back is not contiguous: there a counter's first sample of each
        account has no rate (read one sample more than needed before the slice)."""
        before = self.newest.copy()
        if not len(frame):
            return np.zeros(len(self.ids), dtype=np.int64)
        codes = self.codes_of(frame["account_id"])
        before = np.r_[before, np.full(len(self.ids) - len(before), -1, dtype=np.int64)]
        ts = _epoch_ms(frame["ts"])
        if (ts < 0).any() or (ts > _TS_MASK).any():
            raise ValueError("sample timestamps must lie between 1970 and 2109")
        new_key = (codes << _TS_BITS) | ts
        metrics = [c for c in frame.columns if c not in ("ts", "account_id")]
        for m in metrics:
            if m not in self.values:
                self.values[m] = np.full(self.key.size, np.nan)
        # one row per key within the batch (the last one wins, as a later ingest would)
        order = np.argsort(new_key, kind="stable")
        new_key = new_key[order]
        last = np.r_[new_key[1:] != new_key[:-1], True]
        take = order[last]
        new_key = new_key[last]
        cols = {
            m: (
                frame[m].to_numpy(dtype=np.float64, na_value=np.nan)[take]
                if m in frame
                else np.full(take.size, np.nan)
            )
            for m in self.values
        }
        new_codes = (new_key >> _TS_BITS).astype(np.int64)
        new_ts = new_key & _TS_MASK
        rates = {}
        for m in self.counters:
            if m not in self.levels:  # a metric newly known as a counter: rates of what is held
                self.levels[m] = _local_rates(
                    self.values.get(m, np.full(self.key.size, np.nan)),
                    self.ts_ms,
                    self.account_codes,
                )[0]
            if m in cols and not contiguous:
                rates[m] = _local_rates(cols[m], new_ts, new_codes)
        pos = np.searchsorted(self.key, new_key)
        held = pos < self.key.size
        held[held] = self.key[pos[held]] == new_key[held]
        if held.any():
            at = pos[held]
            for m, col in cols.items():  # update held samples where the new one carries a value
                upd = col[held]
                ok = ~np.isnan(upd)
                self.values[m][at[ok]] = upd[ok]
            for m, (rate, _) in rates.items():  # a held rate only fills in, never changes
                upd = rate[held]
                ok = ~np.isnan(upd) & np.isnan(self.levels[m][at])
                self.levels[m][at[ok]] = upd[ok]
        fresh = ~held
        if fresh.any():
            at = pos[fresh]
            self.key = np.insert(self.key, at, new_key[fresh])
            for m, col in cols.items():
                self.values[m] = np.insert(self.values[m], at, col[fresh])
            for m in self.levels:
                add = rates[m][0][fresh] if m in rates else np.full(at.size, np.nan)
                self.levels[m] = np.insert(self.levels[m], at, add)
            if contiguous:  # every fresh sample's previous one is in the window now
                self._window_rates(new_key[fresh], [m for m in self.levels if m in cols])
        np.maximum.at(self.newest, new_codes, new_ts)
        newer = new_ts > before[new_codes]
        return np.bincount(new_codes[newer], minlength=len(self.ids)).astype(np.int64)

    def _window_rates(self, fresh_keys: np.ndarray, metrics: list[str]) -> None:
        """Rates of fresh counter samples from their previous sample in the window, and of the
        samples right after them (a late sample changes its successor's previous sample)."""
        from fleetml.features.latest import prev_carrying, rate_between

        pos = np.searchsorted(self.key, fresh_keys)
        codes = (fresh_keys >> _TS_BITS).astype(np.int64)
        start = np.searchsorted(self.key, codes << _TS_BITS)
        end = np.searchsorted(self.key, (codes + 1) << _TS_BITS)
        ts = self.ts_ms
        # samples appended after an account's newest one (the usual case) have no successor;
        # a successor far in time (another seasonal slice) never had this sample before it
        inner = pos + 1 < end
        for m in metrics:
            values = self.values[m]
            succ = np.zeros(0, dtype=np.int64)
            if inner.any():
                nxt = _next_carrying(values, pos[inner], end[inner])
                near = nxt >= 0
                near[near] = ts[nxt[near]] - ts[pos[inner][near]] <= _MAX_RATE_GAP_MS
                succ = nxt[near]
            succ_start = np.searchsorted(self.key, (self.key[succ] >> _TS_BITS) << _TS_BITS)
            mine = ~np.isnan(values[pos])
            redo = np.r_[pos[mine], succ]
            redo_start = np.r_[start[mine], succ_start]
            if not redo.size:
                continue
            prev = prev_carrying(values, redo, redo_start)
            # a previous sample from another seasonal slice is not the true previous one
            far = (prev >= 0) & (ts[np.clip(prev, 0, None)] < ts[redo] - _MAX_RATE_GAP_MS)
            prev = np.where(far, -1, prev)
            self.levels[m][redo] = rate_between(values, ts, redo, prev)

    def trim(self, *, reach_ms: int, lags_ms: list[int], pad_ms: int) -> int:
        """Drop samples no feature can reach: older than ``reach_ms`` before their account's
        newest sample and farther than ``pad_ms`` from every seasonal lag. Returns rows dropped."""
        if not self.key.size:
            return 0
        codes = self.account_codes
        now = self.newest[codes]
        ts = self.ts_ms
        age = now - ts
        keep = age <= reach_ms
        for lag in lags_ms:
            keep |= np.abs(age - lag) <= pad_ms
        dropped = int(self.key.size - np.count_nonzero(keep))
        if dropped:
            self.key = self.key[keep]
            for m in self.values:
                self.values[m] = self.values[m][keep]
            for m in self.levels:
                self.levels[m] = self.levels[m][keep]
        return dropped

    def copy(self) -> RawWindow:
        """An independent copy (on-demand scoring adds posted samples to a copy)."""
        other = RawWindow()
        other.ids = list(self.ids)
        other._code = dict(self._code)
        other.key = self.key.copy()
        other.values = {m: v.copy() for m, v in self.values.items()}
        other.newest = self.newest.copy()
        other.counters = set(self.counters)
        other.levels = {m: v.copy() for m, v in self.levels.items()}
        return other

    def gauge_kinds(self, kinds: dict[str, str]) -> dict[str, str]:
        """``kinds`` for a :meth:`frame` with ``levels``: every counter held as its rate is a
        gauge there."""
        out = dict(kinds)
        for m in self.values:
            if m in self.levels:
                out[m] = "gauge"
        return out

    # ------------------------------------------------------------------ views
    def frame(self, rows: np.ndarray | None = None, *, levels: bool = False) -> pd.DataFrame:
        """The held samples as the canonical wide frame, grouped by account and in time order;
        ``account_id`` is categorical. ``rows`` (positions) selects a subset, order kept. With
        ``levels`` a counter's column holds its per-minute rate (then treat it as a gauge: the
        features of a counter are those of its rate)."""
        key = self.key if rows is None else self.key[rows]
        codes = (key >> _TS_BITS).astype(np.int64)
        ts = (key & _TS_MASK).astype("datetime64[ms]")
        data = {
            "ts": pd.DatetimeIndex(ts).tz_localize("UTC"),
            "account_id": pd.Categorical.from_codes(
                codes, categories=pd.Index(self.ids, dtype=object)
            ),
        }
        for m, col in self.values.items():
            if levels and m in self.levels:
                col = self.levels[m]
            data[m] = col if rows is None else col[rows]
        return pd.DataFrame(data, copy=False)

    def rows_of(self, codes) -> np.ndarray:
        """Positions of every held sample of the accounts with these codes."""
        codes = np.unique(np.asarray(codes, dtype=np.int64))
        lo = np.searchsorted(self.key, codes << _TS_BITS)
        hi = np.searchsorted(self.key, (codes + 1) << _TS_BITS)
        if not codes.size:
            return np.zeros(0, dtype=np.int64)
        lengths = hi - lo
        starts = np.repeat(lo - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
        return np.arange(int(lengths.sum()), dtype=np.int64) + starts

    def count_between(self, codes, after_ms, before_ms) -> np.ndarray:
        """Per account ``codes[i]``: held samples strictly after ``after_ms[i]`` and strictly
        before ``before_ms[i]`` (0 where that range is empty)."""
        codes = np.asarray(codes, dtype=np.int64)
        after = np.clip(np.asarray(after_ms, dtype=np.int64), -1, _TS_MASK - 1)
        before = np.clip(np.asarray(before_ms, dtype=np.int64), 0, _TS_MASK)
        lo = np.searchsorted(self.key, (codes << _TS_BITS) + np.maximum(after + 1, 0))
        hi = np.searchsorted(self.key, (codes << _TS_BITS) + before)
        return np.maximum(hi - lo, 0)

    def newest_rows(self, codes, counts) -> np.ndarray:
        """Positions of the ``counts[i]`` newest samples of account ``codes[i]`` (time order)."""
        codes = np.asarray(codes, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.int64)
        hi = np.searchsorted(self.key, (codes + 1) << _TS_BITS)
        lo = np.searchsorted(self.key, codes << _TS_BITS)
        counts = np.minimum(counts, hi - lo)
        start = hi - counts
        offs = np.repeat(start - np.r_[0, np.cumsum(counts)[:-1]], counts)
        return np.arange(int(counts.sum()), dtype=np.int64) + offs


def _next_carrying(values: np.ndarray, pos: np.ndarray, end: np.ndarray) -> np.ndarray:
    """First row after ``pos`` (and before ``end``) where ``values`` is not NaN, or -1: a short
    probe forward, then a search over the rows carrying the metric for what is left."""
    out = np.full(pos.size, -1, dtype=np.int64)
    if not pos.size:
        return out
    cand = pos[:, None] + np.arange(1, 9)
    inside = cand < end[:, None]
    hit = inside & ~np.isnan(values[np.where(inside, cand, 0)])
    found = hit.any(axis=1)
    out[found] = cand[found, hit[found].argmax(axis=1)]
    rest = ~found & (pos + 8 < end - 1)
    if rest.any():
        carrying = np.flatnonzero(~np.isnan(values))
        j = np.searchsorted(carrying, pos[rest], side="right")
        nxt = np.where(j < carrying.size, carrying[np.clip(j, 0, carrying.size - 1)], -1)
        out[rest] = np.where((nxt >= 0) & (nxt < end[rest]), nxt, -1)
    return out


def _local_rates(values: np.ndarray, ts_ms: np.ndarray, codes: np.ndarray):
    """Per-minute counter rates between consecutive samples of the same account that carry the
    counter (rows grouped by account, in time order), as :func:`fleetml.features.counters.
    counter_rate`; and whether each row had such a previous sample."""
    from fleetml.features.counters import MINUTE_MS, counter_increase

    out = np.full(values.size, np.nan)
    had = np.zeros(values.size, dtype=bool)
    idx = np.flatnonzero(~np.isnan(values))
    if idx.size < 2:
        return out, had
    increase = counter_increase(values[idx])
    dt = np.diff(ts_ms[idx]) / MINUTE_MS
    same = codes[idx][1:] == codes[idx][:-1]
    ok = same & (dt > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = increase / dt
    out[idx[1:][ok]] = rate[ok]
    had[idx[1:][same]] = True
    return out, had


def _epoch_ms(ts: pd.Series) -> np.ndarray:
    col = pd.to_datetime(ts, utc=True)
    return col.dt.as_unit("ms").astype("int64").to_numpy() if hasattr(col, "dt") else col


def sampling_step_ms(window: RawWindow, default_ms: int = 60_000) -> int:
    """Median step between consecutive samples of one account in the window (its tail)."""
    if len(window) < 2:
        return default_ms
    ts = window.ts_ms
    same = window.account_codes[1:] == window.account_codes[:-1]
    d = np.diff(ts)[same]
    d = d[d > 0]
    return int(np.median(d)) if d.size else default_ms
