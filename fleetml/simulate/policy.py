"""What a routing policy sees and does in the closed loop, and the reactive baseline.

A policy only sees what a runtime could see: exported metrics (with gaps), the events the runtime
reports, its own health probe and the controller state it set itself. It never sees the ground
truth (precursors, scheduled faults, enforcement waves).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from fleetml.simulate.fleet import FleetLayout


@dataclass
class Observation:
    """The fleet as a runtime sees it after one step. Arrays are indexed by account position."""

    step: int
    ts_ms: int
    layout: FleetLayout
    metrics: dict[str, np.ndarray]  # exported values; NaN where the account sent no sample
    deltas: dict[str, np.ndarray]  # per-step increase of each counter (reset-aware); NaN if unknown
    health_ok: np.ndarray  # bool: the runtime's health probe passed
    events: list[dict]  # events reported during this step: ts_ms, account_id, kind, detail
    group_demand: np.ndarray  # messages that arrived per group during this step
    in_rotation: np.ndarray  # bool, controller state
    paused: np.ndarray
    draining: np.ndarray
    enforced: np.ndarray  # bool: restricted or banned (known from reported events)
    weights: np.ndarray  # routing weights in effect
    step_s: int = 60

    @property
    def ts(self) -> pd.Timestamp:
        return pd.Timestamp(self.ts_ms, unit="ms", tz="UTC")


@dataclass
class Actions:
    """What a policy asks for. Account lists hold positions (int) or account ids (str).

    ``weights``: non-negative routing weight per account (NaN keeps the current weight); demand of
    a group is split among its routable accounts in proportion. ``failover`` takes an account out
    of rotation and hands its queue to its group's routable peers; ``failback`` returns it.
    ``pause`` stops sending (queue held), ``drain`` stops new traffic but lets the queue empty,
    ``resume`` clears pause and drain.
    """

    weights: np.ndarray | None = None
    failover: Sequence[int | str] = ()
    failback: Sequence[int | str] = ()
    pause: Sequence[int | str] = ()
    drain: Sequence[int | str] = ()
    resume: Sequence[int | str] = ()


@runtime_checkable
class Policy(Protocol):
    def decide(self, observation: Observation) -> Actions: ...


class StaticPolicy:
    """Routing weights proportional to capacity, never fails over (a do-nothing reference)."""

    def decide(self, observation: Observation) -> Actions:
        if observation.step < 0:
            return Actions(weights=observation.layout.capacity.astype(float))
        return Actions()


@dataclass
class ReactiveBaselinePolicy:
    """The balancer fleetml replaces: least-load routing, failover only after health checks fail.

    * Routing: weight = capacity / (1 + queue_depth / capacity-per-step), i.e. accounts with short
      queues get more traffic. Missing samples keep the last known weight.
    * Failover: an account in rotation whose health probe failed ``trip_after`` consecutive steps
      is failed over. It is failed back after ``recover_after`` consecutive passing probes.
    * Maintenance: drained at ``maintenance_start`` and resumed at ``maintenance_end``.
    * Enforcement (restricted/banned): the account is drained and paused, never failed over;
      it is resumed once the restriction is lifted.
    """

    trip_after: int = 2
    recover_after: int = 5
    _bad: np.ndarray | None = field(default=None, init=False, repr=False)
    _good: np.ndarray | None = field(default=None, init=False, repr=False)
    _failed_over: np.ndarray | None = field(default=None, init=False, repr=False)
    _weights: np.ndarray | None = field(default=None, init=False, repr=False)
    _held: np.ndarray | None = field(default=None, init=False, repr=False)

    def decide(self, observation: Observation) -> Actions:
        layout = observation.layout
        n = layout.n_accounts
        if self._bad is None or observation.step < 0:
            self._bad = np.zeros(n, dtype=np.int64)
            self._good = np.zeros(n, dtype=np.int64)
            self._failed_over = np.zeros(n, dtype=bool)
            self._weights = layout.capacity.astype(float)
            self._held = np.zeros(n, dtype=bool)

        per_step = layout.capacity * observation.step_s / 60.0
        queue = observation.metrics.get("queue_depth")
        if queue is not None:
            fresh = np.isfinite(queue)
            least_load = layout.capacity / (1.0 + np.where(fresh, queue, 0.0) / per_step)
            self._weights = np.where(fresh, least_load, self._weights)

        ok = observation.health_ok
        self._bad = np.where(ok, 0, self._bad + 1)
        self._good = np.where(ok, self._good + 1, 0)

        drain, resume, pause = [], [], []
        for event in observation.events:
            kind, account = event["kind"], event["account_id"]
            if kind == "maintenance_start":
                drain.append(account)
            elif kind == "maintenance_end":
                resume.append(account)
            elif kind in ("restricted", "banned"):
                drain.append(account)
                pause.append(account)
                self._held[layout.index_of(account)] = True
        # a lifted restriction: the account is no longer reported as enforced
        lifted = self._held & ~observation.enforced
        if lifted.any():
            resume.extend(np.flatnonzero(lifted).tolist())
            self._held &= ~lifted

        eligible = observation.in_rotation & ~observation.enforced
        trip = eligible & (self._bad >= self.trip_after) & ~observation.draining
        back = self._failed_over & (self._good >= self.recover_after) & ~observation.enforced
        self._failed_over = (self._failed_over | trip) & ~back
        return Actions(
            weights=self._weights.copy(),
            failover=np.flatnonzero(trip).tolist(),
            failback=np.flatnonzero(back).tolist(),
            drain=drain,
            pause=pause,
            resume=resume,
        )
