"""Slow-trend and change-point features: moving-average crossovers and one-sided CUSUMs.

Some failures build over a day or more (a memory leak, a session that decays): the level moves
by a fraction of its usual spread per hour, which a one-hour slope or a z-score of the current
value barely sees. Two families (``trend_pairs`` and ``cusum_windows``), off in
:class:`FeatureConfig` by default and on in the ``RISK_FEATURES`` preset (a ``--features`` file):

* ``<metric>__trend_<fast>_<slow>``: ``(mean_fast - mean_slow) / std_slow``, the difference of a
  fast and a slow moving average in units of the slow window's spread. Boxcar averages rather
  than exponential ones: they are exact window sums, so the serving path
  (:mod:`fleetml.features.latest`) equals the batch build without replaying the whole history.
* ``<metric>__cusum_up_<w>`` and ``__cusum_down_<w>``: each sample's level is standardised
  against the trailing ``cusum_reference`` window *at that sample*,
  ``z_u = (level_u - mean_ref(u)) / std_ref(u)``; the feature is the one-sided CUSUM
  ``max(0, max over s in (t - w, t] of sum_{u = s..t} (+-z_u - k))``, i.e. the classic
  ``S_t = max(0, S_{t-1} + z_t - k)`` restarted at the window's start. Samples without a
  standardised value (a flat reference window, a missing level) add nothing; NaN when the
  window holds none.

A third family (``peak_windows``) stands in for the anomaly detector's recent maxima as risk
inputs: ``<metric>__peak_z_<w>`` is ``(max of the level over (t - w, t] - mean_ref(t)) /
std_ref(t)`` and ``__trough_z_<w>`` the same with the minimum, against the trailing
``peak_reference`` window at ``t``. The detector scores each sample against the account's own
recent behaviour; the largest such excursion of the last hours is what its recent maximum
summarises. Standardising against the reference at ``t`` (not at each sample, as the CUSUM
does) keeps the features within the reference window: serving's live window need not grow.

Every value at ``t`` uses samples at or before ``t`` only, and everything is one vectorised
pass over the frame-wide time key (:mod:`fleetml.features.layout`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from fleetml.features.config import FeatureConfig, window_ms
from fleetml.features.layout import Layout
from fleetml.features.windows import WindowStats


def trend_names(config: FeatureConfig) -> list[str]:
    """Per-metric feature names of the trend and CUSUM families, in column order."""
    names = [f"trend_{fast}_{slow}" for fast, slow in config.trend_pairs]
    for w in config.cusum_windows:
        names += [f"cusum_up_{w}", f"cusum_down_{w}"]
    for w in config.peak_windows:
        names += [f"peak_z_{w}", f"trough_z_{w}"]
    return names


def stats_config(config: FeatureConfig) -> FeatureConfig:
    """``config`` with the mean and std windows the trend pairs and peak features read added
    (the window statistics of both paths then compute them; columns not planned are never
    written)."""
    if not config.trend_pairs and not config.peak_windows:
        return config
    ref = (config.peak_reference,) if config.peak_windows else ()
    means = tuple(
        dict.fromkeys(config.mean_windows + tuple(w for p in config.trend_pairs for w in p) + ref)
    )
    stds = tuple(dict.fromkeys(config.std_windows + tuple(s for _, s in config.trend_pairs) + ref))
    return replace(config, mean_windows=means, std_windows=stds)


def trend_values(stats: dict[str, np.ndarray], config: FeatureConfig) -> dict[str, np.ndarray]:
    """The ``trend_<fast>_<slow>`` columns from window statistics computed with
    :func:`stats_config` (``mean_<w>`` and ``std_<w>`` entries)."""
    out = {}
    for fast, slow in config.trend_pairs:
        std = stats[f"std_{slow}"]
        with np.errstate(divide="ignore", invalid="ignore"):
            # A flat slow window says nothing about how far the fast mean has moved.
            out[f"trend_{fast}_{slow}"] = (
                stats[f"mean_{fast}"] - stats[f"mean_{slow}"]
            ) / np.where(std > 0, std, np.nan)
    return out


def peak_values(
    level: np.ndarray, stats: WindowStats, config: FeatureConfig, cols: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``peak_z_<w>`` and ``trough_z_<w>`` of one metric at the target rows of ``stats``, from
    window statistics computed with :func:`stats_config` (``cols``: ``mean_<ref>`` and
    ``std_<ref>`` at those rows); see the module docstring."""
    if not config.peak_windows:
        return {}
    ref = config.peak_reference
    mean, std = cols[f"mean_{ref}"], cols[f"std_{ref}"]
    scale = np.where(std > 0, std, np.nan)  # a flat baseline: no unit to measure excursions in
    layout, rows = stats.layout, stats.rows
    few = rows is not None and len(rows) * 64 <= layout.n
    out = {}
    for w in config.peak_windows:
        if few:
            high, low = _window_extremes(level, stats, w)
        else:
            high, low = _rolling_extremes(level, layout, w)
            high, low = stats.at(high), stats.at(low)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"peak_z_{w}"] = (high - mean) / scale
            out[f"trough_z_{w}"] = (low - mean) / scale
    return out


def _rolling_extremes(values: np.ndarray, layout: Layout, window: str):
    """Maximum and minimum of ``values`` (NaN skipped) over ``(t - w, t]`` at every row."""
    key = pd.to_timedelta(layout.key_ms, unit="ms")
    roll = pd.Series(values, index=key, copy=False).rolling(f"{window_ms(window)}ms")
    return roll.max().to_numpy(), roll.min().to_numpy()


def _window_extremes(values: np.ndarray, stats: WindowStats, window: str):
    """Maximum and minimum of ``values`` (NaN skipped) over the window of each target row."""
    rows = stats.rows
    prev = stats.previous(window)  # row before the window, or n: the account's first row
    lo = np.where(prev == stats.layout.n, stats.account_start[rows], prev + 1)
    bounds = np.column_stack([lo, rows + 1]).ravel()
    padded = np.r_[values, np.nan]  # a sentinel keeps row + 1 in range
    with np.errstate(invalid="ignore"):
        high = np.fmax.reduceat(padded, bounds)[::2]
        low = np.fmin.reduceat(padded, bounds)[::2]
    return high, low


def cusum_values(
    level: np.ndarray, layout: Layout, config: FeatureConfig, rows: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """``cusum_up_<w>`` and ``cusum_down_<w>`` of one metric's level at every row of
    ``layout`` (or at ``rows``); see the module docstring."""
    if not config.cusum_windows:
        return {}
    ref = config.cusum_reference
    every = WindowStats(layout)  # z is needed at every sample of the window, not only at rows
    stat = every.compute(level, mean_windows=(ref,), std_windows=(ref,), slope_windows=())
    mean, std = stat[f"mean_{ref}"], stat[f"std_{ref}"]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (level - mean) / np.where(std > 0, std, np.nan)
    has = ~np.isnan(z)
    z0 = np.where(has, z, 0.0)
    k = float(config.cusum_k)
    step_up = np.where(has, z0 - k, 0.0)
    step_down = np.where(has, -z0 - k, 0.0)
    pre = every.prefix(up=step_up, down=step_down, n=has.astype(np.float64))

    def target(values: np.ndarray) -> np.ndarray:
        return values if rows is None else values[rows]

    # A few target rows (serving's last row per account): one segment minimum per row;
    # otherwise a time-based rolling minimum on the frame-wide key (accounts never share it).
    few = rows is not None and len(rows) * 64 <= layout.n
    out = {}
    for w in config.cusum_windows:
        count = target(every.window_sum(pre["n"], w))
        for name, sign_pre in (("up", pre["up"]), ("down", pre["down"])):
            total = sign_pre[:-1]  # running sum to each row, restarted per account
            before = np.r_[0.0, total[:-1]]
            before[layout.starts] = 0.0  # the sum "before" an account's first row
            lowest = _window_min(before, every, w, rows) if few else _rolling_min(before, layout, w)
            value = target(total) - np.minimum(target(lowest) if not few else lowest, target(total))
            out[f"cusum_{name}_{w}"] = np.where(count > 0, value, np.nan)
    return out


def _rolling_min(values: np.ndarray, layout: Layout, window: str) -> np.ndarray:
    """Minimum of ``values`` over each row's window ``(t - w, t]``, at every row."""
    key = pd.to_timedelta(layout.key_ms, unit="ms")
    series = pd.Series(values, index=key, copy=False)
    return series.rolling(f"{window_ms(window)}ms").min().to_numpy()


def _window_min(values: np.ndarray, every: WindowStats, window: str, rows: np.ndarray):
    """Minimum of ``values`` over the window ``(t - w, t]`` of each of ``rows`` only."""
    prev = every.previous(window)[rows]  # row before the window, or n: the account's first row
    lo = np.where(prev == every.layout.n, every.account_start[rows], prev + 1)
    # Segments [lo, row + 1) interleaved with ignored ones; a sentinel keeps row + 1 in range.
    bounds = np.column_stack([lo, rows + 1]).ravel()
    return np.minimum.reduceat(np.r_[values, np.inf], bounds)[::2]
