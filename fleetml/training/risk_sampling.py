"""Which rows training builds features for: every positive, negatives within a budget."""

from __future__ import annotations

import numpy as np


def _subsample(mask: np.ndarray, keep_always: np.ndarray, limit: int, rng) -> np.ndarray:
    """Rows of ``mask``: all of ``keep_always``, plus a uniform sample of the rest up to
    ``limit`` rows in all."""
    must = mask & keep_always
    rest = mask & ~keep_always
    if must.sum() > limit // 2:  # even the rare rows are too many: thin them too
        must = must & (rng.random(len(mask)) < (limit // 2) / must.sum())
    room = max(limit - int(must.sum()), 0)
    n_rest = int(rest.sum())
    if n_rest > room:
        rest = rest & (rng.random(len(mask)) < room / max(n_rest, 1))
    return must | rest


def training_rows(
    labels: dict[str, np.ndarray],
    train_masks: dict[str, np.ndarray],
    *,
    max_negative_ratio: float,
    max_rows: int,
    rng,
) -> dict[str, np.ndarray]:
    """Per horizon, the training rows it fits on: every positive row (thinned only beyond half
    of ``max_rows``) and negatives up to ``max_negative_ratio`` per positive, ``max_rows`` in
    all. Each horizon's negative budget comes from its own positives: a 24 h horizon with
    twenty times the 1 h positives gets twenty times the negatives."""
    out = {}
    for h, y in labels.items():
        mask = train_masks[h] & ~np.isnan(y)
        positive = y == 1
        n_pos = int((mask & positive).sum())
        limit = max_rows
        if max_negative_ratio and n_pos:
            limit = min(limit, int(n_pos * (1 + max_negative_ratio)))
        out[h] = _subsample(mask, positive, limit, rng)
    return out
