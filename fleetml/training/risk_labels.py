"""Fault labels per horizon and the purged train / validation / test time splits."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fleetml.training.risk_config import _ms


def next_event_delay_ms(
    ts_ms: np.ndarray, account_id: np.ndarray, events: pd.DataFrame
) -> np.ndarray:
    """Milliseconds from each row to the next event of its account strictly after it (inf: none)."""
    n = len(ts_ms)
    out = np.full(n, np.inf)
    if events is None or not len(events) or not n:
        return out
    e_ts = pd.DatetimeIndex(events["ts"]).as_unit("ms").asi8
    e_acc = events["account_id"].astype(str).to_numpy()
    accounts = np.union1d(np.unique(account_id.astype(str)), e_acc)
    base = min(int(ts_ms.min()), int(e_ts.min()))
    stride = np.int64(1) << 43  # ~278 years of ms: accounts laid end to end never overlap
    e_key = np.sort(np.searchsorted(accounts, e_acc).astype(np.int64) * stride + (e_ts - base))
    r_code = np.searchsorted(accounts, account_id.astype(str)).astype(np.int64)
    r_key = r_code * stride + (ts_ms - base)
    nxt = np.searchsorted(e_key, r_key, side="right")
    safe = np.clip(nxt, 0, len(e_key) - 1)
    same = (nxt < len(e_key)) & (e_key[safe] // stride == r_code)
    out[same] = (e_key[safe] - r_key)[same]
    return out


def make_labels(
    ts_ms: np.ndarray,
    account_id: np.ndarray,
    events: pd.DataFrame,
    horizons: tuple[str, ...],
    data_end_ms: int,
) -> dict[str, np.ndarray]:
    """Per horizon: 1.0 when an event follows in ``(t, t + h]``, 0.0 when none does, NaN when
    the window reaches past the end of the data (censored).

    Censoring treats positives and negatives alike: a row whose window is not wholly observed
    is unknown even when an event was already seen in it. Keeping those positives while
    dropping their negatives would inflate the positive rate of the last horizon before the end
    (and the held-out metrics computed there)."""
    delay = next_event_delay_ms(ts_ms, account_id, events)
    out = {}
    for h in horizons:
        h_ms = _ms(h)
        y = (delay <= h_ms).astype(np.float64)
        y[ts_ms + h_ms > data_end_ms] = np.nan
        out[h] = y
    return out


def split_times(ts_ms: np.ndarray, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Start of the validation and of the test period (epoch ms) along the time range."""
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction {val_fraction} and test_fraction {test_fraction} must be fractions "
            "leaving room for training"
        )
    lo, hi = int(ts_ms.min()), int(ts_ms.max())
    span = hi - lo
    return (
        lo + int(span * (1 - val_fraction - test_fraction)),
        lo + int(span * (1 - test_fraction)),
    )


def split_masks(
    ts_ms, horizon: str, t_val: int, t_test: int, data_end: int | None = None
) -> dict[str, np.ndarray]:
    """Train / validation / test rows for one horizon, purged by one horizon at each cut.

    No row's label window ``(t, t + h]`` crosses a cut: training windows end before the
    validation period, validation windows before the test period, and (given ``data_end``)
    test windows at the end of the data (the end purge)."""
    h = _ms(horizon)
    test = ts_ms >= t_test
    if data_end is not None:
        test = test & (ts_ms + h <= data_end)
    return {
        "train": ts_ms + h < t_val,
        "val": (ts_ms >= t_val) & (ts_ms + h < t_test),
        "test": test,
    }
