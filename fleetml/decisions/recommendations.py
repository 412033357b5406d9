"""Typed tuning recommendations for ops: one generator per :class:`RecommendationKind`.

Each generator takes frames and policies, returns ``list[Recommendation]`` (empty on empty input)
and never touches the store, HTTP or the simulator. Every recommendation carries a stable
``dedup_key`` (``"<kind>:<group>"``, ``"<kind>:<account_id>"`` or ``"<kind>:<family>"``), a one-line
title, JSON-serialisable ``evidence`` and ``expected_impact`` (with a ``summary``), a
``confidence`` in [0, 1] derived from the evidence, and, when accepting it changes a group
setting, ``setting = {"group": g, "field": f, "value": v}`` with ``f`` in :data:`POLICY_FIELDS`.

* :func:`add_servants`: a forecast peak the group's routable capacity cannot absorb;
* :func:`lower_send_rate`: an account that sends past its error knee;
* :func:`adjust_failover_threshold`: a ``risk_on`` with more recall at the wanted precision;
* :func:`change_algorithm`: a balancing algorithm that fits the group's capacities and latencies;
* :func:`retrain_drift`: a model family whose inputs drifted (PSI) since it was trained;
* :func:`investigate_anomaly`: an account anomalous for several consecutive checks;
* :func:`promote_mode`: the autonomy ladder, shadow -> approve -> auto, from measured precision;
* :func:`review_enforcement`: a platform-enforcement signal; a person decides, nothing reroutes.

A group missing from ``policies`` runs the defaults of :class:`GroupPolicy`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from fleetml.decisions.contracts import (
    Algorithm,
    Fleet,
    GroupPolicy,
    Mode,
    Recommendation,
    RecommendationKind,
    json_safe,
)
from fleetml.decisions.drift import PSI_MAJOR
from fleetml.vocab import ENFORCEMENT_KINDS

_DEFAULT_POLICY = GroupPolicy()
#: Enforcement reviews stay open for a week: a person has to look, however long it takes.
ENFORCEMENT_EXPIRES_S = 7 * 86_400


# --- helpers ------------------------------------------------------------------------------


def _key(kind: RecommendationKind, subject: object) -> str:
    return f"{kind.value}:{subject}"


def _r(value: float, digits: int = 4) -> float | None:
    f = float(value)
    return round(f, digits) if math.isfinite(f) else None


def _clip01(value: float) -> float:
    return round(float(min(1.0, max(0.0, value))), 3) if math.isfinite(value) else 0.0


def _rising(excess: float, scale: float) -> float:
    """0 at no excess, approaching 1 as ``excess`` grows past a few ``scale``."""
    return 1.0 - math.exp(-max(excess, 0.0) / scale)


def _iso(ts_ms: float) -> str:
    return pd.Timestamp(int(ts_ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what} lacks columns {', '.join(missing)}; expected {', '.join(columns)}"
        )


def _empty(frame: pd.DataFrame | None) -> bool:
    return frame is None or len(frame) == 0


def _ids(series: pd.Series) -> np.ndarray:
    """Ids as strings, missing ones as NaN (so a frame can drop them, on pandas 2 and 3)."""
    return series.astype(str).where(series.notna()).to_numpy(dtype=object)


def _num(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce").astype("float64")


def _policy(policies: Mapping[str, GroupPolicy] | None, group: str) -> GroupPolicy:
    return (policies or {}).get(group, _DEFAULT_POLICY)


def _make(
    kind: RecommendationKind,
    subject: str,
    title: str,
    *,
    evidence: dict[str, Any],
    impact: dict[str, Any],
    confidence: float,
    group: str | None = None,
    account_id: str | None = None,
    setting: dict[str, Any] | None = None,
    expires_after_s: int | None = None,
) -> Recommendation:
    extra = {} if expires_after_s is None else {"expires_after_s": int(expires_after_s)}
    return Recommendation(
        kind=kind,
        title=title,
        dedup_key=_key(kind, subject),
        group=group,
        account_id=account_id,
        evidence=json_safe(evidence),
        expected_impact=json_safe(impact),
        confidence=_clip01(confidence),
        setting=json_safe(setting) if setting is not None else None,
        **extra,
    )


# --- 1. add servants ahead of a forecast peak ----------------------------------------------


def _servant_capacity(fleet: Fleet) -> tuple[pd.Series, pd.Series, float]:
    """Median capacity per group of its servants, of all its accounts; of the fleet's servants."""
    acc = fleet.accounts
    cap = _num(acc["capacity"])
    cap = cap.where(cap > 0)  # a zero or unknown capacity says nothing about a new servant
    servant = acc["role"].astype(str).to_numpy() == "servant"
    group = acc["group"].astype(str)
    by_servant = cap[servant].groupby(group[servant]).median()
    by_account = cap.groupby(group).median()
    fleet_servant = float(cap[servant].median()) if servant.any() else float("nan")
    return by_servant, by_account, fleet_servant


def add_servants(
    fleet: Fleet,
    forecasts: pd.DataFrame,
    *,
    available_capacity: pd.Series,
    target_utilisation: float = 0.8,
) -> list[Recommendation]:
    """Recommend servants for groups whose forecast peak exceeds their usable capacity.

    A group needs more when ``peak > target_utilisation * capacity``. It then needs
    ``ceil((peak / target_utilisation - capacity) / servant_capacity)`` servants, where
    ``servant_capacity`` is the median positive capacity of the group's servants in ``fleet`` (of
    all its accounts when it has no servants, of the fleet's servants when the group is unknown;
    a group whose servant capacity cannot be estimated at all is skipped).

    Parameters
    ----------
    fleet : Fleet
        The registry (capacities per account, msgs/min).
    forecasts : DataFrame
        ``group``, ``peak`` (forecast peak demand, msgs/min), ``peak_ts_ms`` (when, epoch ms).
        Several rows per group are allowed; the highest peak counts.
    available_capacity : Series
        Msgs/min the group's routable accounts can send, indexed by group. Groups absent from it
        (or NaN) are skipped: without a capacity there is nothing to compare.
    target_utilisation : float, default 0.8
        Share of capacity the peak may use.

    Returns
    -------
    list of Recommendation
        One per group short of capacity; ``dedup_key`` ``"add_servants:<group>"``; no setting
        (adding servants is a registry change).
    """
    if _empty(forecasts) or available_capacity is None or len(available_capacity) == 0:
        return []
    if not 0 < target_utilisation <= 1:
        raise ValueError(f"target_utilisation must be in (0, 1], got {target_utilisation}")
    _require(forecasts, ("group", "peak", "peak_ts_ms"), "forecasts")
    f = pd.DataFrame(
        {
            "group": _ids(forecasts["group"]),
            "peak": _num(forecasts["peak"]).to_numpy(),
            "peak_ts_ms": _num(forecasts["peak_ts_ms"]).to_numpy(),
        }
    ).dropna(subset=["group", "peak"])
    if f.empty:
        return []
    f = f.sort_values(["group", "peak"], kind="stable").groupby("group", sort=True).tail(1)
    capacity = _num(pd.Series(available_capacity))
    capacity.index = capacity.index.astype(str)
    f["capacity"] = capacity.reindex(f["group"]).to_numpy()
    f = f[f["capacity"].notna() & (f["peak"] > target_utilisation * f["capacity"])]
    if f.empty:
        return []
    by_servant, by_account, fleet_servant = _servant_capacity(fleet)
    per_servant = by_servant.reindex(f["group"]).to_numpy()
    per_account = by_account.reindex(f["group"]).to_numpy()
    source = np.where(
        np.isfinite(per_servant),
        "group_servants",
        np.where(np.isfinite(per_account), "group_accounts", "fleet_servants"),
    )
    unit = np.where(
        np.isfinite(per_servant),
        per_servant,
        np.where(np.isfinite(per_account), per_account, fleet_servant),
    )
    f["unit"], f["source"] = unit, source
    f = f[np.isfinite(f["unit"]) & (f["unit"] > 0)]
    f["required"] = f["peak"] / target_utilisation
    f["gap"] = f["required"] - f["capacity"]
    f["servants"] = np.ceil(f["gap"] / f["unit"]).clip(lower=1).astype(int)
    f["after"] = f["capacity"] + f["servants"] * f["unit"]
    out = []
    for row in f.itertuples(index=False):
        cap = float(row.capacity)
        util_now = row.peak / cap if cap > 0 else float("inf")
        when = _iso(row.peak_ts_ms) if math.isfinite(row.peak_ts_ms) else "the forecast peak"
        over = row.peak / (target_utilisation * cap) - 1 if cap > 0 else float("inf")
        noun = "servant" if row.servants == 1 else "servants"
        out.append(
            _make(
                RecommendationKind.ADD_SERVANTS,
                row.group,
                f"Add {row.servants} {noun} to group {row.group} before {when}: "
                f"{row.peak:.0f} msgs/min forecast, over {target_utilisation:.0%} of its "
                f"{cap:.0f} msgs/min capacity",
                group=row.group,
                evidence={
                    "peak": _r(row.peak),
                    "peak_ts_ms": int(row.peak_ts_ms) if math.isfinite(row.peak_ts_ms) else None,
                    "peak_at": when,
                    "available_capacity": _r(cap),
                    "target_utilisation": target_utilisation,
                    "required_capacity": _r(row.required),
                    "capacity_gap": _r(row.gap),
                    "servant_capacity": _r(row.unit),
                    "servant_capacity_source": row.source,
                    "utilisation_at_peak": _r(util_now),
                },
                impact={
                    "summary": f"With {row.servants} more {noun} of about {row.unit:.0f} msgs/min "
                    f"the peak uses {row.peak / row.after:.0%} of capacity instead of "
                    + (f"{util_now:.0%}" if math.isfinite(util_now) else "all of it (none left)"),
                    "servants": int(row.servants),
                    "added_capacity": _r(row.servants * row.unit),
                    "utilisation_at_peak_before": _r(util_now),
                    "utilisation_at_peak_after": _r(row.peak / row.after),
                },
                confidence=0.5 + 0.45 * _rising(over, 0.25) if math.isfinite(over) else 0.95,
            )
        )
    return out


# --- 2. lower an account's send rate below its error knee ----------------------------------


def _knee_table(h: pd.DataFrame, bins: int, base_bins: int) -> pd.DataFrame:
    """Per account and send-rate bin: lower/upper send rate, error rate, count, knee marks."""
    rank = h.groupby("account_id")["send_rate"].rank(method="min").to_numpy()
    n = h.groupby("account_id")["send_rate"].transform("size").to_numpy()
    h = h.assign(bin=((rank - 1) * bins // n).astype(int))
    t = (
        h.groupby(["account_id", "bin"], sort=True)
        .agg(
            lower=("send_rate", "min"),
            upper=("send_rate", "max"),
            error_rate=("error_rate", "mean"),
            n=("send_rate", "size"),
        )
        .reset_index()
    )
    t["pos"] = t.groupby("account_id").cumcount()
    base = t[t["pos"] < base_bins].assign(w=lambda d: d["error_rate"] * d["n"])
    base = base.groupby("account_id")[["w", "n"]].sum()
    baseline = base["w"] / base["n"]
    t["baseline"] = baseline.reindex(t["account_id"]).to_numpy()
    t["threshold"] = np.maximum(2 * t["baseline"], t["baseline"] + 0.02)
    above = (t["error_rate"] > t["threshold"]).astype(int)
    # the knee must start a run of bad bins that lasts to the highest send rates
    t["stays_above"] = above[::-1].groupby(t["account_id"][::-1]).cummin()[::-1].astype(bool)
    return t


def lower_send_rate(
    history: pd.DataFrame,
    *,
    bins: int = 10,
    min_samples: int = 50,
    min_share_above: float = 0.1,
) -> list[Recommendation]:
    """Recommend a send-rate cap for accounts that send past their error knee.

    Per account, intervals are binned by send-rate quantiles. The baseline is the error rate of
    the lowest fifth of the bins; the knee is the lower edge of the first higher bin whose error
    rate exceeds ``max(2 * baseline, baseline + 0.02)`` and stays above it in every higher bin.
    An account is recommended a cap at the knee when at least ``min_share_above`` of its
    intervals are at or above it.

    Parameters
    ----------
    history : DataFrame
        One row per account and interval: ``account_id``, ``group``, ``send_rate`` (msgs/min
        attempted), ``error_rate`` (failed / attempted). Rows with NaN are ignored.
    bins : int, default 10
        Send-rate quantile bins per account.
    min_samples : int, default 50
        Fewest intervals an account needs.
    min_share_above : float, default 0.1
        Share of intervals at or above the knee that makes a cap worth it.

    Returns
    -------
    list of Recommendation
        One per account; ``dedup_key`` ``"lower_send_rate:<account_id>"``; no setting (the cap
        is a throttle of the account: ``expected_impact["cap_rate_per_min"]``).
    """
    if _empty(history):
        return []
    _require(history, ("account_id", "group", "send_rate", "error_rate"), "history")
    h = pd.DataFrame(
        {
            "account_id": _ids(history["account_id"]),
            "group": _ids(history["group"]),
            "send_rate": _num(history["send_rate"]).to_numpy(),
            "error_rate": _num(history["error_rate"]).to_numpy(),
        }
    )
    h = h[h["account_id"].notna() & np.isfinite(h["send_rate"]) & np.isfinite(h["error_rate"])]
    h = h[h.groupby("account_id")["send_rate"].transform("size") >= max(min_samples, bins)]
    if h.empty:
        return []
    base_bins = max(1, bins // 5)
    t = _knee_table(h, bins, base_bins)
    cand = t[(t["pos"] >= base_bins) & t["stays_above"] & (t["lower"] > 0)]
    knee = cand.groupby("account_id")["lower"].first()
    if knee.empty:
        return []
    h = h[h["account_id"].isin(knee.index)].copy()
    h["knee"] = knee.reindex(h["account_id"]).to_numpy()
    h["at_or_above"] = h["send_rate"] >= h["knee"]
    h["err_above"] = h["error_rate"].where(h["at_or_above"])
    h["err_below"] = h["error_rate"].where(~h["at_or_above"])
    h["excess"] = (h["send_rate"] - h["knee"]).clip(lower=0)
    s = h.groupby("account_id").agg(
        group=("group", "last"),
        knee=("knee", "first"),
        n=("send_rate", "size"),
        share_above=("at_or_above", "mean"),
        err_above=("err_above", "mean"),
        err_below=("err_below", "mean"),
        err_all=("error_rate", "mean"),
        excess=("excess", "mean"),
    )
    s["send_p95"] = h.groupby("account_id")["send_rate"].quantile(0.95).reindex(s.index)
    s["baseline"] = t.groupby("account_id")["baseline"].first().reindex(s.index)
    s["threshold"] = t.groupby("account_id")["threshold"].first().reindex(s.index)
    s = s[s["share_above"] >= min_share_above]
    curves = {
        acc: [
            {
                "send_rate_from": _r(r.lower),
                "send_rate_to": _r(r.upper),
                "error_rate": _r(r.error_rate),
                "n": int(r.n),
            }
            for r in frame.itertuples(index=False)
        ]
        for acc, frame in t[t["account_id"].isin(s.index)].groupby("account_id", sort=False)
    }
    out = []
    for row in s.itertuples():
        acc = row.Index
        ratio = row.err_above / max(row.baseline, 0.005)
        confidence = (row.n / (row.n + min_samples)) * (0.3 + 0.7 * _rising(ratio - 1, 1.0))
        out.append(
            _make(
                RecommendationKind.LOWER_SEND_RATE,
                str(acc),
                f"Cap account {acc} at {row.knee:.0f} msgs/min: above it its error rate rises "
                f"from {row.baseline:.1%} to {row.err_above:.1%}",
                group=str(row.group) if pd.notna(row.group) else None,
                account_id=str(acc),
                evidence={
                    "knee_send_rate": _r(row.knee),
                    "baseline_error_rate": _r(row.baseline),
                    "knee_threshold": _r(row.threshold),
                    "error_rate_above_knee": _r(row.err_above),
                    "error_rate_below_knee": _r(row.err_below),
                    "share_of_time_above_knee": _r(row.share_above),
                    "send_rate_p95": _r(row.send_p95),
                    "n_samples": int(row.n),
                    "curve": curves.get(acc, []),
                },
                impact={
                    "summary": f"Capping at {row.knee:.0f} msgs/min should bring the error rate "
                    f"from {row.err_all:.1%} to about {row.err_below:.1%}; about "
                    f"{row.excess:.1f} msgs/min on average move to the group's peers",
                    "cap_rate_per_min": _r(row.knee),
                    "error_rate_now": _r(row.err_all),
                    "error_rate_expected": _r(row.err_below),
                    "msgs_per_min_moved": _r(row.excess),
                },
                confidence=confidence,
            )
        )
    return out


# --- 3. tune risk_on from the precision-recall curve ---------------------------------------


def _round_within(value: float, lower: float) -> float:
    """The roundest number in ``(lower, value]``: same decisions on these scores, nicer setting."""
    for digits in (2, 3, 4):
        step = 10.0**-digits
        candidate = round(math.floor(value / step + 1e-9) * step, digits)
        if lower < candidate <= value:
            return candidate
    return float(value)


def _at(score: np.ndarray, y: np.ndarray, threshold: float) -> tuple[float, float, int]:
    pred = score >= threshold
    tp = int((pred & y).sum())
    alerts = int(pred.sum())
    precision = tp / alerts if alerts else float("nan")
    recall = tp / int(y.sum()) if y.any() else float("nan")
    return precision, recall, alerts


def adjust_failover_threshold(
    outcomes: pd.DataFrame,
    policies: Mapping[str, GroupPolicy],
    *,
    min_precision: float = 0.8,
    min_outcomes: int = 20,
    min_positives: int = 3,
    min_change: float = 0.05,
) -> list[Recommendation]:
    """Recommend the ``risk_on`` with the most recall at ``min_precision``, per group.

    From each group's precision-recall curve, the lowest threshold whose precision is at least
    ``min_precision``; recommended when it differs from the group's ``risk_on`` by at least
    ``min_change``. The proposed value is rounded within the gap to the next lower observed
    score, so it makes the same decisions on these outcomes. A proposal at or below the group's
    ``risk_off`` would break the failover hysteresis: it is still raised, without a setting.

    Parameters
    ----------
    outcomes : DataFrame
        ``group``, ``score`` (risk at decision time), ``fault_followed`` (bool), one row per
        tick candidate or shadow decision.
    policies : Mapping of str to GroupPolicy
        Current settings per group.
    min_precision : float, default 0.8
        Precision the threshold must keep.
    min_outcomes, min_positives : int, default 20 and 3
        Groups with fewer outcomes or fewer faults get nothing.
    min_change : float, default 0.05
        Smallest change of ``risk_on`` worth recommending.

    Returns
    -------
    list of Recommendation
        ``dedup_key`` ``"adjust_failover_threshold:<group>"``; setting field ``risk_on``.
    """
    if _empty(outcomes):
        return []
    _require(outcomes, ("group", "score", "fault_followed"), "outcomes")
    from sklearn.metrics import precision_recall_curve

    o = pd.DataFrame(
        {
            "group": _ids(outcomes["group"]),
            "score": _num(outcomes["score"]).to_numpy(),
            "y": outcomes["fault_followed"].astype(object).to_numpy(),
        }
    )
    o = o[o["group"].notna() & np.isfinite(o["score"]) & o["y"].notna()]
    out = []
    for group, g in o.groupby("group", sort=True):
        score = g["score"].to_numpy(dtype=np.float64)
        y = g["y"].astype(bool).to_numpy()
        n, positives = len(y), int(y.sum())
        if n < min_outcomes or positives < min_positives:
            continue
        precision, recall, thresholds = precision_recall_curve(y, score)
        ok = np.flatnonzero(precision[:-1] >= min_precision)
        if len(ok) == 0:
            continue
        raw = float(thresholds[ok[0]])
        below = score[score < raw]
        proposed = _round_within(raw, float(below.max()) if len(below) else -math.inf)
        policy = _policy(policies, str(group))
        if abs(proposed - policy.risk_on) < min_change:
            continue
        cur_p, cur_r, cur_alerts = _at(score, y, policy.risk_on)
        new_p, new_r, new_alerts = _at(score, y, proposed)
        blocked = proposed <= policy.risk_off
        direction = "Lower" if proposed < policy.risk_on else "Raise"
        title = (
            f"{direction} risk_on of group {group} from {policy.risk_on:g} to {proposed:g}: "
            f"recall {new_r:.0%} at precision {new_p:.0%}"
        )
        if blocked:
            title += f" (lower risk_off {policy.risk_off:g} first)"
        cur_desc = (
            f"precision {cur_p:.0%}, recall {cur_r:.0%}"
            if cur_alerts
            else "no failover on these outcomes"
        )
        out.append(
            _make(
                RecommendationKind.ADJUST_FAILOVER_THRESHOLD,
                str(group),
                title,
                group=str(group),
                evidence={
                    "current_threshold": policy.risk_on,
                    "current_precision": _r(cur_p),
                    "current_recall": _r(cur_r),
                    "current_alerts": cur_alerts,
                    "proposed_threshold": proposed,
                    "proposed_precision": _r(new_p),
                    "proposed_recall": _r(new_r),
                    "proposed_alerts": new_alerts,
                    "min_precision": min_precision,
                    "n": n,
                    "positives": positives,
                    "risk_off": policy.risk_off,
                    "blocked_by_risk_off": blocked,
                },
                impact={
                    "summary": f"Failover at risk >= {proposed:g} would have caught {new_r:.0%} "
                    f"of the faults at precision {new_p:.0%} (now: {cur_desc})",
                    "recall_change": _r(new_r - (cur_r if cur_alerts else 0.0)),
                    "precision": _r(new_p),
                    "failovers_change": new_alerts - cur_alerts,
                },
                confidence=(positives / (positives + 10)) * (n / (n + min_outcomes)),
                setting=None
                if blocked
                else {"group": str(group), "field": "risk_on", "value": float(proposed)},
            )
        )
    return out


# --- 4. change the balancing algorithm ------------------------------------------------------


def change_algorithm(
    fleet: Fleet,
    policies: Mapping[str, GroupPolicy],
    stats: pd.DataFrame,
    *,
    max_capacity_cv: float = 0.2,
    max_latency_spread: float = 2.0,
) -> list[Recommendation]:
    """Recommend a balancing algorithm that fits the group's capacities and latencies.

    * any algorithm but ``p2c_ewma`` with ``latency_p95_spread > max_latency_spread`` ->
      ``p2c_ewma`` (latency-aware: traffic leaves the slow accounts);
    * otherwise ``round_robin`` with ``capacity_cv > max_capacity_cv`` -> ``weighted_round_robin``
      (unequal accounts are loaded in proportion to their capacity).

    Parameters
    ----------
    fleet : Fleet
        The registry; fills a missing ``capacity_cv`` from the group's capacities and gives the
        group size (groups with fewer than two accounts are skipped).
    policies : Mapping of str to GroupPolicy
        Current settings per group.
    stats : DataFrame
        ``group``, ``latency_p95_spread`` (slowest account's p95 over the group median),
        ``capacity_cv`` (coefficient of variation of capacity).

    Returns
    -------
    list of Recommendation
        ``dedup_key`` ``"change_algorithm:<group>"``; setting field ``algorithm``.
    """
    if _empty(stats):
        return []
    _require(stats, ("group", "latency_p95_spread", "capacity_cv"), "stats")
    s = (
        pd.DataFrame(
            {
                "group": _ids(stats["group"]),
                "spread": _num(stats["latency_p95_spread"]).to_numpy(),
                "cv": _num(stats["capacity_cv"]).to_numpy(),
            }
        )
        .dropna(subset=["group"])
        .drop_duplicates("group", keep="last")
    )
    acc = fleet.accounts
    cap = _num(acc["capacity"]).groupby(acc["group"].astype(str))
    size = cap.size()
    cv_fleet = cap.std(ddof=0) / cap.mean()
    rr_load = cap.mean() / cap.min()  # the smallest account's load under round robin, vs mean
    s["n_accounts"] = size.reindex(s["group"]).fillna(0).astype(int).to_numpy()
    s["cv"] = s["cv"].fillna(pd.Series(cv_fleet.reindex(s["group"]).to_numpy(), index=s.index))
    s["rr_load"] = rr_load.reindex(s["group"]).to_numpy()
    s["algorithm"] = [_policy(policies, g).algorithm for g in s["group"]]
    s = s[s["n_accounts"] >= 2]
    slow = (s["algorithm"] != Algorithm.P2C_EWMA) & (s["spread"] > max_latency_spread)
    unequal = ~slow & (s["algorithm"] == Algorithm.ROUND_ROBIN) & (s["cv"] > max_capacity_cv)
    out = []
    for row in s[slow | unequal].itertuples(index=False):
        current = Algorithm(row.algorithm)
        size_factor = row.n_accounts / (row.n_accounts + 3)
        if row.spread > max_latency_spread and current != Algorithm.P2C_EWMA:
            target = Algorithm.P2C_EWMA
            why = f"its slowest account's p95 latency is {row.spread:.1f}x the group median"
            summary = (
                "Routing by EWMA latency x outstanding work moves traffic off the slow "
                f"account(s) instead of giving them an equal share ({row.spread:.1f}x slower)"
            )
            margin = _rising(row.spread / max_latency_spread - 1, 0.5)
        else:
            target = Algorithm.WEIGHTED_ROUND_ROBIN
            why = f"its capacities differ (coefficient of variation {row.cv:.2f})"
            summary = "Sending in proportion to capacity evens the load" + (
                f": under round robin the smallest account runs {row.rr_load:.1f}x hotter "
                "than the average"
                if np.isfinite(row.rr_load)
                else ""
            )
            margin = _rising(row.cv / max_capacity_cv - 1, 0.5)
        out.append(
            _make(
                RecommendationKind.CHANGE_ALGORITHM,
                row.group,
                f"Switch group {row.group} from {current.value} to {target.value}: {why}",
                group=row.group,
                evidence={
                    "current_algorithm": current.value,
                    "proposed_algorithm": target.value,
                    "latency_p95_spread": _r(row.spread),
                    "capacity_cv": _r(row.cv),
                    "max_latency_spread": max_latency_spread,
                    "max_capacity_cv": max_capacity_cv,
                    "n_accounts": int(row.n_accounts),
                },
                impact={
                    "summary": summary,
                    "latency_p95_spread": _r(row.spread),
                    "round_robin_load_of_smallest_account": _r(row.rr_load),
                },
                confidence=(0.4 + 0.55 * margin) * size_factor + 0.05,
                setting={"group": row.group, "field": "algorithm", "value": target.value},
            )
        )
    return out


# --- 5. retrain a model family whose inputs drifted -----------------------------------------


def retrain_drift(
    psi: pd.DataFrame,
    *,
    family: str,
    model_version: int | str | None,
    threshold: float = PSI_MAJOR,
    top: int = 5,
) -> list[Recommendation]:
    """Recommend retraining ``family`` when any input column drifted by ``psi >= threshold``.

    Parameters
    ----------
    psi : DataFrame
        A :func:`fleetml.decisions.drift.psi_table` result (``column``, ``psi``, ``n_ref``,
        ``n_cur``, ``level``).
    family : str
        The model family ("anomaly", "risk", "forecast").
    model_version : int, str or None
        The version in service, for the record.
    threshold : float, default 0.25
        PSI from which a column counts as drifted (0.25: "major").
    top : int, default 5
        How many of the most drifted columns the evidence lists.

    Returns
    -------
    list of Recommendation
        At most one, fleet-wide (no group); ``dedup_key`` ``"retrain_drift:<family>"``.
    """
    if _empty(psi):
        return []
    _require(psi, ("column", "psi"), "psi table")
    t = pd.DataFrame(
        {
            "column": psi["column"].astype(str).to_numpy(),
            "psi": _num(psi["psi"]).to_numpy(),
            "n_ref": _num(psi["n_ref"]).to_numpy() if "n_ref" in psi else np.nan,
            "n_cur": _num(psi["n_cur"]).to_numpy() if "n_cur" in psi else np.nan,
        }
    ).dropna(subset=["psi"])
    t = t.sort_values(["psi", "column"], ascending=[False, True], kind="stable")
    drifted = t[t["psi"] >= threshold]
    if drifted.empty:
        return []
    shown = t.head(top)
    max_psi = float(drifted["psi"].iloc[0])
    sizes = drifted[["n_ref", "n_cur"]].iloc[0].to_numpy(dtype=float)
    n = float(sizes[np.isfinite(sizes)].min()) if np.isfinite(sizes).any() else float("nan")
    size_factor = n / (n + 100) if math.isfinite(n) else 0.5
    version = f" (v{model_version})" if model_version is not None else ""
    cols = "column" if len(drifted) == 1 else "columns"
    return [
        _make(
            RecommendationKind.RETRAIN_DRIFT,
            family,
            f"Retrain the {family} model{version}: {len(drifted)} input {cols} drifted "
            f"(PSI up to {max_psi:.2f}, most: {drifted['column'].iloc[0]})",
            evidence={
                "family": family,
                "model_version": model_version,
                "threshold": threshold,
                "n_columns": len(t),
                "n_drifted": len(drifted),
                "max_psi": _r(max_psi),
                "top_columns": [
                    {"column": r.column, "psi": _r(r.psi)} for r in shown.itertuples(index=False)
                ],
            },
            impact={
                "summary": f"Retrained on recent data, the {family} model scores the "
                f"population it sees again; {len(drifted)} of {len(t)} inputs moved since "
                + (f"version {model_version}" if model_version is not None else "the model")
                + " was trained",
                "drifted_columns": drifted["column"].head(top).tolist(),
                "max_psi": _r(max_psi),
            },
            confidence=(0.5 + 0.45 * _rising(max_psi - threshold, threshold)) * size_factor
            + 0.05 * min(1.0, len(drifted) / 3),
        )
    ]


# --- 6. investigate a lasting anomaly -------------------------------------------------------


def _metric_list(value: Any) -> list[str]:
    """``top_metrics`` as a list: a list, a JSON list string, or a ``;``/``,`` separated string."""
    if isinstance(value, list | tuple | np.ndarray):
        return [str(v) for v in value if str(v)]
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return []
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return [str(v) for v in parsed if str(v)]
    return [part.strip() for part in text.replace(",", ";").split(";") if part.strip()]


def investigate_anomaly(predictions: pd.DataFrame, *, min_run: int = 3) -> list[Recommendation]:
    """Recommend a look at each account anomalous for at least ``min_run`` consecutive checks.

    Parameters
    ----------
    predictions : DataFrame
        The live loop's predictions: ``account_id``, ``family`` (only ``anomaly`` rows count),
        ``score``, ``flag``, ``run`` (consecutive flagged checks), ``top_metrics`` (list, JSON
        string or ``;``-separated string), ``model_version``; ``group`` when present.
    min_run : int, default 3
        Fewest consecutive anomalous checks.

    Returns
    -------
    list of Recommendation
        One per account (its longest run); ``dedup_key`` ``"investigate_anomaly:<account_id>"``;
        no setting.
    """
    if _empty(predictions):
        return []
    _require(predictions, ("account_id", "score", "flag", "run"), "predictions")
    p = predictions
    if "family" in p.columns:
        p = p[p["family"].astype(str).to_numpy() == "anomaly"]
    run = _num(p["run"])
    p = p.assign(_run=run, _score=_num(p["score"]), account_id=_ids(p["account_id"]))
    p = p[p["account_id"].notna() & p["flag"].fillna(False).astype(bool) & (p["_run"] >= min_run)]
    if p.empty:
        return []
    p = p.sort_values(["account_id", "_run", "_score"], kind="stable")
    p = p.groupby("account_id", sort=True).tail(1)
    out = []
    for _, row in p.iterrows():
        acc = row["account_id"]
        metrics = _metric_list(row["top_metrics"]) if "top_metrics" in p.columns else []
        score = float(row["_score"])
        run_n = int(row["_run"])
        version = row["model_version"] if "model_version" in p.columns else None
        group = row["group"] if "group" in p.columns and pd.notna(row["group"]) else None
        shown = f"; top: {', '.join(metrics[:3])}" if metrics else ""
        out.append(
            _make(
                RecommendationKind.INVESTIGATE_ANOMALY,
                acc,
                f"Investigate account {acc}: anomalous for {run_n} consecutive checks "
                f"(score {score:.2f}{shown})",
                account_id=acc,
                group=str(group) if group is not None else None,
                evidence={
                    "score": _r(score),
                    "run": run_n,
                    "min_run": min_run,
                    "top_metrics": metrics,
                    "model_version": version,
                },
                impact={
                    "summary": "A person finds the cause while the account still works, before "
                    "it turns into a fault",
                    "anomalous_checks": run_n,
                },
                confidence=0.5 * (score if math.isfinite(score) else 0.0)
                + 0.5 * _rising(run_n, min_run),
            )
        )
    return out


# --- 7. the autonomy ladder -----------------------------------------------------------------

#: shadow -> approve and approve -> auto: (next mode, min precision, min recall, min decisions).
LADDER: dict[Mode, tuple[Mode, float, float, int]] = {
    Mode.SHADOW: (Mode.APPROVE, 0.8, 0.5, 10),
    Mode.APPROVE: (Mode.AUTO, 0.9, 0.0, 20),
}
_MODE_EFFECT = {
    Mode.APPROVE: "actions wait in a queue for an operator instead of only being recorded",
    Mode.AUTO: "actions are carried out at once instead of waiting for an operator",
}


def promote_mode(
    policies: Mapping[str, GroupPolicy], shadow_stats: pd.DataFrame
) -> list[Recommendation]:
    """Recommend the next rung of the autonomy ladder for groups whose decisions proved right.

    ``shadow -> approve`` when precision >= 0.8, recall >= 0.5 and at least 10 decisions;
    ``approve -> auto`` when precision >= 0.9 and at least 20 decisions (:data:`LADDER`).
    Groups in ``off`` or ``auto`` get nothing.

    Parameters
    ----------
    policies : Mapping of str to GroupPolicy
        Current settings per group.
    shadow_stats : DataFrame
        ``group``, ``decisions``, ``precision``, ``recall`` of the group's recorded shadow or
        approve decisions, judged by outcomes.

    Returns
    -------
    list of Recommendation
        ``dedup_key`` ``"promote_mode:<group>"``; setting field ``mode``.
    """
    if _empty(shadow_stats):
        return []
    _require(shadow_stats, ("group", "decisions", "precision", "recall"), "shadow_stats")
    s = (
        pd.DataFrame(
            {
                "group": _ids(shadow_stats["group"]),
                "decisions": _num(shadow_stats["decisions"]).fillna(0).to_numpy(),
                "precision": _num(shadow_stats["precision"]).to_numpy(),
                "recall": _num(shadow_stats["recall"]).to_numpy(),
            }
        )
        .dropna(subset=["group"])
        .drop_duplicates("group", keep="last")
    )
    s["mode"] = [_policy(policies, g).mode for g in s["group"]]
    rung = s["mode"].map(lambda m: LADDER.get(Mode(m)))
    s = s[rung.notna()].assign(rung=rung[rung.notna()])
    out = []
    for row in s.itertuples(index=False):
        target, min_p, min_r, min_n = row.rung
        recall_ok = min_r <= 0 or row.recall >= min_r
        if not (row.precision >= min_p and recall_ok and row.decisions >= min_n):
            continue
        current = Mode(row.mode)
        margin = (row.precision - min_p) / (1 - min_p) if min_p < 1 else 1.0
        wrong = (1 - row.precision) * 100
        out.append(
            _make(
                RecommendationKind.PROMOTE_MODE,
                row.group,
                f"Promote group {row.group} from {current.value} to {target.value}: "
                f"{row.decisions:.0f} decisions at precision {row.precision:.0%}, "
                f"recall {row.recall:.0%}",
                group=row.group,
                evidence={
                    "current_mode": current.value,
                    "proposed_mode": target.value,
                    "decisions": int(row.decisions),
                    "precision": _r(row.precision),
                    "recall": _r(row.recall),
                    "required": {
                        "precision": min_p,
                        "recall": min_r if min_r > 0 else None,
                        "decisions": min_n,
                    },
                },
                impact={
                    "summary": f"In {target.value} mode {_MODE_EFFECT[target]}; about "
                    f"{wrong:.0f} in 100 actions would be wrong at the measured precision",
                    "expected_precision": _r(row.precision),
                    "wrong_actions_per_100": _r(wrong, 1),
                },
                confidence=(row.decisions / (row.decisions + min_n)) * (0.6 + 0.4 * margin),
                setting={"group": row.group, "field": "mode", "value": target.value},
            )
        )
    return out


# --- 8. enforcement: a person decides ------------------------------------------------------

_ENFORCEMENT_PHRASE = {
    "banned": "banned it",
    "restricted": "restricted it",
    "quality_drop": "lowered its quality rating",
}


def _detail(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("{", "[")):
            try:
                return json.loads(text)
            except ValueError:
                return text
        return text
    return json_safe(value)


def review_enforcement(events: pd.DataFrame, fleet: Fleet) -> list[Recommendation]:
    """Ask a person to review each account the platform signalled enforcement on.

    The account was drained and paused, never rerouted around: whether it returns is a
    person's decision. One recommendation per account, about its latest enforcement event.

    Parameters
    ----------
    events : DataFrame
        ``ts_ms``, ``account_id``, ``kind``, ``detail``; only kinds in
        :data:`fleetml.vocab.ENFORCEMENT_KINDS` count.
    fleet : Fleet
        The registry, for the account's group (None for an unregistered account).

    Returns
    -------
    list of Recommendation
        ``dedup_key`` ``"review_enforcement:<account_id>"``; no setting; open for a week.
    """
    if _empty(events):
        return []
    _require(events, ("ts_ms", "account_id", "kind"), "events")
    e = events.assign(
        kind=events["kind"].astype(str),
        account_id=_ids(events["account_id"]),
        _ts=_num(events["ts_ms"]),
    )
    e = e[e["account_id"].notna() & e["kind"].isin(sorted(ENFORCEMENT_KINDS))]
    if e.empty:
        return []
    e = e.sort_values(["account_id", "_ts"], kind="stable", na_position="first")
    kinds = e.groupby("account_id", sort=True)["kind"].agg(lambda k: sorted(set(k)))
    counts = e.groupby("account_id", sort=True).size()
    latest = e.groupby("account_id", sort=True).tail(1).set_index("account_id")
    groups = fleet.accounts["group"].astype(str) if fleet is not None else pd.Series(dtype=str)
    out = []
    for acc, row in latest.iterrows():
        kind = str(row["kind"])
        ts = row["_ts"]
        when = _iso(ts) if math.isfinite(ts) else "an unknown time"
        phrase = _ENFORCEMENT_PHRASE.get(kind, f"signalled enforcement ({kind})")
        group = str(groups[acc]) if acc in groups.index else None
        out.append(
            _make(
                RecommendationKind.REVIEW_ENFORCEMENT,
                str(acc),
                f"Review account {acc}: the platform {phrase} at {when}; it was drained and paused",
                account_id=str(acc),
                group=group,
                evidence={
                    "kind": kind,
                    "ts_ms": int(ts) if math.isfinite(ts) else None,
                    "at": when,
                    "detail": _detail(row["detail"]) if "detail" in latest.columns else None,
                    "events": int(counts[acc]),
                    "kinds": kinds[acc],
                },
                impact={
                    "summary": "The account stays drained and paused until a person decides; "
                    "its traffic is never routed around an enforcement signal",
                    "paused_accounts": 1,
                },
                confidence=1.0,
                expires_after_s=ENFORCEMENT_EXPIRES_S,
            )
        )
    return out
