"""Reference policies: the reactive balancer fleetml replaces, and a do-nothing one.

They speak the same contract as fleetml's own policy (:mod:`fleetml.decisions.contracts`), so
the closed loop compares like with like.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fleetml.decisions.contracts import Actions, Observation
from fleetml.vocab import ENFORCEMENT_LABELS


def _weights(obs: Observation, values: np.ndarray) -> dict[str, float]:
    return dict(zip(obs.fleet.ids.tolist(), values.tolist(), strict=True))


class StaticPolicy:
    """Routing weights proportional to capacity, never fails over (a do-nothing reference)."""

    def decide(self, observation: Observation) -> Actions:
        if getattr(observation, "step", 0) < 0:
            cap = observation.fleet.accounts["capacity"].to_numpy(dtype=float)
            return Actions(weights=_weights(observation, cap))
        return Actions()


@dataclass
class ReactiveBaselinePolicy:
    """The balancer fleetml replaces: least-load routing, failover only after health checks fail.

    * Routing: weight = capacity / (1 + queue_depth / capacity-per-step), i.e. accounts with short
      queues get more traffic. Missing samples keep the last known weight.
    * Failover: an account in rotation whose health probe failed ``trip_after`` consecutive
      observations is failed over. It is failed back after ``recover_after`` passing probes.
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
        fleet = observation.fleet
        ids = fleet.ids
        n = len(ids)
        capacity = fleet.accounts["capacity"].to_numpy(dtype=float)
        if self._bad is None or getattr(observation, "step", 0) < 0 or len(self._bad) != n:
            self._bad = np.zeros(n, dtype=np.int64)
            self._good = np.zeros(n, dtype=np.int64)
            self._failed_over = np.zeros(n, dtype=bool)
            self._weights = capacity.copy()
            self._held = np.zeros(n, dtype=bool)
        state = observation.column
        in_rotation = state("state", "in_rotation").astype(bool)
        enforced = state("state", "enforced").astype(bool)
        draining = state("state", "draining").astype(bool)
        ok = state("state", "health_ok").astype(bool)

        per_step = capacity * observation.step_s / 60.0
        queue = observation.column("metrics", "queue_depth").astype(float)
        fresh = np.isfinite(queue)
        least_load = capacity / (1.0 + np.where(fresh, queue, 0.0) / per_step)
        self._weights = np.where(fresh, least_load, self._weights)

        self._bad = np.where(ok, 0, self._bad + 1)
        self._good = np.where(ok, self._good + 1, 0)

        drain, resume, pause = [], [], []
        events = observation.events
        if len(events):
            for kind, account in zip(events["kind"], events["account_id"], strict=True):
                if kind == "maintenance_start":
                    drain.append(account)
                elif kind == "maintenance_end":
                    resume.append(account)
                elif kind in ENFORCEMENT_LABELS:
                    drain.append(account)
                    pause.append(account)
                    self._held[fleet.position(account)] = True
        # a lifted restriction: the account is no longer reported as enforced
        lifted = self._held & ~enforced
        if lifted.any():
            resume.extend(ids[lifted].tolist())
            self._held &= ~lifted

        eligible = in_rotation & ~enforced
        trip = eligible & (self._bad >= self.trip_after) & ~draining
        back = self._failed_over & (self._good >= self.recover_after) & ~enforced
        self._failed_over = (self._failed_over | trip) & ~back
        return Actions(
            weights=_weights(observation, self._weights),
            failover=ids[trip].tolist(),
            failback=ids[back].tolist(),
            drain=drain,
            pause=pause,
            resume=resume,
        )
