"""fleetml's policy driving the simulator: enforcement is never routed around; shadow is inert."""

from __future__ import annotations

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
