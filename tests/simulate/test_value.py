"""The closed loop can show the value of foresight: an oracle that fails over before foreseeable
faults (using the ground truth, test-only) must beat the reactive baseline on identical traffic."""

from __future__ import annotations

import numpy as np

from fleetml.simulate import (
    Actions,
    FleetSimulator,
    ReactiveBaselinePolicy,
    SimConfig,
    drive,
    loop_report,
)

CONFIG = SimConfig(masters=4, servants=2, days=1.0, fault_rate_per_day=1.0)


class OraclePreemptivePolicy:
    """Reactive baseline plus failover `lead` steps before each foreseeable fault's onset."""

    def __init__(self, sim: FleetSimulator, lead: int = 10):
        self.base = ReactiveBaselinePolicy()
        rows = sim.schedule.faults.rows()
        keep = rows["code"] != 5  # not sudden
        self.account = rows["account"][keep]
        self.onset = rows["onset"][keep]
        self.end = rows["end"][keep]
        self.lead = lead
        self.held: dict[int, int] = {}

    def decide(self, obs) -> Actions:
        actions = self.base.decide(obs)
        t = obs.step + 1
        soon = (self.onset - self.lead <= t) & (self.onset > t)
        failover = []
        for a, end in zip(self.account[soon], self.end[soon], strict=True):
            if obs.in_rotation[a] and not obs.enforced[a]:
                failover.append(obs.fleet.ids[a])
                self.held[int(a)] = int(end) + 3
        back = [obs.fleet.ids[a] for a, until in self.held.items() if t >= until]
        self.held = {a: until for a, until in self.held.items() if t < until}
        return Actions(
            weights=actions.weights,
            failover=sorted(set(actions.failover) | set(failover)),
            failback=sorted(set(actions.failback) | set(back)),
            pause=actions.pause,
            drain=actions.drain,
            resume=actions.resume,
        )


def test_preemptive_failover_beats_the_reactive_baseline():
    reactive = loop_report(drive(FleetSimulator(CONFIG, seed=8), ReactiveBaselinePolicy()))
    sim = FleetSimulator(CONFIG, seed=8)
    oracle = loop_report(drive(sim, OraclePreemptivePolicy(sim)))
    assert oracle.demand == reactive.demand  # same world
    assert oracle.misrouted < 0.5 * reactive.misrouted
    assert oracle.latency_ms["p99"] <= reactive.latency_ms["p99"]
    assert oracle.failovers_unneeded <= reactive.failovers_unneeded
    assert np.isclose(oracle.conservation_error, 0.0, atol=1e-9)
