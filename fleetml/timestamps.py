"""The one timestamp parser, its one valid range, and the one clock.

Every timestamp fleetml takes in (an API body or query, an imported file, a CLI option, a store
read) goes through :func:`parse_ts_ms` or its vectorised twin :func:`parse_ts_column`: ISO-8601
(naive means UTC, ``Z`` accepted) or epoch seconds, inside ``[MIN_MS, MAX_MS)``. Outside that
range a value is refused with a message that states the range, before any arithmetic can
overflow (``1e306`` seconds) or pandas' nanosecond clock runs out (year 2262).
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

#: 1970-01-01T00:00:00Z: nothing before the epoch is stored (epoch milliseconds stay >= 0).
MIN_MS = 0
#: 2200-01-01T00:00:00Z, exclusive: far past any real sample, well inside pandas' clock.
MAX_MS = 7_258_118_400_000
MAX_SECONDS = MAX_MS / 1000
#: The range as a person reads it (error messages and docs/api.md).
RANGE_TEXT = "1970-01-01T00:00:00Z to 2199-12-31T23:59:59Z"

_HELP = "use ISO-8601 (2026-01-31T12:00:00Z) or epoch seconds"


def now_ms() -> int:
    """The wall clock in epoch milliseconds (UTC)."""
    return int(time.time() * 1000)


def in_range(ms: float) -> bool:
    return MIN_MS <= ms < MAX_MS


class OutOfRange(ValueError):
    """A timestamp that parsed but lies outside ``[MIN_MS, MAX_MS)``; ``clamped`` is the nearest
    end of the range (what a read bound means: nothing is stored outside it)."""

    def __init__(self, value: Any, below: bool):
        shown = value if isinstance(value, str) else repr(value)
        super().__init__(f"{shown} is outside the supported range, {RANGE_TEXT}")
        self.clamped = MIN_MS if below else MAX_MS


def _out_of_range(value: Any, ms: float) -> OutOfRange:
    return OutOfRange(value, below=ms < MIN_MS)


def _from_seconds(seconds: float, value: Any) -> int:
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a finite timestamp")
    ms = seconds * 1000.0
    if not in_range(ms):
        raise _out_of_range(value, ms)
    return round(ms)


def _from_datetime(dt: datetime, value: Any) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ms = round(dt.timestamp() * 1000)
    if not in_range(ms):
        raise _out_of_range(value, ms)
    return ms


def parse_ts_ms(value: Any) -> int:
    """Epoch milliseconds (UTC) from ISO-8601, epoch seconds or a datetime, inside the range.

    Raises ``ValueError`` with a message fit to show to a client.
    """
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"must be an ISO-8601 string or epoch seconds, got a boolean; {_HELP}")
    if isinstance(value, pd.Timestamp):
        if value is pd.NaT:
            raise ValueError("is not a timestamp (NaT)")
        stamp = value.tz_localize("UTC") if value.tzinfo is None else value
        ms = round(stamp.timestamp() * 1000)
        if not in_range(ms):
            raise _out_of_range(value.isoformat(), ms)
        return ms
    if isinstance(value, datetime):
        return _from_datetime(value, value.isoformat())
    if isinstance(value, int | float | np.integer | np.floating):
        return _from_seconds(float(value), value)
    if isinstance(value, str):
        text = value.strip()
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            dt = None
        if dt is not None:
            return _from_datetime(dt, value)
        try:
            seconds = float(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a timestamp; {_HELP}") from None
        return _from_seconds(seconds, value)
    if value is None:
        raise ValueError(f"is required; {_HELP}")
    raise ValueError(f"must be an ISO-8601 string or epoch seconds, got {type(value).__name__}")


def to_timestamp(value: Any) -> pd.Timestamp | None:
    """:func:`parse_ts_ms` as a UTC ``pd.Timestamp``; ``None`` and ``""`` pass as ``None``."""
    if value is None or (isinstance(value, str) and value == ""):
        return None
    return pd.Timestamp(parse_ts_ms(value), unit="ms", tz="UTC")


def bound_ms(value: Any) -> int | None:
    """A read bound as epoch milliseconds: :func:`parse_ts_ms`, but a bound outside the range is
    clamped to it (nothing is stored outside it) and ``None`` (no bound) passes."""
    if value is None:
        return None
    try:
        return parse_ts_ms(value)
    except OutOfRange as exc:
        return exc.clamped


def parse_ts_column(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`parse_ts_ms` over a column: ``(ts_ms, ok)``.

    ``ts_ms`` is int64 epoch milliseconds, ``ok`` marks the rows that parsed and lie in the range
    (other rows hold 0). Numbers are epoch seconds; strings are ISO-8601 or numeric epoch seconds;
    booleans are never timestamps.
    """
    n = len(values)
    out = np.zeros(n, dtype="int64")
    ok = np.zeros(n, dtype=bool)
    if n == 0 or pd.api.types.is_bool_dtype(values.dtype):
        return out, ok
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = values if values.dt.tz is not None else values.dt.tz_localize("UTC")
        present = stamps.notna().to_numpy()
        ms = np.zeros(n, dtype="float64")
        if present.any():
            utc = stamps[present].dt.tz_convert("UTC").astype("datetime64[ms, UTC]")
            ms[present] = utc.astype("int64").to_numpy()
        return _keep_in_range(ms, present, out, ok)
    if pd.api.types.is_numeric_dtype(values.dtype):
        secs = values.to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(over="ignore", invalid="ignore"):
            return _keep_in_range(secs * 1000.0, np.isfinite(secs), out, ok)
    text = values.astype("str")
    secs = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    is_num = np.isfinite(secs)
    with np.errstate(over="ignore", invalid="ignore"):
        _keep_in_range(secs * 1000.0, is_num, out, ok)
    rest = ~is_num
    if rest.any():
        parsed = pd.to_datetime(text[rest], errors="coerce", utc=True, format="ISO8601")
        good = parsed.notna().to_numpy()
        idx = np.flatnonzero(rest)[good]
        ms = parsed[good].astype("datetime64[ms, UTC]").astype("int64").to_numpy()
        inside = (ms >= MIN_MS) & (ms < MAX_MS)
        out[idx[inside]] = ms[inside]
        ok[idx[inside]] = True
    return out, ok


def _keep_in_range(ms: np.ndarray, present: np.ndarray, out: np.ndarray, ok: np.ndarray):
    with np.errstate(invalid="ignore", over="ignore"):
        inside = present & (ms >= MIN_MS) & (ms < MAX_MS)
    out[inside] = np.round(ms[inside]).astype("int64")
    ok |= inside
    return out, ok


_STEP_UNITS = (("D", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1_000))


def format_step(step: Any) -> str:
    """A sampling or forecast step the way ``--step`` and ``--horizon`` take it: ``10min``,
    ``1h``, ``1D``, ``90s`` (the largest unit that divides it; ``pd.Timedelta`` reads it back).

    ``str(pd.Timedelta)`` gives ``0 days 00:10:00``, which no option accepts back verbatim."""
    ms = int(round(pd.Timedelta(step) / pd.Timedelta(milliseconds=1)))
    if ms <= 0:
        raise ValueError(f"a step must be positive, got {step!r}")
    for unit, size in _STEP_UNITS:
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
