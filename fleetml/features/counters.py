"""Counters (cumulative, reset to zero on restart) become per-minute rates."""

from __future__ import annotations

import numpy as np

from fleetml.features.layout import Layout

MINUTE_MS = 60_000.0


def counter_rate(values: np.ndarray, layout: Layout) -> np.ndarray:
    """Per-minute rate of a cumulative counter, between consecutive samples that carry it.

    A decrease means the counter restarted from zero, so the increase since the previous sample is
    the new value itself (the Prometheus convention); rates are never negative. The first sample of
    an account has no rate (NaN).
    """
    out = np.full(layout.n, np.nan)
    idx = np.flatnonzero(~np.isnan(values))
    if len(idx) < 2:
        return out
    v = values[idx]
    dv = np.diff(v)
    dt = np.diff(layout.ts_ms[idx]) / MINUTE_MS
    same = layout.code[idx][1:] == layout.code[idx][:-1]
    increase = np.where(dv >= 0, dv, v[1:])
    increase = np.clip(increase, 0.0, None)
    ok = same & (dt > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = increase / dt
    out[idx[1:][ok]] = rate[ok]
    return out
