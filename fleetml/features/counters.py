"""Counters (cumulative, reset to zero on restart) become per-minute rates."""

from __future__ import annotations

import numpy as np

from fleetml.features.layout import Layout

MINUTE_MS = 60_000.0


def counter_increase_between(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Increase of a counter from the reading ``before`` to the reading ``after`` (elementwise).

    The one implementation of the restart rule: a decrease means the counter restarted from zero,
    so the increase since the previous reading is the new value itself (the Prometheus
    convention); increases are never negative.
    """
    dv = after - before
    return np.clip(np.where(dv >= 0, dv, after), 0.0, None)


def counter_increase(values: np.ndarray) -> np.ndarray:
    """Increase between consecutive readings of one counter, with restarts handled (the rule of
    :func:`counter_increase_between`)."""
    return counter_increase_between(values[:-1], values[1:])


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
    increase = counter_increase(values[idx])
    dt = np.diff(layout.ts_ms[idx]) / MINUTE_MS
    same = layout.code[idx][1:] == layout.code[idx][:-1]
    ok = same & (dt > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = increase / dt
    out[idx[1:][ok]] = rate[ok]
    return out
