"""Input drift: the population stability index (PSI) between a reference sample and a current one.

Pure: arrays and frames in, numbers and a table out. A model family's training data is the
reference, the data it scores now is the current sample; :func:`psi_table` ranks the columns that
moved most, and :func:`fleetml.decisions.recommendations.retrain_drift` turns a major drift into a
recommendation to retrain.

Conventional reading of the PSI (the credit-scoring rule of thumb):

* below 0.1: stable, no meaningful change;
* 0.1 to 0.25: moderate change, worth watching;
* 0.25 and above: major change, the model is scoring a population it was not trained on.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

#: PSI below this is "stable".
PSI_STABLE = 0.1
#: PSI at or above this is "major" (between the two: "moderate").
PSI_MAJOR = 0.25
#: Fewest finite values on either side for a PSI to mean anything.
MIN_VALUES = 20
#: Share given to a bin that one side leaves empty, so its log ratio stays finite.
EPSILON = 1e-4
#: Columns of :func:`psi_table`.
PSI_COLUMNS = ("column", "psi", "n_ref", "n_cur", "level")
#: Level of a column with too few finite values on either side (its PSI is NaN).
INSUFFICIENT = "insufficient_data"


def _as_float(values) -> np.ndarray:
    """A flat float64 array; values that are not numbers become NaN."""
    arr = np.asarray(values).ravel()
    if arr.dtype.kind in "fiub":  # numbers already: no per-value parsing (a table has many)
        return arr.astype(np.float64, copy=False)
    return pd.to_numeric(pd.Series(arr), errors="coerce").to_numpy(dtype=np.float64)


def _finite(values, side: str) -> np.ndarray:
    arr = _as_float(values)
    arr = arr[np.isfinite(arr)]
    if len(arr) < MIN_VALUES:
        raise ValueError(
            f"the {side} sample has {len(arr)} finite values; the PSI needs at least "
            f"{MIN_VALUES} on each side (NaN and infinite values are ignored): pass a longer window"
        )
    return arr


def psi(reference, current, *, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference``.

    Bin edges are the reference's quantiles (``bins`` equal-count bins, duplicate edges merged,
    so a reference with few distinct values gets fewer bins); the outer bins are open-ended, so
    current values outside the reference's range still count. A bin that one side leaves empty
    gets a share of :data:`EPSILON`.

    Parameters
    ----------
    reference, current : array-like of float
        The two samples. NaN and infinite values are ignored.
    bins : int, default 10
        Number of quantile bins taken from the reference.

    Returns
    -------
    float
        ``sum((cur_share - ref_share) * ln(cur_share / ref_share))`` over the bins: 0 for
        identical distributions; below 0.1 stable, 0.1 to 0.25 moderate, 0.25 and above major.

    Raises
    ------
    ValueError
        When either side has fewer than :data:`MIN_VALUES` finite values, or ``bins < 2``.
    """
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    ref = _finite(reference, "reference")
    cur = _finite(current, "current")
    inner = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    n_bins = len(inner) + 1
    ref_share = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=n_bins) / len(ref)
    cur_share = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=n_bins) / len(cur)
    ref_share = np.maximum(ref_share, EPSILON)
    cur_share = np.maximum(cur_share, EPSILON)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def psi_level(value: float) -> str:
    """``stable`` (< 0.1), ``moderate`` (< 0.25) or ``major``; ``insufficient_data`` for NaN."""
    if not np.isfinite(value):
        return INSUFFICIENT
    if value < PSI_STABLE:
        return "stable"
    return "moderate" if value < PSI_MAJOR else "major"


def psi_table(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Iterable[str] | None = None,
    *,
    bins: int = 10,
) -> pd.DataFrame:
    """PSI of every column of ``current`` against ``reference``, the most drifted first.

    Parameters
    ----------
    reference, current : DataFrame
        The reference (e.g. training) and current (e.g. scored) samples, one column per input.
    columns : iterable of str, optional
        Columns to compare; by default the numeric columns both frames have.
    bins : int, default 10
        Quantile bins per column (see :func:`psi`).

    Returns
    -------
    DataFrame
        Columns ``column``, ``psi``, ``n_ref``, ``n_cur`` (finite values on each side) and
        ``level``: ``stable`` (PSI < 0.1), ``moderate`` (< 0.25) or ``major`` (>= 0.25), sorted by
        ``psi`` descending. A column with fewer than :data:`MIN_VALUES` finite values on either
        side has a NaN ``psi`` and the level ``insufficient_data``, and comes last.

    Raises
    ------
    ValueError
        When a requested column is missing from either frame.
    """
    if columns is None:
        ref_num = reference.select_dtypes(include="number").columns
        cur_num = set(current.select_dtypes(include="number").columns)
        names = [c for c in ref_num if c in cur_num]
    else:
        names = list(columns)
        missing = [
            f"{c!r} ({side})"
            for side, frame in (("reference", reference), ("current", current))
            for c in names
            if c not in frame.columns
        ]
        if missing:
            raise ValueError(f"psi_table: columns missing: {', '.join(missing)}")
    rows = []
    for name in names:
        ref, cur = _as_float(reference[name]), _as_float(current[name])
        n_ref, n_cur = int(np.isfinite(ref).sum()), int(np.isfinite(cur).sum())
        value = psi(ref, cur, bins=bins) if min(n_ref, n_cur) >= MIN_VALUES else float("nan")
        rows.append((str(name), value, n_ref, n_cur, psi_level(value)))
    table = pd.DataFrame(rows, columns=list(PSI_COLUMNS)).astype(
        {"psi": "float64", "n_ref": "int64", "n_cur": "int64"}
    )
    table = table.sort_values(
        ["psi", "column"], ascending=[False, True], na_position="last", kind="stable"
    )
    return table.reset_index(drop=True)
