"""Routing weights from the models: capacity x health x (1 - risk) x headroom, smoothed.

:func:`target_weights` is the instantaneous target; :class:`WeightSmoother` keeps each account's
published weight between ticks: a cut applies at once (a failing account must lose traffic
now), a rise is smoothed and a recovered account ramps up over a probation period, so one good
tick never floods an account that just came back. Floors and caps are shares of capacity.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from fleetml.decisions.contracts import Fleet, GroupPolicy


def _per_account(fleet: Fleet, policies: Mapping[str, GroupPolicy], default: GroupPolicy, name):
    groups = fleet.accounts["group"].to_numpy()
    values = {g: getattr(policies.get(g, default), name) for g in set(groups.tolist())}
    return np.asarray([values[g] for g in groups.tolist()], dtype=float)


def target_weights(
    fleet: Fleet,
    *,
    health: np.ndarray,
    risk: np.ndarray | None = None,
    headroom: np.ndarray | None = None,
    latency_ratio: np.ndarray | None = None,
    policies: Mapping[str, GroupPolicy] | None = None,
    default: GroupPolicy | None = None,
) -> tuple[np.ndarray, list[list[str]]]:
    """The weight each account should carry now, and the reasons it is below its capacity.

    Parameters
    ----------
    fleet
        The registry; ``capacity`` is the weight of a healthy, idle, riskless account.
    health
        1 healthy, 0 out (a failed probe, a reported fault, failed over, paused), in between
        for partial health. Fleet order.
    risk
        Calibrated probability of a technical fault within the watched horizon (NaN: unknown,
        counts as 0).
    headroom
        Share of the account's capacity that is free (1 idle, 0 saturated); NaN counts as 1.
    latency_ratio
        The account's recent p95 latency over its group's median (NaN or <= 1: no penalty);
        the weight is divided by it, so an account twice as slow as its peers gets half.
    policies, default
        Per-group settings: ``weight_floor`` and ``weight_cap`` (shares of capacity).

    Returns
    -------
    weights, reasons
        Fleet-order weights (>= 0) and, per account, short reasons for every factor below 1.
    """
    default = default or GroupPolicy()
    policies = policies or {}
    cap = fleet.accounts["capacity"].to_numpy(dtype=float)
    n = len(cap)
    h = np.clip(np.nan_to_num(np.asarray(health, dtype=float), nan=1.0), 0.0, 1.0)
    r = np.zeros(n) if risk is None else np.clip(np.nan_to_num(risk, nan=0.0), 0.0, 1.0)
    hr = np.ones(n) if headroom is None else np.clip(np.nan_to_num(headroom, nan=1.0), 0.0, 1.0)
    lr = np.ones(n) if latency_ratio is None else np.nan_to_num(latency_ratio, nan=1.0)
    lat = 1.0 / np.maximum(lr, 1.0)
    floor = _per_account(fleet, policies, default, "weight_floor")
    ceiling = _per_account(fleet, policies, default, "weight_cap")
    raw = cap * h * (1.0 - r) * hr * lat
    weights = np.where(h > 0, np.clip(raw, floor * cap, ceiling * cap), 0.0)
    reasons: list[list[str]] = [[] for _ in range(n)]
    for i in np.flatnonzero(h < 1):
        reasons[i].append("out of rotation" if h[i] == 0 else f"health {h[i]:.2f}")
    for i in np.flatnonzero(r >= 0.05):
        reasons[i].append(f"failure risk {r[i]:.2f}")
    for i in np.flatnonzero(hr < 0.95):
        reasons[i].append(f"headroom {hr[i]:.2f}")
    for i in np.flatnonzero(lat < 0.95):
        reasons[i].append(f"latency {lr[i]:.1f}x the group median")
    return weights, reasons


class WeightSmoother:
    """Published weights between ticks (see the module docstring).

    ``update`` takes the fleet-order targets and a mask of accounts that came back into rotation
    this tick (failback, resume); those start at the floor and ramp to their target over the
    group's ``probation_s``. With ``fast`` (pre-balancing ahead of a forecast peak) rises apply
    without smoothing.
    """

    def __init__(self):
        self.ids: np.ndarray | None = None
        self.weights: np.ndarray | None = None
        self.probation_since: np.ndarray | None = None

    def _align(self, fleet: Fleet, initial: np.ndarray) -> None:
        ids = fleet.ids
        if self.ids is not None and len(self.ids) == len(ids) and (self.ids == ids).all():
            return
        old = pd.Series(self.weights, index=self.ids) if self.ids is not None else pd.Series()
        since = (
            pd.Series(self.probation_since, index=self.ids) if self.ids is not None else pd.Series()
        )
        self.weights = old.reindex(ids).to_numpy(dtype=float)
        self.weights = np.where(np.isnan(self.weights), initial, self.weights)
        self.probation_since = since.reindex(ids).fillna(-1).to_numpy(dtype=np.int64)
        self.ids = ids.copy()

    def update(
        self,
        fleet: Fleet,
        target: np.ndarray,
        *,
        now_ms: int,
        returned: np.ndarray | None = None,
        fast: np.ndarray | None = None,
        policies: Mapping[str, GroupPolicy] | None = None,
        default: GroupPolicy | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(weights, in_probation)`` in fleet order."""
        default = default or GroupPolicy()
        policies = policies or {}
        self._align(fleet, target)
        cap = fleet.accounts["capacity"].to_numpy(dtype=float)
        if returned is not None and returned.any():
            self.probation_since[returned] = now_ms
        alpha = _per_account(fleet, policies, default, "smoothing")
        prob_ms = _per_account(fleet, policies, default, "probation_s") * 1000.0
        floor = _per_account(fleet, policies, default, "weight_floor") * cap
        since = self.probation_since
        in_prob = (since >= 0) & (now_ms - since < prob_ms)
        self.probation_since = np.where((since >= 0) & ~in_prob, -1, since)
        ramp = np.where(
            in_prob, np.clip((now_ms - since) / np.maximum(prob_ms, 1.0), 0.0, 1.0), 1.0
        )
        capped = np.where(in_prob, np.minimum(target, floor + (target - floor) * ramp), target)
        prev = self.weights
        rising = capped > prev
        smooth = alpha * prev + (1.0 - alpha) * capped
        if fast is not None:
            smooth = np.where(fast, capped, smooth)
        new = np.where(rising, smooth, capped)  # cuts apply at once
        new = np.where(capped <= 0, 0.0, new)
        self.weights = new
        return new.copy(), in_prob


def spread_below(
    groups: np.ndarray,
    weights: np.ndarray,
    *,
    load: np.ndarray,
    limit: np.ndarray,
    free: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-spread each group's traffic so that no account is sent more than its ``limit``.

    The platform throttles a number pushed past its capacity, so while a group has room an
    account whose share of the group's load would exceed its limit (e.g. 90 % of its capacity)
    is cut to the limit and the excess goes to its peers below theirs, in proportion to their
    weights (water-filling). A group whose load exceeds the sum of its limits keeps its weights:
    someone must carry the overload, and concentrating it would only move the throttling.

    Parameters
    ----------
    groups
        Group of each account (fleet order).
    weights
        Routing weights (>= 0); shares are weight / group total.
    load
        Messages per minute routed to each account now (NaN: 0); their sum is the group's load.
    limit
        Messages per minute each account should carry at most.
    free
        Accounts whose weight may change (default: all); the others (held accounts) keep theirs
        and their load is not re-spread.

    Returns
    -------
    weights, capped
        New weights (the group totals are kept) and the accounts cut to their limit.
    """
    w = np.asarray(weights, dtype=float).copy()
    n = len(w)
    free = np.ones(n, dtype=bool) if free is None else np.asarray(free, dtype=bool)
    load = np.nan_to_num(np.asarray(load, dtype=float), nan=0.0)
    limit = np.maximum(np.asarray(limit, dtype=float), 0.0)
    capped = np.zeros(n, dtype=bool)
    for g in np.unique(groups):
        m = (groups == g) & free & (w > 0)
        total = w[m].sum()
        demand = load[(groups == g) & free].sum()
        if total <= 0 or demand <= 0 or demand > limit[m].sum():
            continue
        share = demand * w[m] / total
        lim = limit[m]
        fixed = np.zeros(len(share), dtype=bool)
        for _ in range(len(share)):
            over = ~fixed & (share > lim * (1 + 1e-9))
            if not over.any():
                break
            fixed |= over
            rest = demand - lim[fixed].sum()
            base = w[m][~fixed]
            share = np.where(fixed, lim, 0.0)
            if base.sum() > 0:
                share[~fixed] = rest * base / base.sum()
        capped[np.flatnonzero(m)[fixed]] = True
        w[m] = share / demand * total
    return w, capped
