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
    )
    reach = max([window_ms(w) for w in windows] + [0])
    roc = max([4 * window_ms(w) for w in config.roc_windows] + [0])
    return max(reach, roc)


class RawWindow:
    """Per-account raw samples kept between ticks (see the module docstring)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._code: dict[str, int] = {}
        self.key = np.zeros(0, dtype=np.int64)
        self.values: dict[str, np.ndarray] = {}
        #: newest sample time (epoch ms) per account code; -1 before any sample
        self.newest = np.zeros(0, dtype=np.int64)

    # ------------------------------------------------------------------ shape
    def __len__(self) -> int:
        return int(self.key.size)

    @property
    def metrics(self) -> list[str]:
        return list(self.values)

    def codes_of(self, account_ids) -> np.ndarray:
        """Codes of ``account_ids``, registering unknown ones."""
        ids = pd.Series(account_ids, dtype=object).astype(str)
        uniq = pd.unique(ids)
        for acc in uniq:
            if acc not in self._code:
                self._code[acc] = len(self.ids)
                self.ids.append(acc)
        if len(self.newest) < len(self.ids):
            grow = np.full(len(self.ids) - len(self.newest), -1, dtype=np.int64)
            self.newest = np.r_[self.newest, grow]
        mapping = {a: self._code[a] for a in uniq}
        return ids.map(mapping).to_numpy(dtype=np.int64)

    def code(self, account_id: str) -> int | None:
        return self._code.get(str(account_id))

    @property
    def ts_ms(self) -> np.ndarray:
        return self.key & _TS_MASK

    @property
    def account_codes(self) -> np.ndarray:
        return self.key >> _TS_BITS

    # ------------------------------------------------------------------ merge and trim
    def merge(self, frame: pd.DataFrame) -> np.ndarray:
        """Add (or update) the samples of a wide frame; returns, per account code, how many of
        its samples are newer than its previous newest one (what the tick scores)."""
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
        pos = np.searchsorted(self.key, new_key)
        held = pos < self.key.size
        held[held] = self.key[pos[held]] == new_key[held]
        for m, col in cols.items():  # update held samples where the new one carries a value
            if held.any():
                upd = col[held]
                ok = ~np.isnan(upd)
                target = self.values[m]
                target[pos[held][ok]] = upd[ok]
        fresh = ~held
        if fresh.any():
            at = pos[fresh]
            self.key = np.insert(self.key, at, new_key[fresh])
            for m, col in cols.items():
                self.values[m] = np.insert(self.values[m], at, col[fresh])
        new_codes = (new_key >> _TS_BITS).astype(np.int64)
        new_ts = new_key & _TS_MASK
        np.maximum.at(self.newest, new_codes, new_ts)
        newer = new_ts > before[new_codes]
        return np.bincount(new_codes[newer], minlength=len(self.ids)).astype(np.int64)

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
        return dropped

    def forget(self, account_ids) -> None:
        """Drop every sample of these accounts (retired accounts)."""
        codes = [self._code[a] for a in account_ids if a in self._code]
        if not codes or not self.key.size:
            return
        keep = ~np.isin(self.account_codes, codes)
        self.key = self.key[keep]
        for m in self.values:
            self.values[m] = self.values[m][keep]
        self.newest[codes] = -1

    # ------------------------------------------------------------------ views
    def frame(self, rows: np.ndarray | None = None) -> pd.DataFrame:
        """The held samples as the canonical wide frame, grouped by account and in time order;
        ``account_id`` is categorical. ``rows`` (positions) selects a subset, order kept."""
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
