"""Vectorised timestamp parsing for file imports: ISO-8601 (naive means UTC) or epoch seconds."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd


def parse_ts_column(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Parse a column of timestamps into epoch milliseconds.

    Returns ``(ts_ms, ok)``: int64 milliseconds and a boolean mask of rows that parsed.
    Numbers are epoch seconds; strings are ISO-8601 (naive means UTC) or numeric epoch seconds.
    """
    n = len(values)
    out = np.zeros(n, dtype="int64")
    ok = np.zeros(n, dtype=bool)
    if n == 0:
        return out, ok
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = values if values.dt.tz is not None else values.dt.tz_localize("UTC")
        ok = stamps.notna().to_numpy()
        ms = stamps.dt.tz_convert("UTC").astype("datetime64[ms, UTC]")
        out[ok] = ms[ok].astype("int64").to_numpy() if ok.any() else out[ok]
        return out, ok
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        secs = values.to_numpy(dtype="float64", na_value=np.nan)
        ok = np.isfinite(secs)
        out[ok] = np.round(secs[ok] * 1000).astype("int64")
        return out, ok
    text = values.astype("str")
    secs = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    is_num = np.isfinite(secs)
    out[is_num] = np.round(secs[is_num] * 1000).astype("int64")
    ok |= is_num
    rest = ~is_num
    if rest.any():
        parsed = pd.to_datetime(text[rest], errors="coerce", utc=True, format="ISO8601")
        good = parsed.notna().to_numpy()
        idx = np.flatnonzero(rest)[good]
        out[idx] = parsed[good].astype("datetime64[ms, UTC]").astype("int64").to_numpy()
        ok[idx] = True
    return out, ok


def now_ms() -> int:
    return int(time.time() * 1000)
