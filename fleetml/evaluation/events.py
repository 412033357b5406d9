"""Event-wise evaluation of alerts against labelled windows: precision, recall, F1 and lead time.

An *alert* is one onset (the first flagged row of an episode) on one account; a *window* is a
labelled incident ``[start, end]`` on one account. With tolerances ``early`` and ``late`` a window
matches alerts in ``[start - early, end + late]`` (an alert before the incident starts is what a
predictive system is for, so ``early`` defaults to zero only to stay strict).

* precision = alerts matching some window / all alerts
* recall = windows matched by at least one alert / all windows
* F1 = 2 P R / (P + R)
* lead time of a detected window = ``start - first matching alert`` (positive: before the start)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fleetml.evaluation.pointwise import precision_recall_f1


def _utc(values) -> pd.Series:
    return pd.to_datetime(pd.Series(values), utc=True).astype("datetime64[ms, UTC]")


def _ms(values) -> np.ndarray:
    """Epoch milliseconds (int64) of timestamps (naive means UTC)."""
    return pd.DatetimeIndex(pd.to_datetime(pd.Series(values), utc=True)).as_unit("ms").asi8


def alert_onsets(
    frame: pd.DataFrame, *, flag: str = "is_anomaly", account: str = "account_id", ts: str = "ts"
) -> pd.DataFrame:
    """Onsets (first row of each run of flagged rows, per account) of a scored frame.

    Returns a frame ``account_id, ts`` with one row per alert episode.
    """
    data = frame[[account, ts, flag]].sort_values([account, ts], kind="stable")
    flagged = data[flag].fillna(False).astype(bool).to_numpy()
    acc = data[account].astype(str).to_numpy()
    prev_flag = np.r_[False, flagged[:-1]]
    new_account = np.r_[True, acc[1:] != acc[:-1]] if len(acc) else np.array([], bool)
    onset = flagged & (~prev_flag | new_account)
    out = data.loc[onset, [account, ts]].rename(columns={account: "account_id", ts: "ts"})
    out["ts"] = _utc(out["ts"]).to_numpy()
    return out.reset_index(drop=True)


def match_alerts(
    alerts: pd.DataFrame,
    windows: pd.DataFrame,
    *,
    early: pd.Timedelta | str = "0min",
    late: pd.Timedelta | str = "0min",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Match alerts (``account_id, ts``) to windows (``account_id, start, end``).

    A window without an ``account_id`` column (or with a missing value) matches alerts of any
    account. Returns ``(alerts, windows)`` copies: alerts gain ``matched`` (bool); windows gain
    ``detected`` (bool), ``first_alert`` (timestamp) and ``lead_time_s`` (start minus first
    matching alert, seconds; positive means the alert came before the incident started).
    """
    early, late = pd.Timedelta(early), pd.Timedelta(late)
    alerts = alerts.reset_index(drop=True).copy()
    windows = windows.reset_index(drop=True).copy()
    a_ts = _ms(alerts["ts"])
    a_acc = alerts["account_id"].astype(str).to_numpy() if len(alerts) else np.array([], object)
    w_start = _ms(windows["start"])
    w_end = _ms(windows["end"])
    lo = w_start - early.value // 1_000_000
    hi = w_end + late.value // 1_000_000
    if "account_id" in windows:
        w_acc = windows["account_id"].astype("object").to_numpy()
    else:
        w_acc = np.full(len(windows), None, dtype=object)
    any_account = pd.isna(w_acc)

    # alerts x windows is small (alerts are episodes, not rows), so a dense match is fine.
    inside = (a_ts[:, None] >= lo[None, :]) & (a_ts[:, None] <= hi[None, :])
    same = (a_acc[:, None] == w_acc.astype(str)[None, :]) | any_account[None, :]
    hit = inside & same
    alerts["matched"] = hit.any(axis=1)
    first = np.where(hit, a_ts[:, None], np.iinfo(np.int64).max).min(
        axis=0, initial=np.iinfo(np.int64).max
    )
    detected = first < np.iinfo(np.int64).max
    windows["detected"] = detected
    windows["first_alert"] = (
        pd.Series(pd.to_datetime(np.where(detected, first, 0), unit="ms", utc=True))
        .where(detected)
        .astype("datetime64[ms, UTC]")
    )
    windows["lead_time_s"] = np.where(detected, (w_start - first) / 1000.0, np.nan)
    return alerts, windows


def event_metrics(
    alerts: pd.DataFrame,
    windows: pd.DataFrame,
    *,
    early: pd.Timedelta | str = "0min",
    late: pd.Timedelta | str = "0min",
) -> dict[str, Any]:
    """Event-wise precision, recall, F1 and lead-time summary of alerts against windows.

    ``alerts`` holds one row per alert (see :func:`alert_onsets`); ``windows`` one row per labelled
    incident. Precision is NaN with no alerts, recall NaN with no windows.
    """
    a, w = match_alerts(alerts, windows, early=early, late=late)
    n_alerts, n_windows = len(a), len(w)
    tp_alerts = int(a["matched"].sum()) if n_alerts else 0
    detected = int(w["detected"].sum()) if n_windows else 0
    precision, recall, f1 = precision_recall_f1(tp_alerts, n_alerts, detected, n_windows)
    leads = w.loc[w["detected"], "lead_time_s"] if n_windows else pd.Series(dtype=float)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "n_alerts": n_alerts,
        "n_true_alerts": tp_alerts,
        "n_false_alerts": n_alerts - tp_alerts,
        "n_windows": n_windows,
        "n_detected": detected,
        "median_lead_time_s": float(leads.median()) if len(leads) else float("nan"),
        "mean_lead_time_s": float(leads.mean()) if len(leads) else float("nan"),
    }


def label_rows(
    frame: pd.DataFrame,
    windows: pd.DataFrame,
    *,
    account: str = "account_id",
    ts: str = "ts",
) -> np.ndarray:
    """Boolean per row of ``frame``: inside some labelled window of its account (or any account).

    Binary search per window on each account's sorted times, so the cost grows with
    ``windows x log(rows)``, not ``windows x rows``.
    """
    out = np.zeros(len(frame), dtype=bool)
    if not len(frame) or not len(windows):
        return out
    t = _ms(frame[ts])
    acc = frame[account].astype(str).to_numpy()
    order = np.lexsort((t, acc))
    t_sorted, acc_sorted = t[order], acc[order]
    uniq, first = np.unique(acc_sorted, return_index=True)
    last = np.r_[first[1:], len(acc_sorted)]
    block = dict(zip(uniq, zip(first, last, strict=True), strict=True))
    starts, ends = _ms(windows["start"]), _ms(windows["end"])
    if "account_id" in windows:
        w_acc = windows["account_id"].astype("object").to_numpy()
    else:
        w_acc = np.full(len(windows), None, dtype=object)
    marks = np.zeros(len(frame) + 1, dtype=np.int64)
    for start, end, wa in zip(starts, ends, w_acc, strict=True):  # per window, not per row
        targets = block.values() if pd.isna(wa) else [block.get(str(wa))]
        for span in targets:
            if span is None:
                continue
            lo, hi = span
            i = lo + np.searchsorted(t_sorted[lo:hi], start, "left")
            j = lo + np.searchsorted(t_sorted[lo:hi], end, "right")
            marks[i] += 1
            marks[j] -= 1
    out[order] = np.cumsum(marks[:-1]) > 0
    return out
