"""fleetml's policy driving the simulator: enforcement is never routed around; shadow is inert."""

from __future__ import annotations

import numpy as np
import pytest

from fleetml.decisions.baseline import ReactiveBaselinePolicy
from fleetml.decisions.contracts import Actions, GroupPolicy, Mode
from fleetml.decisions.policy import FleetmlPolicy
from fleetml.simulate import FleetSimulator, SimConfig, drive, loop_report


class Merged:
    """The runtime of the shadow arm: the reactive balancer, plus whatever fleetml publishes."""

    def __init__(self):
        self.base = ReactiveBaselinePolicy()
        self.fleetml = FleetmlPolicy(default=GroupPolicy(mode=Mode.SHADOW, trigger_ticks=1))
        self.recorded = 0

    def decide(self, obs) -> Actions:
        a = self.base.decide(obs)
        f = self.fleetml.decide(obs)
        self.recorded += len(f.decisions)
        for name in ("failover", "failback", "hold", "drain", "resume", "pause", "restart"):
            setattr(a, name, list(getattr(a, name)) + list(getattr(f, name)))
        if f.weights:
            a.weights = {**(a.weights or {}), **f.weights}
        a.throttle = {**a.throttle, **f.throttle}
        return a


def test_shadow_mode_changes_nothing_in_the_closed_loop():
    config = SimConfig(masters=3, servants=2, days=1.0, fault_rate_per_day=2.0)
    base = loop_report(drive(FleetSimulator(config, seed=4), ReactiveBaselinePolicy()))
    merged = Merged()
    shadow = loop_report(drive(FleetSimulator(config, seed=4), merged))
    assert merged.recorded > 0  # it did decide, and recorded it
    assert shadow.to_dict() == base.to_dict()


@pytest.mark.parametrize("outcome", ["restricted", "banned", "quality_drop"])
def test_auto_mode_never_routes_around_enforcement(outcome):
    config = SimConfig(
        masters=3,
        servants=1,
        days=2.0,
        enforcement_rate_per_day=1.5,
        enforcement_outcomes=((outcome, 1.0),),
        fault_rate_per_day=1.0,
    )
    sim = FleetSimulator(config, seed=7)
    policy = FleetmlPolicy(default=GroupPolicy(mode=Mode.AUTO, trigger_ticks=1))
    seen = []

    class Watch:
        def decide(self, obs):
            actions = policy.decide(obs)
            seen.append(actions)
            return actions

    drive(sim, Watch())
    report = loop_report(sim)
    holds = {a for x in seen for a in x.hold}
    assert holds, "the enforcement episodes must have reached the policy"
    assert report.enforcement_violations == 0
    # a held account is never failed over while held; its traffic stays on it
    for actions in seen:
        assert not set(actions.failover) & set(actions.hold)
    held_now: set[str] = set()
    for actions in seen:
        held_now |= set(actions.hold)
        held_now -= set(actions.resume)
        assert not held_now & set(actions.failover)


def test_a_mid_run_latency_flush_counts_no_step_twice():
    # the closed-loop benchmark reads the latency histogram at the end of its warm-up
    config = SimConfig(masters=2, servants=1, days=0.5)
    whole = FleetSimulator(config, seed=3)
    split = FleetSimulator(config, seed=3)
    for sim in (whole, split):
        sim.reset()
    while not whole.done:
        whole.step(Actions())
        split.step(Actions())
        if split.t in (40, 41, 97):
            split._flush_latency()
    whole._flush_latency()
    split._flush_latency()
    np.testing.assert_allclose(split.totals.latency95_hist, whole.totals.latency95_hist)
    np.testing.assert_allclose(split.totals.latency_hist, whole.totals.latency_hist)


def test_a_slowed_number_queues_no_more_than_it_can_send_within_the_ttl():
    config = SimConfig(masters=1, servants=1, days=0.2, fault_rate_per_day=0.0)
    sim = FleetSimulator(config, seed=5)
    sim.reset()
    master = sim.layout.account_ids[0]
    rate = 2.0  # msgs/min: far below its share of the group's demand
    queue = []
    while not sim.done:
        obs = sim.step(Actions(throttle={master: rate})).observation
        queue.append(obs.raw_metrics["queue_depth"][0])
    queue = np.asarray(queue)
    bound = rate * config.queue_ttl_min
    assert np.nanmax(queue) == pytest.approx(bound, abs=1.0)  # the bound is reached...
    assert np.nanmax(queue) <= bound + 1.0  # ...and older messages expired
    assert sim.totals.expired > 0
