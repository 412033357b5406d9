"""Per-group request balancers: which account of a group takes the next request.

The service answers ``POST /v1/route`` ("the next account of group g") from one of these, held
in memory per group, and a runtime can mirror the same object locally. There is one class per
:class:`~fleetml.decisions.contracts.Algorithm`, all behind :class:`Balancer`:

* ``round_robin``: cycle over the accounts whose weight is above 0;
* ``weighted_round_robin``: nginx's smooth weighted round robin (weights 5, 1, 1 give
  ``a a b a c a a``, not five ``a`` in a row);
* ``least_load``: fewest outstanding requests relative to weight, ties broken at random;
* ``p2c_ewma``: power of two choices on peak-EWMA latency times outstanding work (Finagle's and
  Linkerd's ``PeakEwma``), with the routing weights the ML layer sets: candidates are drawn in
  proportion to weight and the cost is divided by it. With equal weights it is plain Linkerd.

Every balancer keeps the same per-account state (weight, outstanding requests, a peak-EWMA
latency estimate), so :meth:`Balancer.snapshot` reads alike for all, and switching a group's
algorithm loses nothing the next one needs. ``pick`` and ``finish`` are plain Python under one
:class:`threading.Lock`: on 20 accounts a ``pick`` costs a few microseconds, where one numpy call
alone would cost about one.

Pure: the standard library only; time is ``time.monotonic()`` unless the caller passes
``now_s`` (the benchmark passes simulated time).
"""

from __future__ import annotations

import math
import random
import statistics
import threading
import time
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections.abc import Mapping
from typing import Any, ClassVar

from fleetml.decisions.contracts import Algorithm

#: An estimate never decays below this (seconds): an account idle for hours still compares on
#: its outstanding requests instead of costing exactly zero (Finagle adds a penalty instead).
MIN_LATENCY_S = 1e-6


class _Account:
    """Mutable per-account state; only touched under the balancer's lock."""

    __slots__ = ("account_id", "weight", "outstanding", "ewma_s", "stamp_s", "sampled", "current")

    def __init__(self, account_id: str, weight: float, ewma_s: float) -> None:
        self.account_id = account_id
        self.weight = weight
        self.outstanding = 0
        self.ewma_s = ewma_s
        # When ewma_s was last set. None until the account is first read: a neutral prior starts
        # decaying from then, in the caller's clock (monotonic or simulated).
        self.stamp_s: float | None = None
        self.sampled = False  # False while ewma_s is the neutral prior
        self.current = 0.0  # smooth weighted round robin's running weight

    def estimate(self, now_s: float, tau_s: float) -> float:
        """Latency estimate at ``now_s``: the last one, decayed toward 0 since it was set.

        Decaying toward 0 between samples is what brings a once-slow account back, and gets a
        new account probed: it looks cheaper and cheaper until it is picked (Finagle and Tower
        do the same).
        """
        if self.stamp_s is None:
            self.stamp_s = now_s
            return self.ewma_s
        elapsed = now_s - self.stamp_s
        if elapsed <= 0.0:
            return self.ewma_s
        return max(self.ewma_s * math.exp(-elapsed / tau_s), MIN_LATENCY_S)

    def observe(self, sample_s: float, now_s: float, tau_s: float) -> None:
        """Peak EWMA: a sample above the estimate replaces it; a lower one pulls it down."""
        if not self.sampled or self.stamp_s is None:
            self.ewma_s = sample_s  # the first sample replaces the neutral prior
            self.sampled = True
        else:
            w = math.exp(-max(now_s - self.stamp_s, 0.0) / tau_s)
            decayed = self.ewma_s * w
            self.ewma_s = sample_s if sample_s > decayed else decayed + sample_s * (1.0 - w)
        self.stamp_s = now_s


def _check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for account_id, weight in weights.items():
        w = float(weight)
        if not (0.0 <= w < math.inf):
            raise ValueError(
                f"weight of account {account_id!r} is {weight!r}; a routing weight must be a "
                "finite number >= 0 (0 takes the account out of rotation)"
            )
        out[str(account_id)] = w
    return out


class Balancer(ABC):
    """A group's request balancer: pick an account, learn from how its request finished.

    Parameters
    ----------
    weights : Mapping[str, float], optional
        Routing weight per account id; 0 keeps an account known but never picked.
    seed : int, optional
        Seed of the balancer's own random generator (tie breaks, candidate draws).
    tau_s : float, default 10.0
        Time constant of the peak-EWMA latency estimate, in seconds.
    failure_penalty_s : float, default 1.0
        A failed request counts as a latency sample of at least this many seconds.
    default_latency_s : float, default 0.05
        Neutral latency estimate of a new account when no account has a sample yet (otherwise
        the median of the others' estimates).

    Notes
    -----
    Thread-safe: ``pick``, ``finish``, ``set_weights`` and ``snapshot`` hold one lock.
    """

    algorithm: ClassVar[Algorithm]

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        *,
        seed: int | None = None,
        tau_s: float = 10.0,
        failure_penalty_s: float = 1.0,
        default_latency_s: float = 0.05,
    ) -> None:
        for name, value in (
            ("tau_s", tau_s),
            ("failure_penalty_s", failure_penalty_s),
            ("default_latency_s", default_latency_s),
        ):
            if not (0.0 < float(value) < math.inf):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        self.tau_s = float(tau_s)
        self.failure_penalty_s = float(failure_penalty_s)
        self.default_latency_s = float(default_latency_s)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._accounts: dict[str, _Account] = {}
        self._active: list[_Account] = []  # weight > 0, in the order the weights were given
        self.set_weights(weights or {})

    # -- configuration -------------------------------------------------------------------------

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Replace the group's routing weights.

        Accounts missing from ``weights`` are forgotten; accounts that stay keep their
        outstanding count and latency estimate; new accounts start from a neutral estimate.

        Raises
        ------
        ValueError
            If a weight is negative, infinite or not a number.
        """
        clean = _check_weights(weights)
        with self._lock:
            old = self._accounts
            sampled = [a.ewma_s for a in old.values() if a.sampled]
            neutral = statistics.median(sampled) if sampled else self.default_latency_s
            accounts: dict[str, _Account] = {}
            for account_id, w in clean.items():
                account = old.get(account_id)
                if account is None:
                    account = _Account(account_id, w, neutral)
                account.weight = w
                accounts[account_id] = account
            self._accounts = accounts
            self._active = [a for a in accounts.values() if a.weight > 0.0]
            self._rebuild()

    def _rebuild(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Refresh derived structures after the weights changed (called under the lock)."""

    # -- the hot path --------------------------------------------------------------------------

    @abstractmethod
    def _choose(self, now_s: float | None) -> _Account | None:
        """The account for the next request among ``self._active`` (called under the lock)."""

    def pick(self, now_s: float | None = None) -> str | None:
        """The account that takes the next request, counted as outstanding on it.

        Parameters
        ----------
        now_s : float, optional
            Current time in seconds (``time.monotonic()`` when omitted); only ``p2c_ewma``
            reads it.

        Returns
        -------
        str or None
            An account id, or None when no account has a weight above 0.
        """
        with self._lock:
            account = self._choose(now_s)
            if account is None:
                return None
            account.outstanding += 1
            return account.account_id

    def finish(
        self,
        account_id: str,
        latency_s: float,
        ok: bool = True,
        now_s: float | None = None,
    ) -> None:
        """Record that a request picked for ``account_id`` finished (or timed out).

        The account's outstanding count drops by one (never below 0) and ``latency_s`` feeds
        its latency estimate; a failure counts as at least ``failure_penalty_s``. An account
        the balancer does not know (removed meanwhile) is ignored.

        Raises
        ------
        ValueError
            If ``latency_s`` is negative, infinite or not a number.
        """
        if not (0.0 <= latency_s < math.inf):
            raise ValueError(
                f"latency of a request on account {account_id!r} is {latency_s!r}; "
                "pass the seconds it took (>= 0)"
            )
        sample = latency_s if ok else max(latency_s, self.failure_penalty_s)
        now = time.monotonic() if now_s is None else now_s
        with self._lock:
            account = self._accounts.get(account_id)
            if account is None:
                return
            if account.outstanding > 0:
                account.outstanding -= 1
            account.observe(sample, now, self.tau_s)

    # -- reading -------------------------------------------------------------------------------

    def snapshot(self, now_s: float | None = None) -> dict[str, dict[str, Any]]:
        """Per account: ``weight``, ``outstanding`` and ``ewma_ms`` (the estimate at ``now_s``)."""
        now = time.monotonic() if now_s is None else now_s
        with self._lock:
            return {
                a.account_id: {
                    "weight": a.weight,
                    "outstanding": a.outstanding,
                    "ewma_ms": a.estimate(now, self.tau_s) * 1000.0,
                }
                for a in self._accounts.values()
            }

    @property
    def weights(self) -> dict[str, float]:
        """The routing weights in effect."""
        with self._lock:
            return {a.account_id: a.weight for a in self._accounts.values()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(accounts={len(self._accounts)}, active={len(self._active)})"


class RoundRobinBalancer(Balancer):
    """Cycle over the accounts whose weight is above 0, ignoring the weights' sizes."""

    algorithm = Algorithm.ROUND_ROBIN
    _next = 0  # index of the next account in the active list

    def _choose(self, now_s: float | None) -> _Account | None:
        active = self._active
        if not active:
            return None
        i = self._next % len(active)
        self._next = i + 1
        return active[i]


class WeightedRoundRobinBalancer(Balancer):
    """nginx's smooth weighted round robin: exact shares per cycle, spread across the cycle.

    Each pick adds every account's weight to its running weight, takes the largest and takes the
    total weight off it. Over ``sum(weights)`` picks (integer weights) each account is picked
    exactly its weight's times.
    """

    algorithm = Algorithm.WEIGHTED_ROUND_ROBIN

    def _choose(self, now_s: float | None) -> _Account | None:
        best: _Account | None = None
        total = 0.0
        for a in self._active:
            a.current += a.weight
            total += a.weight
            if best is None or a.current > best.current:
                best = a
        if best is not None:
            best.current -= total
        return best


class LeastLoadBalancer(Balancer):
    """Fewest outstanding requests relative to weight, ties broken at random.

    The load compared is ``(outstanding + 1) / weight``, the load an account would carry with
    this request: with equal weights it orders accounts as ``outstanding`` does, and idle
    accounts of unequal weight split the traffic by weight instead of tying.
    """

    algorithm = Algorithm.LEAST_LOAD

    def _choose(self, now_s: float | None) -> _Account | None:
        best: _Account | None = None
        best_load = math.inf
        ties = 0
        random_ = self._rng.random
        for a in self._active:
            load = (a.outstanding + 1) / a.weight
            if load < best_load:
                best, best_load, ties = a, load, 1
            elif load == best_load:
                ties += 1
                if random_() * ties < 1.0:  # reservoir sampling: each tie equally likely
                    best = a
        return best


class P2CEwmaBalancer(Balancer):
    """Power of two choices on peak-EWMA latency times outstanding work, weighted by ML.

    Two distinct candidates are drawn with probability proportional to weight; the one with the
    lower ``estimate * (outstanding + 1) / weight`` takes the request. The estimate is a peak
    EWMA: a latency sample above it replaces it at once, a lower one pulls it down with time
    constant ``tau_s``, and between samples it decays toward 0, so a slow account is avoided at
    once and probed again once it has had time to recover. With equal weights this is Finagle's
    and Linkerd's P2C ``PeakEwma``.
    """

    algorithm = Algorithm.P2C_EWMA

    def _rebuild(self) -> None:
        cumulative: list[float] = []
        total = 0.0
        for a in self._active:
            total += a.weight
            cumulative.append(total)
        self._cumulative = cumulative

    def _draw_two(self) -> tuple[_Account, _Account]:
        active, cumulative = self._active, self._cumulative
        n = len(active)
        total = cumulative[-1]
        random_ = self._rng.random
        i = min(bisect_right(cumulative, random_() * total), n - 1)
        # The second from the others: draw over the remaining weight, stepping over i's share.
        w_i = active[i].weight
        x = random_() * (total - w_i)
        if x >= cumulative[i] - w_i:
            x += w_i
        j = min(bisect_right(cumulative, x), n - 1)
        if j == i:  # only by rounding at the ends
            j = (i + 1) % n
        return active[i], active[j]

    def _choose(self, now_s: float | None) -> _Account | None:
        active = self._active
        if len(active) < 2:
            return active[0] if active else None
        now = time.monotonic() if now_s is None else now_s
        a, b = self._draw_two()
        tau = self.tau_s
        cost_a = a.estimate(now, tau) * (a.outstanding + 1) / a.weight
        cost_b = b.estimate(now, tau) * (b.outstanding + 1) / b.weight
        return b if cost_b < cost_a else a


#: The balancer class of each algorithm.
BALANCERS: dict[Algorithm, type[Balancer]] = {
    cls.algorithm: cls
    for cls in (RoundRobinBalancer, WeightedRoundRobinBalancer, LeastLoadBalancer, P2CEwmaBalancer)
}


def make_balancer(
    algorithm: Algorithm | str,
    weights: Mapping[str, float],
    *,
    seed: int | None = None,
    **kw: Any,
) -> Balancer:
    """A fresh balancer of ``algorithm`` over ``weights``.

    Parameters
    ----------
    algorithm : Algorithm or str
        One of :class:`~fleetml.decisions.contracts.Algorithm`.
    weights : Mapping[str, float]
        Routing weight per account id.
    seed : int, optional
        Seed of the balancer's random choices.
    **kw
        ``tau_s``, ``failure_penalty_s``, ``default_latency_s`` (see :class:`Balancer`).

    Raises
    ------
    ValueError
        If ``algorithm`` names no known algorithm, or a weight or setting is invalid.
    """
    try:
        algo = Algorithm(algorithm)
    except ValueError:
        choices = ", ".join(a.value for a in Algorithm)
        raise ValueError(
            f"unknown balancing algorithm {algorithm!r}; choose one of {choices}"
        ) from None
    return BALANCERS[algo](weights, seed=seed, **kw)
