"""NAB-style early-detection score (Numenta Anomaly Benchmark, Lavin & Ahmad 2015).

For one series of ``n`` rows with labelled windows (row ranges ``[L, R]`` of width ``W = R-L+1``):

* rows before the probationary end ``P = min(floor(0.15 n), 750)`` are never scored;
* only the earliest detection inside a window counts, earning
  ``A_tp * sigma(-(R - i + 1) / W) / sigma(-1)`` with ``sigma(y) = 2 / (1 + exp(5 y)) - 1``
  (1 at the window's first row, close to 0 at its last);
* a window without detection adds ``-A_fn``;
* a detection outside every window adds ``A_fp * sigma(y)``, ``y = (i - R') / (W' - 1)`` measured
  from the last window that ended before it (``R'``, ``W'``), which is ``-A_fp`` once ``y > 3``, and
  ``-A_fp`` before the first window.

The standard profile is ``A_tp = 1, A_fp = 0.11, A_fn = 1``. Detections are the rows whose score is
at or above one threshold shared by the whole corpus (chosen to maximise the summed raw score), or
the output of any causal rule applied with that threshold. The corpus score is normalised so the
null detector (no detections) scores 0 and the perfect one (first row of every window) 100:
``100 * (S - S_null) / (S_perfect - S_null)`` with ``S_perfect = A_tp * N`` and
``S_null = -A_fn * N`` over ``N`` windows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

STANDARD_PROFILE = {"tp": 1.0, "fp": 0.11, "fn": 1.0}
PROBATION_FRACTION = 0.15
PROBATION_MAX = 750


def scaled_sigmoid(y):
    """NAB's ``sigma(y) = 2 / (1 + exp(5 y)) - 1``, and ``-1`` for ``y > 3``."""
    y = np.asarray(y, dtype=float)
    with np.errstate(over="ignore"):
        val = 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0
    return np.where(y > 3.0, -1.0, val)


def probation_rows(n: int, fraction: float = PROBATION_FRACTION, cap: int = PROBATION_MAX) -> int:
    """Rows at the start of a series that are never scored: ``min(floor(fraction n), cap)``."""
    return int(min(np.floor(fraction * n), cap))


def _utc64(value) -> np.datetime64:
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.tz_localize(None).to_datetime64()


def window_rows(ts, windows: Sequence[tuple]) -> list[tuple[int, int]]:
    """Inclusive row ranges ``(L, R)`` of windows ``[(start, end), ...]`` over sorted ``ts``."""
    t = pd.to_datetime(pd.Series(ts), utc=True).dt.tz_localize(None).to_numpy()
    t = t.astype("datetime64[ns]")
    out = []
    for start, end in windows:
        lo = int(np.searchsorted(t, _utc64(start).astype("datetime64[ns]"), "left"))
        hi = int(np.searchsorted(t, _utc64(end).astype("datetime64[ns]"), "right")) - 1
        if hi >= lo:
            out.append((lo, hi))
    return out


@dataclass
class NabSeries:
    """One scored series: its length, labelled window rows and per-row weights (see module doc)."""

    n: int
    windows: list[tuple[int, int]]
    profile: dict = field(default_factory=lambda: dict(STANDARD_PROFILE))
    probation: int | None = None
    name: str = ""

    def __post_init__(self):
        if self.probation is None:
            self.probation = probation_rows(self.n)
        n, p = self.n, self.profile
        self.window_id = np.full(n, -1, dtype=np.int64)
        self.tp_weight = np.zeros(n)
        self.fp_weight = np.full(n, -p["fp"])
        max_tp = float(scaled_sigmoid(-1.0))
        idx = np.arange(n)
        for k, (lo, hi) in enumerate(sorted(self.windows)):
            width = hi - lo + 1
            rows = idx[lo : hi + 1]
            self.window_id[lo : hi + 1] = k
            self.tp_weight[lo : hi + 1] = (
                p["tp"] * scaled_sigmoid(-(hi - rows + 1) / width) / max_tp
            )
            # false positives between this window and the next one decay from its right edge
            after = idx[hi + 1 :]
            y = (after - hi) / max(width - 1, 1)
            self.fp_weight[hi + 1 :] = p["fp"] * scaled_sigmoid(y)
        self.n_windows = len(self.windows)

    def score(self, detected: np.ndarray) -> tuple[float, int, int, int]:
        """Raw NAB score of a boolean detection mask, with counts ``(score, tp, fp, fn)``."""
        det = np.asarray(detected, dtype=bool).copy()
        det[: self.probation] = False
        rows = np.flatnonzero(det)
        wid = self.window_id[rows]
        inside = wid >= 0
        first_rows = rows[inside][np.unique(wid[inside], return_index=True)[1]]
        tp = first_rows.size
        fp_rows = rows[~inside]
        fn = self.n_windows - tp
        total = (
            self.tp_weight[first_rows].sum()
            + self.fp_weight[fp_rows].sum()
            - self.profile["fn"] * fn
        )
        return float(total), int(tp), int(fp_rows.size), int(fn)


def normalise(raw: float, n_windows: int, profile: dict = STANDARD_PROFILE) -> float:
    """``100 * (S - S_null) / (S_perfect - S_null)``; NaN for a corpus without windows."""
    perfect, null = profile["tp"] * n_windows, -profile["fn"] * n_windows
    if perfect == null:
        return float("nan")
    return 100.0 * (raw - null) / (perfect - null)


def threshold_at_or_above(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Default detection rule: every row whose score is at or above the threshold."""
    return np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf) >= threshold


def corpus_score(
    series: Sequence[NabSeries],
    scores: Sequence[np.ndarray],
    threshold: float,
    detect: Callable[[np.ndarray, float], np.ndarray] = threshold_at_or_above,
) -> dict:
    """Summed raw and normalised NAB score of a corpus at one threshold."""
    raw = tp = fp = fn = 0
    for s, sc in zip(series, scores, strict=True):
        r, a, b, c = s.score(detect(sc, threshold))
        raw, tp, fp, fn = raw + r, tp + a, fp + b, fn + c
    n_windows = sum(s.n_windows for s in series)
    return {
        "threshold": float(threshold),
        "raw": float(raw),
        "score": normalise(raw, n_windows, series[0].profile if series else STANDARD_PROFILE),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "n_windows": n_windows,
    }


def optimise_threshold(
    series: Sequence[NabSeries],
    scores: Sequence[np.ndarray],
    *,
    detect: Callable[[np.ndarray, float], np.ndarray] = threshold_at_or_above,
    candidates: np.ndarray | None = None,
    n_candidates: int = 400,
) -> dict:
    """The one corpus-wide threshold maximising the summed raw score, and the result there.

    ``candidates`` defaults to ``n_candidates`` quantiles of all finite scores (denser towards the
    top, where useful thresholds live) plus a threshold above every score (the null detector).
    """
    if candidates is None:
        pooled = (
            np.concatenate([np.asarray(s, dtype=float) for s in scores]) if scores else np.array([])
        )
        pooled = pooled[np.isfinite(pooled)]
        if pooled.size:
            q = 1.0 - np.geomspace(1.0, 1e-5, n_candidates)
            candidates = np.unique(np.quantile(pooled, np.clip(q, 0.0, 1.0)))
            candidates = np.r_[candidates, np.nextafter(pooled.max(), np.inf)]
        else:
            candidates = np.array([np.inf])
    best = None
    for thr in candidates:
        result = corpus_score(series, scores, thr, detect)
        if best is None or result["raw"] > best["raw"]:
            best = result
    return best
