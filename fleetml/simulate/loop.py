"""Closed loop: a policy drives the simulated fleet; the report says how the fleet fared."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from fleetml.simulate.config import SimConfig
from fleetml.simulate.engine import _LAT_EDGES, FleetSimulator
from fleetml.simulate.policy import Policy
from fleetml.simulate.truth import failover_table, fault_table


@dataclass
class LoopReport:
    """Outcomes of a closed-loop run. Message counts are totals over the run.

    Traffic is conserved: ``demand == delivered + failed + deferred`` (``deferred`` is the backlog
    left at the end: queued messages and demand no account could take); ``conservation_error``
    is the relative difference.
    """

    steps: int
    demand: float
    delivered: float
    failed: float
    deferred: float
    conservation_error: float
    delivery_ratio: float
    expired: float  # part of ``failed``: messages that waited longer than the queue TTL
    failed_by_cause: dict  # ``failed`` split by cause (:data:`FAILURE_CAUSES`); sums to it
    misrouted: float  # messages routed to an account that was down at the time
    enforced_held: float  # messages routed to restricted/banned accounts (never rerouted)
    latency_ms: dict  # quantiles of per-interval median latency, weighted by delivered messages
    latency_p95_ms: dict  # the same for the per-interval 95th percentile
    downtime_min: float  # account-minutes down (fault, throttling or maintenance)
    faults: int
    overload_faults: int
    failovers: int
    failovers_needed: int
    failovers_unneeded: int
    failbacks: int
    enforcement_violations: int  # refused attempts to fail over a restricted/banned account

    def to_dict(self) -> dict:
        return asdict(self)


def _quantiles(hist: np.ndarray) -> dict:
    total = hist.sum()
    if total <= 0:
        return {"p50": None, "p90": None, "p99": None}
    cdf = np.cumsum(hist) / total
    # bin b holds values in (edges[b-1], edges[b]]; report the bin's upper edge
    edges = np.concatenate([[0.0], _LAT_EDGES, [np.inf]])
    out = {}
    for q in (0.5, 0.9, 0.99):
        b = int(np.searchsorted(cdf, q))
        out[f"p{int(q * 100)}"] = (
            float(edges[min(b + 0, len(edges) - 1)]) if b > 0 else float(edges[1])
        )
    return out


def loop_report(sim: FleetSimulator) -> LoopReport:
    """Summarise the run so far."""
    sim._flush_latency()
    tot = sim.totals
    deferred = sim.backlog
    balance = tot.delivered + tot.failed + deferred
    failovers = failover_table(sim)
    faults = fault_table(sim)
    return LoopReport(
        steps=sim.t,
        demand=tot.demand,
        delivered=tot.delivered,
        failed=tot.failed,
        deferred=deferred,
        conservation_error=abs(balance - tot.demand) / max(tot.demand, 1.0),
        delivery_ratio=tot.delivered / max(tot.demand, 1.0),
        expired=tot.expired,
        failed_by_cause=dict(tot.failed_by_cause),
        misrouted=tot.misrouted,
        enforced_held=tot.enforced_held,
        latency_ms=_quantiles(tot.latency_hist),
        latency_p95_ms=_quantiles(tot.latency95_hist),
        downtime_min=float(sim.down_steps.sum() * sim.config.dt_min),
        faults=len(faults),
        overload_faults=int((faults["mechanism"] == "overload").sum()),
        failovers=len(failovers),
        failovers_needed=int(failovers["needed"].sum()) if len(failovers) else 0,
        failovers_unneeded=int((~failovers["needed"]).sum()) if len(failovers) else 0,
        failbacks=sum(1 for e in sim.events if e[2] == "failback"),
        enforcement_violations=tot.violations,
    )


def drive(
    sim: FleetSimulator, policy: Policy, *, on_step: Callable | None = None
) -> FleetSimulator:
    """Run ``policy`` against ``sim`` from reset to the end of the run."""
    obs = sim.reset()
    while not sim.done:
        result = sim.step(policy.decide(obs))
        obs = result.observation
        if on_step is not None:
            on_step(sim, result)
    return sim


def run_closed_loop(
    config: SimConfig | None, policy: Policy, seed: int = 0, *, record: bool = False
) -> LoopReport:
    """Run a whole closed loop and return its :class:`LoopReport`."""
    sim = FleetSimulator(config, seed, record=record)
    drive(sim, policy)
    return loop_report(sim)
