"""The route table behind ``POST /v1/route``: one balancer per group, in memory.

Each group's accounts are routed by the group's algorithm (its policy, default ``p2c_ewma``)
over the routing weights the tick wrote (``weights``). An account without a stored weight (no
tick ran yet, or it was registered since the last one) routes at its registry capacity, so
routing works from the first second. The registry also has the last word on who may take
traffic now: a retired account is dropped; ``draining``, ``failed`` and ``disabled`` accounts
get weight 0; a ``paused`` account is held.

**Holds.** An account held for platform enforcement (its weight's reasons start with "held",
or it is paused in the registry) keeps its share of the group's traffic: a message that falls
to it must wait for it, never go out from another number. A group's picks are therefore split
in two steps: a smooth weighted round robin between each held account and "the live accounts"
(held accounts by their frozen weight, the live ones by their summed weight; by account count
for ``round_robin``), then, for a live pick, the group's own balancer over the live accounts
only. Keeping held accounts out of the balancer matters: their messages are never sent, so
their outstanding count would only grow and ``least_load`` / ``p2c_ewma`` would slowly hand
their share to the others.

**Freshness.** :meth:`RouteTable.refresh` compares a cheap version (newest weights tick, the
registry's newest change and size, each group's algorithm) and rebuilds only when it moved;
:meth:`RouteTable.due` says when ``refresh_s`` has passed. A rebuild keeps every balancer whose
algorithm did not change (``set_weights`` keeps latency estimates and outstanding counts), so
what the balancers learned survives new weights. A :meth:`RouteTable.route` call reads only
memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fleetml.decisions.balancer import Balancer, make_balancer
from fleetml.decisions.contracts import Algorithm, Fleet, GroupPolicy
from fleetml.vocab import AccountState

log = logging.getLogger("fleetml.routing")

#: What a held pick tells the runtime.
HOLD_REASON = "platform enforcement: hold this message, do not send it from another number"
#: The splitter's entry standing for every live account (no account id has a NUL in it).
_LIVE = "\x00live"
#: Registry states whose accounts take no new traffic, and the one that holds its traffic.
_OUT_STATES = frozenset({AccountState.DRAINING, AccountState.FAILED, AccountState.DISABLED})
_HELD_STATE = AccountState.PAUSED


class UnknownGroup(LookupError):
    """No account belongs to the group."""


class NoRoute(Exception):
    """Every account of the group has weight 0: nobody can take the message now."""


@dataclass
class _Group:
    """One group's routing: the live accounts' balancer, the held accounts and the splitter."""

    algorithm: Algorithm
    balancer: Balancer  # the live (not held) accounts, weight 0 included
    weights: dict[str, float]  # every account of the group -> weight in effect
    held: frozenset[str]
    splitter: Balancer | None  # None when no held account has a share

    def pick(self) -> tuple[str | None, bool]:
        """(account id or None, held)."""
        if self.splitter is not None:
            choice = self.splitter.pick()
            if choice is not None and choice != _LIVE:
                return choice, True
        return self.balancer.pick(), False


@dataclass
class RoutePlan:
    """Per group: the weight of each account and which of them are held (what a rebuild reads)."""

    weights: dict[str, dict[str, float]] = field(default_factory=dict)
    held: dict[str, set[str]] = field(default_factory=dict)


def plan_routes(registry: pd.DataFrame, stored: pd.DataFrame) -> RoutePlan:
    """Each group's routing weights from the registry and the stored weights.

    Parameters
    ----------
    registry : DataFrame
        Live accounts (``accounts_frame``): account_id, role, master_id, group, state, capacity.
    stored : DataFrame
        The weights table (``read_weights``): account_id, weight, reasons.

    Groups are the registry's (a master without a group forms its own, as in
    :class:`~fleetml.decisions.contracts.Fleet`); accounts not in the registry are dropped.
    """
    plan = RoutePlan()
    if not len(registry):
        return plan
    fleet = Fleet.from_records(registry).accounts
    state = registry.set_index(registry["account_id"].astype(str))["state"].astype(str)
    fleet = fleet.assign(state=state.reindex(fleet.index).to_numpy())
    weight = fleet["capacity"].astype(float)
    held = fleet["state"] == _HELD_STATE.value
    if len(stored):
        rows = stored.set_index(stored["account_id"].astype(str))
        rows = rows[~rows.index.duplicated(keep="last")].reindex(fleet.index)
        has = rows["weight"].notna().to_numpy()
        weight = weight.where(~has, pd.to_numeric(rows["weight"], errors="coerce"))
        held |= rows["reasons"].map(_is_held).astype(bool)
    out = fleet["state"].isin([s.value for s in _OUT_STATES]) & ~held
    weight = weight.where(~out, 0.0).fillna(0.0).clip(lower=0.0)
    columns = (
        fleet.index.astype(str).tolist(),
        fleet["group"].astype(str).tolist(),
        weight.tolist(),
        held.tolist(),
    )
    for account_id, group, w, h in zip(*columns, strict=True):
        plan.weights.setdefault(group, {})[account_id] = w
        if h:
            plan.held.setdefault(group, set()).add(account_id)
    return plan


def _is_held(reasons: Any) -> bool:
    if isinstance(reasons, str):
        reasons = [reasons]
    if not isinstance(reasons, list | tuple):
        return False
    return any(isinstance(r, str) and r.startswith("held") for r in reasons)


class RouteTable:
    """Every group's balancer, rebuilt from the store when weights, registry or policies moved.

    Parameters
    ----------
    engine
        The store.
    refresh_s : float, default 2.0
        Least time between two version checks (``route_refresh_s``).
    seed : int, optional
        Seed of the balancers' random choices (tests); None: unpredictable.
    balancer_options : Mapping, optional
        ``tau_s``, ``failure_penalty_s``, ``default_latency_s`` of every balancer.

    Notes
    -----
    Thread-safe: :meth:`route` reads a dictionary that :meth:`refresh` replaces whole, and
    each balancer has its own lock.
    """

    def __init__(
        self,
        engine,
        *,
        refresh_s: float = 2.0,
        seed: int | None = None,
        balancer_options: Mapping[str, float] | None = None,
    ):
        self.engine = engine
        self.refresh_s = float(refresh_s)
        self.seed = seed
        self.balancer_options = dict(balancer_options or {})
        self._groups: dict[str, _Group] = {}
        self._version: tuple | None = None
        self._checked = 0.0
        self._loaded = False
        self._refreshing = False  # a background refresh is queued or running
        self._flag = threading.Lock()  # guards _refreshing
        self._work = threading.Lock()  # one refresh at a time

    # -- freshness -----------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """Whether a refresh has succeeded once (before that, nothing can be routed)."""
        return self._loaded

    def due(self) -> bool:
        """Whether a refresh should look: never loaded, or ``refresh_s`` since the last look
        and no background refresh under way."""
        if not self._loaded:
            return True
        return not self._refreshing and time.monotonic() - self._checked >= self.refresh_s

    def refresh_in_background(self) -> None:
        """Refresh in a short-lived thread; :meth:`route` keeps answering from the current table
        meanwhile. A failed refresh is logged and tried again ``refresh_s`` later."""
        with self._flag:
            if self._refreshing:
                return
            self._refreshing = True
        threading.Thread(target=self._background, name="fleetml-routes", daemon=True).start()

    def _background(self) -> None:
        try:
            self.refresh()
        except Exception:
            log.exception(
                "could not refresh the route table; routing by the previous one, next try in "
                "%.1f s",
                self.refresh_s,
            )
        finally:
            self._refreshing = False

    def refresh(self, *, force: bool = False) -> bool:
        """Rebuild the table if the store changed since the last look (always when ``force``);
        returns whether it was rebuilt.

        While another refresh runs this waits for it only when ``force`` or while nothing was
        ever loaded; otherwise it returns False at once.
        """
        if not self._work.acquire(blocking=force or not self._loaded):
            return False
        try:
            version, policies = self._read_version()
            if not force and self._loaded and version == self._version:
                return False
            self._rebuild(policies)
            self._version = version
            self._loaded = True
            return True
        finally:
            self._checked = time.monotonic()  # a failing store is asked again in refresh_s
            self._work.release()

    def _read_version(self) -> tuple[tuple, dict[str, GroupPolicy]]:
        from fleetml.services.data import registry_version
        from fleetml.store.policies import read_group_policies
        from fleetml.store.weights import weights_version

        policies = read_group_policies(self.engine)
        algorithms = tuple(sorted((g, p.algorithm.value) for g, p in policies.items()))
        return (weights_version(self.engine), registry_version(self.engine), algorithms), policies

    def _rebuild(self, policies: Mapping[str, GroupPolicy]) -> None:
        from fleetml.store.accounts import accounts_frame
        from fleetml.store.weights import read_weights

        plan = plan_routes(accounts_frame(self.engine), read_weights(self.engine))
        self.apply(plan, policies)

    def apply(self, plan: RoutePlan, policies: Mapping[str, GroupPolicy]) -> None:
        """Install ``plan``, keeping the balancers (and what they learned) of groups whose
        algorithm did not change."""
        default = GroupPolicy().algorithm
        old = self._groups
        groups: dict[str, _Group] = {}
        for name, weights in plan.weights.items():
            policy = policies.get(name)
            algorithm = policy.algorithm if policy is not None else default
            held = frozenset(plan.held.get(name, ()))
            live = {a: w for a, w in weights.items() if a not in held}
            previous = old.get(name)
            if previous is not None and previous.algorithm == algorithm:
                balancer = previous.balancer
                balancer.set_weights(live)
            else:
                balancer = make_balancer(
                    algorithm, live, seed=self._seed(name), **self.balancer_options
                )
            splitter = self._splitter(algorithm, weights, held, previous)
            groups[name] = _Group(
                algorithm=Algorithm(algorithm),
                balancer=balancer,
                weights=dict(weights),
                held=held,
                splitter=splitter,
            )
        self._groups = groups  # one assignment: a concurrent route sees the old or the new

    def _splitter(
        self,
        algorithm: Algorithm,
        weights: Mapping[str, float],
        held: frozenset[str],
        previous: _Group | None,
    ) -> Balancer | None:
        shares = {a: weights[a] for a in held if weights[a] > 0}
        if not shares:
            return None
        live = [w for a, w in weights.items() if a not in held and w > 0]
        if algorithm == Algorithm.ROUND_ROBIN:  # round robin ignores sizes: one share each
            shares = dict.fromkeys(shares, 1.0)
            shares[_LIVE] = float(len(live))
        else:
            shares[_LIVE] = float(sum(live))
        if previous is not None and previous.splitter is not None:
            previous.splitter.set_weights(shares)
            return previous.splitter
        return make_balancer(Algorithm.WEIGHTED_ROUND_ROBIN, shares)

    def _seed(self, group: str) -> int | None:
        if self.seed is None:
            return None
        return self.seed + sum(group.encode()) * 7919

    # -- the hot path --------------------------------------------------------------------------

    def route(self, group: str, report: Iterable[tuple[str, float, bool]] = ()) -> dict[str, Any]:
        """Feed ``report`` (account id, latency in ms, ok) to the group's balancer, then pick.

        Returns the answer of ``POST /v1/route``: account_id, group, algorithm, weight, hold,
        reason, reports_ignored.

        Raises
        ------
        UnknownGroup
            No account belongs to ``group``.
        NoRoute
            Every account of the group has weight 0 and none is held.
        """
        g = self._groups.get(group)
        if g is None:
            raise UnknownGroup(group)
        ignored = 0
        for account_id, latency_ms, ok in report:
            if account_id in g.held:
                continue  # a held message was never sent: nothing to learn
            if account_id not in g.weights:
                ignored += 1
                continue
            g.balancer.finish(account_id, latency_ms / 1000.0, ok)
        account_id, held = g.pick()
        if account_id is None:
            raise NoRoute(group)
        return {
            "account_id": account_id,
            "group": group,
            "algorithm": g.algorithm.value,
            "weight": g.weights[account_id],
            "hold": held,
            "reason": HOLD_REASON if held else None,
            "reports_ignored": ignored,
        }

    # -- reading -------------------------------------------------------------------------------

    def groups(self) -> list[str]:
        return sorted(self._groups)

    def snapshot(self, group: str) -> dict[str, Any]:
        """The group's algorithm, held accounts and per-account balancer state."""
        g = self._groups.get(group)
        if g is None:
            raise UnknownGroup(group)
        return {
            "algorithm": g.algorithm.value,
            "held": sorted(g.held),
            "accounts": g.balancer.snapshot(),
        }
