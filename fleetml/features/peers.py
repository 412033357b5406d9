"""Deviation of an account's level from its peers (same group) at the same time."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fleetml.features.layout import Layout

#: Scale floor: a fraction of the group median's magnitude, so a group of identical accounts
#: does not turn a tiny deviation into an infinite z-score.
_REL_FLOOR = 0.01
_ABS_FLOOR = 1e-9


def peer_z(
    levels: dict[str, np.ndarray],
    layout: Layout,
    group_of_row: np.ndarray,
    bucket_ms: int,
    min_accounts: int,
    rows: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Robust z-score ``(level - group median) / (1.4826 MAD)`` per (group, time bucket).

    Timestamps are rounded to the bucket (the sampling step) so accounts sampled a few seconds
    apart still meet. Rows whose account has no group, or whose bucket holds fewer than
    ``min_accounts`` values, get NaN. Uses values at the same time only, so it is causal.
    With ``rows``, only the (group, bucket) cells of those rows are computed and returned.
    """
    n = layout.n
    names = list(levels)
    bucket = np.floor((layout.ts_ms + bucket_ms // 2) / bucket_ms).astype(np.int64)
    bucket -= bucket.min() if n else 0
    key = np.where(
        group_of_row >= 0, group_of_row * (int(bucket.max()) + 1 if n else 1) + bucket, -1
    )
    subset = None
    if rows is not None:
        subset = np.flatnonzero(np.isin(key, key[rows]))
        key = key[subset]
        levels = {m: v[subset] for m, v in levels.items()}
    has_group = key >= 0
    codes, _ = pd.factorize(key)
    out = {}
    for m in names:  # one metric at a time bounds the temporary memory
        values = pd.Series(levels[m], copy=False)
        grouped = values.groupby(codes, sort=False)
        md = grouped.transform("median").to_numpy()
        cnt = grouped.transform("count").to_numpy()
        mad = (values - md).abs().groupby(codes, sort=False).transform("median").to_numpy()
        scale = np.maximum(1.4826 * mad, np.maximum(_REL_FLOOR * np.abs(md), _ABS_FLOOR))
        z = (levels[m] - md) / scale
        out[m] = np.where(has_group & (cnt >= min_accounts), z, np.nan)
    if subset is not None:
        where = np.searchsorted(subset, rows)
        out = {m: v[where] for m, v in out.items()}
    return out
