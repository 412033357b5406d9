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
    has_group = key >= 0
    codes, _ = pd.factorize(key)
    # With rows, keep only their values of each metric as soon as it is computed.
    where = None if subset is None else np.searchsorted(subset, rows)
    out = {}
    for m in names:  # one metric at a time bounds the temporary memory
        level = levels[m] if subset is None else levels[m][subset]
        values = pd.Series(level, copy=False)
        grouped = values.groupby(codes, sort=False)
        md = grouped.transform("median").to_numpy()
        cnt = grouped.transform("count").to_numpy()
        mad = (values - md).abs().groupby(codes, sort=False).transform("median").to_numpy()
        scale = np.maximum(1.4826 * mad, np.maximum(_REL_FLOOR * np.abs(md), _ABS_FLOOR))
        z = (level - md) / scale
        z = np.where(has_group & (cnt >= min_accounts), z, np.nan)
        out[m] = z if where is None else z[where]
    return out
