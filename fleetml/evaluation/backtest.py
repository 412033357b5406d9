"""Walk-forward (expanding window) replay helpers shared by every model family.

A series of ``n`` samples is cut into a warm-up that only trains, then blocks of ``refit_every``
samples. Block ``k`` is scored by a model fitted on every sample *before* the block, so a score at
time ``t`` never depends on data after ``t`` (given causal features).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Rows between anomaly refits in a backtest: ``fleetml backtest anomaly --refit-every`` and
#: :func:`fleetml.training.anomaly.backtest_anomaly` share it, so a notebook replays what the CLI
#: replays (``None`` to the library: fit once on the warm-up).
DEFAULT_ANOMALY_REFIT_EVERY = 500


@dataclass(frozen=True)
class Segment:
    """Fit on rows ``[0, fit_end)``, score rows ``[start, stop)`` (``fit_end == start``)."""

    fit_end: int
    start: int
    stop: int


def warmup_rows(n: int, *, warmup: float = 0.15, warmup_max: int | None = None) -> int:
    """Rows that only train: ``floor(warmup n)``, at most ``warmup_max``, at least 1 when n > 1."""
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup must be a fraction in [0, 1), got {warmup}")
    rows = math.floor(warmup * n)
    if warmup_max is not None:
        rows = min(rows, int(warmup_max))
    return max(rows, 1) if n > 1 else n


def walk_forward_segments(
    n: int,
    *,
    warmup: float = 0.15,
    warmup_max: int | None = None,
    refit_every: int | None = None,
) -> list[Segment]:
    """Segments of an expanding-window walk-forward over ``n`` rows.

    ``refit_every=None`` fits once on the warm-up and scores everything after it.
    """
    first = warmup_rows(n, warmup=warmup, warmup_max=warmup_max)
    if first >= n:
        return []
    step = n - first if not refit_every or refit_every <= 0 else int(refit_every)
    return [Segment(s, s, min(s + step, n)) for s in range(first, n, step)]
