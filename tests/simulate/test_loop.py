"""The closed loop: conservation of traffic, the reactive baseline, enforcement rules."""

from __future__ import annotations

import numpy as np
import pytest

from fleetml.simulate import (
    METRICS,
    Actions,
    FleetSimulator,
    ReactiveBaselinePolicy,
    SimConfig,
    StaticPolicy,
    drive,
    loop_report,
    run_closed_loop,
)
from fleetml.simulate.engine import FAILURE_CAUSES
from fleetml.simulate.truth import failover_table, fault_table

from .conftest import BUSY


class ChaosPolicy:
    """Random weights, failovers, failbacks, pauses and drains: stresses the bookkeeping."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def decide(self, obs):
        ids = obs.fleet.ids
        n = len(ids)
        pick = lambda p: ids[self.rng.random(n) < p].tolist()  # noqa: E731
        return Actions(
            weights=dict(zip(ids.tolist(), (self.rng.random(n) * 3).tolist(), strict=True)),
            failover=pick(0.02),
            failback=pick(0.05),
            pause=pick(0.01),
            drain=pick(0.01),
            resume=pick(0.05),
        )


@pytest.mark.parametrize(
    "policy",
    [ReactiveBaselinePolicy(), StaticPolicy(), ChaosPolicy(1)],
    ids=["reactive", "static", "chaos"],
)
def test_traffic_is_conserved(policy):
    report = run_closed_loop(BUSY, policy, seed=2)
    assert report.demand > 0
    total = report.delivered + report.failed + report.deferred
    assert total == pytest.approx(report.demand, rel=1e-9)
    assert report.conservation_error < 1e-9


def test_conservation_holds_at_every_step():
    sim = FleetSimulator(SimConfig(masters=2, servants=1, days=0.2), seed=1)
    obs = sim.reset()
    policy = ChaosPolicy(3)
    demand = delivered = failed = 0.0
    while not sim.done:
        result = sim.step(policy.decide(obs))
        obs = result.observation
        demand += result.demand
        delivered += result.delivered
        failed += result.failed
        assert delivered + failed + result.deferred == pytest.approx(demand, rel=1e-9, abs=1e-6)


def test_reactive_baseline_fails_over_only_after_failures():
    policy = ReactiveBaselinePolicy()
    sim = drive(FleetSimulator(BUSY, seed=3), policy)
    failovers = failover_table(sim)
    assert len(failovers) >= 3
    faults = fault_table(sim)
    for row in failovers.itertuples():
        mine = faults[faults["account"] == row.account]
        # a fault had begun at least `trip_after` steps earlier and was still on when probed
        began = (mine["onset"] <= row.step - policy.trip_after) & (mine["end"] >= row.step - 1)
        assert began.any(), f"failover of account {row.account} at step {row.step} had no failure"


def test_policy_sees_no_ground_truth():
    sim = FleetSimulator(SimConfig(masters=1, servants=1, days=0.05), seed=1)
    obs = sim.step(Actions()).observation
    visible = set(vars(obs))
    assert not visible & {"schedule", "faults", "ground_truth", "precursor", "demand"}
    assert set(obs.metrics.columns) == set(METRICS)
    assert list(obs.metrics.index) == list(sim.layout.account_ids)  # keyed by account id
    assert set(obs.events.columns) == {"ts_ms", "account_id", "kind", "detail"}
    assert set(obs.state.columns) == {
        "in_rotation",
        "paused",
        "draining",
        "enforced",
        "health_ok",
        "weight",
    }


def test_enforced_traffic_is_never_rerouted():
    config = SimConfig(
        masters=2,
        servants=1,
        days=2,
        enforcement_rate_per_day=2.0,
        enforcement_outcomes=(("restricted", 1.0),),
        fault_rate_per_day=0.0,
    )

    class RouteAround:
        """Tries to move an enforced account's traffic away as soon as it is restricted."""

        def decide(self, obs):
            enforced = obs.column("state", "enforced").astype(bool)
            ids = obs.fleet.ids
            weights = dict(zip(ids.tolist(), np.where(enforced, 0.0, 1.0).tolist(), strict=True))
            return Actions(weights=weights, failover=ids[enforced].tolist())

    sim = drive(FleetSimulator(config, seed=5), RouteAround())
    report = loop_report(sim)
    assert report.enforcement_violations > 0
    assert report.enforced_held > 0  # the enforced share stayed with the number
    # the messages lost on the held numbers are counted as such, and the causes add up
    assert report.failed_by_cause["enforcement_hold"] > 0
    assert sum(report.failed_by_cause.values()) == pytest.approx(report.failed, rel=1e-9)
    enf = sim.schedule.enforcement.rows()
    for item in sim.failover_log:  # failovers only once a restriction was lifted
        during = (
            (enf["account"] == item["account"])
            & (enf["onset"] <= item["step"])
            & (enf["end"] > item["step"])
        )
        assert not during.any()


def test_failed_messages_are_split_by_cause_and_add_up():
    config = SimConfig(
        masters=2, servants=1, days=1, fault_rate_per_day=3.0, enforcement_rate_per_day=0.0
    )
    sim = drive(FleetSimulator(config, seed=3), ReactiveBaselinePolicy())
    report = loop_report(sim)
    causes = report.failed_by_cause
    assert set(causes) == set(FAILURE_CAUSES)
    assert sum(causes.values()) == pytest.approx(report.failed, rel=1e-9)
    assert causes["enforcement_hold"] == 0.0  # no enforcement in this world
    assert causes["send_error"] > 0  # every number loses a few sends
    assert causes["down"] + causes["throttled"] + causes["queue_overflow"] > 0


def test_failover_needed_is_judged_against_ground_truth():
    sim = FleetSimulator(
        SimConfig(
            masters=1, servants=1, days=0.2, fault_rate_per_day=0.0, maintenance_every_days=0.0
        ),
        seed=1,
    )
    sim.reset()
    sim.step(Actions(failover=["m000"]))
    while not sim.done:
        sim.step(Actions())
    report = loop_report(sim)
    assert report.failovers == 1
    assert report.failovers_unneeded == report.failovers - report.failovers_needed
    assert sim.events[0][2] == "failover"


def test_bad_actions_are_refused_with_a_clear_message():
    sim = FleetSimulator(SimConfig(masters=1, servants=1, days=0.01), seed=1)
    with pytest.raises(TypeError, match="maps account ids to weights"):
        sim.step(Actions(weights=np.ones(5)))
    with pytest.raises(KeyError, match="unknown account"):
        sim.step(Actions(weights={"nope": 1.0}))
    with pytest.raises(KeyError, match="unknown account"):
        sim.step(Actions(failover=["nope"]))


def test_baseline_pauses_enforced_accounts_and_resumes_them_when_lifted():
    config = SimConfig(
        masters=2,
        servants=1,
        days=3,
        enforcement_rate_per_day=1.0,
        enforcement_outcomes=(("restricted", 1.0),),
        restriction_h=(2.0, 4.0),
        fault_rate_per_day=0.0,
    )
    sim = FleetSimulator(config, seed=6)
    obs = sim.reset()
    policy = ReactiveBaselinePolicy()
    paused_while_enforced = 0
    ever = np.zeros(sim.layout.n_accounts, dtype=bool)
    while not sim.done:
        obs = sim.step(policy.decide(obs)).observation
        paused_while_enforced += int((obs.enforced & obs.paused).sum())
        ever |= obs.enforced
    assert paused_while_enforced > 0
    lifted = ever & ~obs.enforced
    assert lifted.any() and not obs.paused[lifted].any()  # resumed once the restriction lifted
    report = loop_report(sim)
    assert report.enforcement_violations == 0
