"""FleetmlPolicy on hand-built observations: modes, hysteresis, envelope, enforcement, weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fleetml.decisions.contracts import (
    STATE_COLUMNS,
    Envelope,
    Fleet,
    GroupPolicy,
    Mode,
    Observation,
    RecommendationKind,
    empty_events,
)
from fleetml.decisions.policy import FleetmlPolicy, PolicySettings
from fleetml.vocab import ENFORCEMENT_KINDS

MIN = 60_000


def make_fleet(masters: int = 2, servants: int = 2) -> Fleet:
    rows = []
    for g in range(masters):
        m = f"m{g}"
        rows.append(
            {
                "account_id": m,
                "role": "master",
                "master_id": None,
                "group": f"g{g}",
                "capacity": 100.0,
            }
        )
        for s in range(servants):
            rows.append(
                {
                    "account_id": f"{m}-s{s}",
                    "role": "servant",
                    "master_id": m,
                    "group": f"g{g}",
                    "capacity": 80.0,
                }
            )
    return Fleet.from_records(pd.DataFrame(rows))


def observe(
    fleet, ts_ms, *, risk=None, events=(), health=None, weights=None, enforced=(), sent=None
) -> Observation:
    ids = fleet.account_ids
    n = len(ids)
    state = pd.DataFrame(
        {
            "in_rotation": True,
            "paused": False,
            "draining": False,
            "enforced": False,
            "health_ok": True,
            "weight": fleet.accounts["capacity"].to_numpy(),
        },
        index=ids,
    )[list(STATE_COLUMNS)]
    for a in enforced:
        state.loc[a, "enforced"] = True
    for a, ok in (health or {}).items():
        state.loc[a, "health_ok"] = ok
    for a, w in (weights or {}).items():
        state.loc[a, "weight"] = w
    preds = pd.DataFrame(
        [
            {
                "account_id": a,
                "family": "risk",
                "horizon": "1h",
                "score": r,
                "flag": r >= 0.5,
                "model_version": "7",
            }
            for a, r in (risk or {}).items()
        ]
    )
    ev = (
        pd.DataFrame(
            [{"ts_ms": ts_ms, "account_id": a, "kind": k, "detail": ""} for a, k in events]
        )
        if events
        else empty_events()
    )
    rates = pd.DataFrame(
        {
            "msgs_sent": np.full(n, 10.0),
            "msgs_delivered": np.full(n, 10.0),
            "user_blocks": np.zeros(n),
        },
        index=ids,
    )
    if sent:
        for a, v in sent.items():
            rates.loc[a, "msgs_sent"] = v
    return Observation(
        ts_ms=ts_ms,
        fleet=fleet,
        metrics=pd.DataFrame({"queue_depth": np.zeros(n)}, index=ids),
        rates=rates,
        state=state,
        events=ev,
        predictions=preds,
        models={"risk": "7"},
    )


def auto(**kw) -> FleetmlPolicy:
    """Auto mode with an envelope wide enough not to interfere (it has its own test)."""
    return FleetmlPolicy(
        default=GroupPolicy(mode=Mode.AUTO, **kw),
        settings=PolicySettings(envelope=Envelope(max_failover_share=1.0, min_failovers=100)),
    )


def test_sustained_risk_fails_over_once_with_hysteresis_and_a_target():
    fleet = make_fleet()
    policy = auto(trigger_ticks=2, clear_ticks=2, risk_on=0.6, risk_off=0.3)
    a1 = policy.decide(observe(fleet, 0, risk={"m0": 0.9}))
    assert a1.failover == []  # one tick is not sustained
    a2 = policy.decide(observe(fleet, MIN, risk={"m0": 0.9}))
    assert a2.failover == ["m0"]
    assert a2.targets["m0"] in {"m0-s0", "m0-s1"}
    d = [x for x in a2.decisions if x.kind == "failover"][0]
    assert d.rule == "risk_sustained" and d.params["to"] == a2.targets["m0"]
    assert d.models == {"risk": "7"} and d.inputs["risk"] == pytest.approx(0.9)
    # still risky: no second failover; risk between off and on: no failback (hysteresis)
    assert policy.decide(observe(fleet, 2 * MIN, risk={"m0": 0.9})).failover == []
    assert policy.decide(observe(fleet, 3 * MIN, risk={"m0": 0.45})).failback == []
    assert policy.decide(observe(fleet, 4 * MIN, risk={"m0": 0.1})).failback == []
    assert policy.decide(observe(fleet, 5 * MIN, risk={"m0": 0.1})).failback == ["m0"]


def test_cooldown_backs_off_against_flapping():
    fleet = make_fleet(1)
    policy = auto(trigger_ticks=1, clear_ticks=1, cooldown_s=600)
    t = 0
    assert policy.decide(observe(fleet, t, risk={"m0": 0.9})).failover == ["m0"]
    t += MIN
    assert policy.decide(observe(fleet, t, risk={"m0": 0.0})).failback == ["m0"]
    # flapped (failback within the cooldown): the next cooldown is doubled to 20 min
    t += 11 * MIN
    assert policy.decide(observe(fleet, t, risk={"m0": 0.9})).failover == []
    t += 10 * MIN
    assert policy.decide(observe(fleet, t, risk={"m0": 0.9})).failover == ["m0"]


def test_a_restored_failback_starts_the_cooldown_of_its_group():
    """A restarted worker that reads a failover and its failback back from the published
    actions keeps the account in its cooldown (doubled: it flapped), under the group's policy."""
    fleet = make_fleet(1)
    policy = auto(trigger_ticks=1, clear_ticks=1)  # the default: a 30-min cooldown, not g0's
    policy.set_policies({"g0": GroupPolicy(mode=Mode.AUTO, trigger_ticks=1, cooldown_s=600)})
    policy.apply_published("m0", "failover", 0, {"to": "m0-s0"}, rule="risk_sustained", group="g0")
    policy.apply_published("m0", "failback", MIN, {}, rule="risk_receded", group="g0")
    assert policy.controller_state(fleet).loc["m0", "in_rotation"]
    assert policy.decide(observe(fleet, 12 * MIN, risk={"m0": 0.9})).failover == []
    assert policy.decide(observe(fleet, 22 * MIN, risk={"m0": 0.9})).failover == ["m0"]


def test_a_snapshot_continues_hysteresis_in_a_new_policy():
    """Sustained risk counted by one policy and restored into another (a restart): the new one
    fails over at the tick the old one would have; a snapshot of another layout is refused."""
    import json

    fleet = make_fleet()
    old = auto(trigger_ticks=3)
    for k in range(2):
        assert old.decide(observe(fleet, k * MIN, risk={"m0": 0.9})).failover == []
    snap = json.loads(json.dumps(old.snapshot()))  # through JSON, as the store keeps it
    new = auto(trigger_ticks=3)
    assert new.restore(snap)
    assert new.decide(observe(fleet, 2 * MIN, risk={"m0": 0.9})).failover == ["m0"]
    assert not auto().restore({**snap, "version": 0}) and not auto().restore(None)
    assert set(snap["accounts"]) == {"m0"}  # accounts in their initial state are left out
    old.smoother.weights[0] = np.nan  # strict JSON (PostgreSQL's) has no NaN
    json.dumps(old.snapshot(), allow_nan=False)
    cold = auto(trigger_ticks=3)  # without the snapshot: two more ticks to go
    assert cold.decide(observe(fleet, 2 * MIN, risk={"m0": 0.9})).failover == []


def test_reported_fault_fails_over_at_once_even_without_a_model():
    fleet = make_fleet()
    policy = auto()
    actions = policy.decide(observe(fleet, 0, events=[("m1", "crash")], health={"m1": False}))
    assert actions.failover == ["m1"]
    assert [d.rule for d in actions.decisions if d.kind == "failover"] == ["fault_reported"]
    assert actions.weights["m1"] == 0.0


@pytest.mark.parametrize("kind", sorted(ENFORCEMENT_KINDS))
def test_enforcement_holds_the_account_and_never_moves_its_traffic(kind):
    fleet = make_fleet()
    policy = auto(trigger_ticks=1)
    actions = policy.decide(
        observe(fleet, 0, events=[("m0", kind)], risk={"m0": 0.99}, weights={"m0": 42.0})
    )
    assert actions.hold == ["m0"]
    assert "m0" not in actions.failover  # even at risk 0.99
    assert actions.weights["m0"] == 42.0  # its share stays on it
    assert [r.kind for r in actions.recommendations] == [RecommendationKind.REVIEW_ENFORCEMENT]
    # later ticks: still never failed over while held
    later = policy.decide(
        observe(fleet, MIN, risk={"m0": 0.99}, weights={"m0": 42.0}, enforced=["m0"])
    )
    assert later.failover == [] and later.weights["m0"] == 42.0


def suspected(obs: Observation, *accounts: str) -> Observation:
    """The same observation with the risk model's enforcement part flagging ``accounts``."""
    p = obs.predictions
    obs.predictions = p.assign(enforcement_flag=p["account_id"].isin(accounts).to_numpy())
    return obs


def test_risk_the_enforcement_model_flags_moves_no_traffic_and_asks_a_person():
    fleet = make_fleet()
    policy = auto(trigger_ticks=2, smoothing=0.0)
    risk = {"m0": 0.9, "m1": 0.9}
    first = policy.decide(suspected(observe(fleet, 0, risk=risk), "m0"))
    second = policy.decide(suspected(observe(fleet, MIN, risk=risk), "m0"))
    # the unflagged master is failed over on its sustained risk; the flagged one is not
    assert first.failover == [] and second.failover == ["m1"]
    held_back = [d for d in second.decisions if d.rule == "enforcement_suspected"]
    assert [(d.account_id, d.status, d.kind) for d in held_back] == [
        ("m0", "recommended", "failover")
    ]
    assert held_back[0].inputs["risk"] == pytest.approx(0.9)
    recs = [r for r in second.recommendations if r.account_id == "m0"]
    assert [(r.kind, r.dedup_key) for r in recs] == [
        (RecommendationKind.REVIEW_ENFORCEMENT, "enforcement_suspected:m0")
    ]
    # its risk does not lower its weight either (that too would move its traffic away)
    assert second.weights["m0"] == pytest.approx(100.0)
    reasons = policy.last_weights.set_index("account_id")["reasons"]
    assert any("enforcement suspected" in r for r in reasons["m0"])
    # recorded once while it lasts, not on every tick
    third = policy.decide(suspected(observe(fleet, 2 * MIN, risk=risk), "m0"))
    assert not [d for d in third.decisions if d.rule == "enforcement_suspected"]
    assert third.failover == []
    # once the enforcement model no longer flags it, its sustained risk is acted on
    assert policy.decide(observe(fleet, 3 * MIN, risk=risk)).failover == ["m0"]


def test_a_technical_fault_on_a_number_suspected_of_enforcement_still_fails_over():
    fleet = make_fleet()
    policy = auto()
    obs = observe(fleet, 0, events=[("m0", "crash")], health={"m0": False}, risk={"m0": 0.9})
    actions = policy.decide(suspected(obs, "m0"))
    assert actions.failover == ["m0"]
    assert [d.rule for d in actions.decisions if d.kind == "failover"] == ["fault_reported"]


def test_user_blocks_past_the_ratio_hold_the_account():
    fleet = make_fleet(1)
    policy = auto()
    obs = observe(fleet, 0)
    obs.rates.loc["m0-s1", "user_blocks"] = 1.0  # 1 block per 10 delivered
    obs.rates.loc["m0-s1", "msgs_delivered"] = 10.0
    obs.step_s = 300
    actions = policy.decide(obs)
    assert actions.hold == ["m0-s1"]
    assert actions.decisions[0].inputs["signal"] == "user_blocks"


def test_quality_hold_expires_and_restriction_waits_until_lifted():
    fleet = make_fleet(1)
    policy = FleetmlPolicy(
        default=GroupPolicy(mode=Mode.AUTO), settings=PolicySettings(quality_hold_s=3600)
    )
    policy.decide(
        observe(
            fleet, 0, events=[("m0-s0", "quality_drop"), ("m0-s1", "banned")], enforced=["m0-s1"]
        )
    )
    mid = policy.decide(observe(fleet, 30 * MIN, enforced=["m0-s1"]))
    assert mid.resume == []
    end = policy.decide(observe(fleet, 61 * MIN, enforced=["m0-s1"]))
    assert end.resume == ["m0-s0"]
    lifted = policy.decide(observe(fleet, 62 * MIN))
    assert lifted.resume == ["m0-s1"]


def test_shadow_records_everything_and_publishes_nothing():
    fleet = make_fleet()
    policy = FleetmlPolicy(default=GroupPolicy(mode=Mode.SHADOW, trigger_ticks=1))
    actions = policy.decide(
        observe(
            fleet,
            0,
            risk={"m0": 0.9},
            events=[("m1", "crash"), ("m1-s0", "restricted")],
            health={"m1": False},
        )
    )
    assert actions.weights is None
    assert not (actions.failover or actions.failback or actions.hold or actions.resume)
    kinds = {(d.kind, d.account_id, d.status) for d in actions.decisions}
    assert ("failover", "m0", "shadow") in kinds and ("failover", "m1", "shadow") in kinds
    assert ("hold", "m1-s0", "shadow") in kinds


def test_approve_mode_queues_and_off_mode_decides_nothing():
    fleet = make_fleet()
    policy = FleetmlPolicy(
        {
            "g0": GroupPolicy(mode=Mode.APPROVE, trigger_ticks=1),
            "g1": GroupPolicy(mode=Mode.OFF, trigger_ticks=1),
        }
    )
    actions = policy.decide(observe(fleet, 0, risk={"m0": 0.9, "m1": 0.9}))
    assert actions.failover == []
    assert [(d.account_id, d.status) for d in actions.decisions if d.kind == "failover"] == [
        ("m0", "awaiting_approval")
    ]
    assert all(d.group != "g1" for d in actions.decisions)


def test_the_envelope_caps_a_failover_storm():
    fleet = make_fleet(masters=10)
    policy = FleetmlPolicy(
        default=GroupPolicy(mode=Mode.AUTO, trigger_ticks=1),
        settings=PolicySettings(envelope=Envelope(max_failover_share=0.2, window_s=3600)),
    )
    risky = {f"m{g}": 0.95 for g in range(10)}
    actions = policy.decide(observe(fleet, 0, risk=risky))
    assert len(actions.failover) == 2  # 20 % of 10 masters
    held_back = [d for d in actions.decisions if d.rule == "envelope"]
    assert len(held_back) == 8 and all(d.status == "recommended" for d in held_back)
    assert len([r for r in actions.recommendations if r.dedup_key.startswith("envelope:")]) == 8
    # still inside the window: nothing more; after it, two more
    assert policy.decide(observe(fleet, 30 * MIN, risk=risky)).failover == []
    assert len(policy.decide(observe(fleet, 61 * MIN, risk=risky)).failover) == 2


def test_the_envelope_survives_a_restart_and_counts_approved_failovers():
    """A new policy that restores what was published (a restarted worker) keeps counting the
    pre-emptive failovers of the window; a failover on a reported fault does not count."""
    fleet = make_fleet(masters=10)
    settings = PolicySettings(envelope=Envelope(max_failover_share=0.2, window_s=3600))
    risky = {f"m{g}": 0.95 for g in range(10)}

    def fresh():
        return FleetmlPolicy(
            default=GroupPolicy(mode=Mode.AUTO, trigger_ticks=1), settings=settings
        )

    restarted = fresh()
    restarted.apply_published("m0", "failover", 0, {"to": "m0-s0"}, rule="risk_sustained")
    restarted.apply_published("m1", "failover", 0, {"to": "m1-s0"}, rule="risk_sustained")
    restarted.apply_published("m2", "failover", 0, {"to": "m2-s0"}, rule="fault_reported")
    assert restarted.decide(observe(fleet, 30 * MIN, risk=risky)).failover == []
    assert len(restarted.decide(observe(fleet, 61 * MIN, risk=risky)).failover) == 2
    # without the rule (as before) the restored failovers are not counted: two more at once
    forgetful = fresh()
    for m in ("m0", "m1"):
        forgetful.apply_published(m, "failover", 0, {"to": f"{m}-s0"})
    assert len(forgetful.decide(observe(fleet, 30 * MIN, risk=risky)).failover) == 2


def test_servants_that_cannot_absorb_the_load_turn_failover_into_a_recommendation():
    fleet = make_fleet(1)
    policy = auto(trigger_ticks=1)
    actions = policy.decide(
        observe(fleet, 0, risk={"m0": 0.9}, sent={"m0": 500.0, "m0-s0": 79.0, "m0-s1": 79.0})
    )
    assert actions.failover == []
    assert "spare capacity" in actions.decisions[0].inputs["blocked_by"]


def test_weights_cut_at_once_and_recover_through_probation():
    fleet = make_fleet(1)
    policy = auto(trigger_ticks=1, clear_ticks=1, probation_s=600, smoothing=0.0)
    w0 = policy.decide(observe(fleet, 0)).weights
    assert w0["m0"] == pytest.approx(100.0)
    w1 = policy.decide(observe(fleet, MIN, risk={"m0-s0": 0.5})).weights
    assert w1["m0-s0"] == pytest.approx(40.0)  # 80 x (1 - 0.5), at once
    policy.decide(observe(fleet, 2 * MIN, risk={"m0": 0.9}))  # failed over
    back = policy.decide(observe(fleet, 3 * MIN, risk={"m0": 0.0}))
    assert back.failback == ["m0"]
    ramp = [policy.decide(observe(fleet, (3 + k) * MIN)).weights["m0"] for k in (1, 5, 11)]
    assert ramp[0] < ramp[1] < ramp[2] == pytest.approx(100.0)


def test_failover_outcomes_are_judged_against_later_faults():
    fleet = make_fleet()
    policy = auto(trigger_ticks=1)
    policy.decide(observe(fleet, 0, risk={"m0": 0.9, "m1": 0.9}))
    policy.decide(observe(fleet, 20 * MIN, events=[("m0", "crash")]))
    judged = {o["account_id"]: o["outcome"]["needed"] for o in policy.outcomes()}
    assert judged == {"m0": True}
    policy.decide(observe(fleet, 61 * MIN))
    judged = {o["account_id"]: o["outcome"]["needed"] for o in policy.outcomes()}
    assert judged == {"m1": False}
    assert policy.stats["g0"] == {"needed": 1, "unneeded": 0}


def test_a_degraded_master_is_failed_over_only_where_its_servants_can_take_the_load():
    fleet = make_fleet(2)
    policy = auto()
    busy = {"m0": 60.0, "m0-s0": 79.0, "m0-s1": 79.0, "m1": 60.0}
    actions = policy.decide(
        observe(
            fleet,
            0,
            events=[("m0", "degraded"), ("m1", "degraded")],
            health={"m0": False, "m1": False},
            sent=busy,
        )
    )
    # m0's servants are full: moving its load would overload them too; it keeps 30 %
    assert "m0" not in actions.failover
    assert actions.weights["m0"] == pytest.approx(30.0)  # 100 x degraded_health 0.3
    # m1's servants have room for its 60/min: failed over, its queue drains on them
    assert "m1" in actions.failover
    # a harder fault on m0 still fails it over
    crash = policy.decide(
        observe(fleet, MIN, events=[("m0", "crash")], health={"m0": False}, sent=busy)
    )
    assert crash.failover == ["m0"]


def test_weights_rise_at_once_ahead_of_a_forecast_peak():
    fleet = make_fleet(2)
    policy = auto(smoothing=0.9)
    policy.decide(observe(fleet, 0, risk={"m0-s0": 0.8, "m1-s0": 0.8}))  # cut at once
    obs = observe(fleet, MIN)
    # group g0 expects 250 msgs/min within the hour: 96 % of its 260/min capacity
    obs.forecasts = pd.DataFrame(
        {"group": ["g0", "g1"], "peak": [250.0, 50.0], "peak_ts_ms": [30 * MIN, 30 * MIN]}
    )
    actions = policy.decide(obs)
    assert actions.weights["m0-s0"] == pytest.approx(80.0)  # no smoothing: ready for the peak
    assert actions.weights["m1-s0"] < 40.0  # g1 is far from its capacity: smoothed as usual
    reasons = policy.last_weights.set_index("account_id")["reasons"]
    assert "pre-balanced ahead of a forecast peak" in reasons["m0-s0"]


def test_a_fault_blip_the_probe_already_cleared_is_not_failed_over():
    fleet = make_fleet(1)
    policy = auto()
    blip = policy.decide(observe(fleet, 0, events=[("m0", "disconnect")]))  # probe passes
    assert blip.failover == []
    # without a runtime probe (health is only sample freshness) the report is trusted
    obs = observe(fleet, MIN, events=[("m0", "disconnect")])
    obs.state["probe"] = False
    assert policy.decide(obs).failover == ["m0"]


def test_planned_maintenance_is_drained_not_failed_over():
    fleet = make_fleet(1)
    policy = auto()
    start = policy.decide(observe(fleet, 0, events=[("m0", "maintenance_start")]))
    assert start.drain == ["m0"]
    down = policy.decide(observe(fleet, MIN, health={"m0": False}))
    assert down.failover == []
    end = policy.decide(observe(fleet, 2 * MIN, events=[("m0", "maintenance_end")]))
    assert end.resume == ["m0"] and end.failover == []


def test_self_healing_restarts_sessions_and_throttles_a_rate_limited_account():
    fleet = make_fleet(1)
    policy = auto()
    obs = observe(fleet, 0, events=[("m0-s1", "logout")])
    obs.rates.loc["m0-s0", "rate_limit_hits"] = 2.0  # 20 % of its 10 sends a minute
    actions = policy.decide(obs)
    assert actions.restart == ["m0-s1"]
    assert actions.throttle == {"m0-s0": pytest.approx(8.0)}  # 0.8 x its send rate
    # still limited: no second throttle; 30 min without limiting: lifted
    again = observe(fleet, MIN)
    again.rates.loc["m0-s0", "rate_limit_hits"] = 2.0
    assert policy.decide(again).throttle == {}
    assert policy.decide(observe(fleet, 20 * MIN)).throttle == {}
    lifted = policy.decide(observe(fleet, 32 * MIN)).throttle
    assert lifted == {"m0-s0": float("inf")}


def test_a_failing_servant_leaves_rotation_too_but_risk_alone_never_moves_it():
    fleet = make_fleet(1)
    policy = auto(trigger_ticks=1)
    crash = policy.decide(observe(fleet, 0, events=[("m0-s1", "crash")], health={"m0-s1": False}))
    assert crash.failover == ["m0-s1"]  # its backlog goes to its peers
    assert crash.weights["m0-s1"] == 0.0
    risky = policy.decide(observe(fleet, MIN, risk={"m0-s0": 0.99}))
    assert "m0-s0" not in risky.failover  # pre-emptive failover is for masters


def test_a_debounced_probe_moves_no_backlog_on_a_one_tick_blip():
    fleet = make_fleet(1)
    policy = FleetmlPolicy(
        default=GroupPolicy(mode=Mode.AUTO), settings=PolicySettings(fail_after_ticks=2)
    )
    first = policy.decide(observe(fleet, 0, events=[("m0", "crash")], health={"m0": False}))
    assert first.failover == []  # one failing probe: not yet a failover...
    assert first.weights["m0"] == 0.0  # ...but no new traffic goes to it
    back = policy.decide(observe(fleet, MIN))
    assert back.failover == [] and back.weights["m0"] > 0  # a blip: nothing was moved
    policy.decide(observe(fleet, 2 * MIN, events=[("m0", "crash")], health={"m0": False}))
    still = policy.decide(observe(fleet, 3 * MIN, health={"m0": False}))
    assert still.failover == ["m0"]  # failing two ticks in a row: failed over
    assert [d.rule for d in still.decisions if d.kind == "failover"] == ["health_failed"]


@pytest.mark.parametrize("restart", [False, True])
def test_a_throttled_master_is_judged_by_the_load_routed_to_it_not_its_sends(restart):
    """Also across a restart (or a cron of one-shot ticks): the previous tick's queues are part
    of the snapshot, so the queue's growth still counts."""
    import json

    fleet = make_fleet(1)
    policy = auto()
    sent = {"m0": 20.0, "m0-s0": 40.0, "m0-s1": 40.0}
    policy.decide(observe(fleet, 0, sent=sent))
    if restart:
        snap = json.loads(json.dumps(policy.snapshot(), allow_nan=False))
        policy = auto()
        assert policy.restore(snap)
    obs = observe(fleet, 5 * MIN, events=[("m0", "degraded")], health={"m0": False}, sent=sent)
    obs.metrics.loc["m0", "queue_depth"] = 400.0  # 80/min more arrive than it can send
    actions = policy.decide(obs)
    # it sends 20/min, but 100/min are routed to it: its servants (64/min of room below 90 %
    # of their capacity) cannot take that; it keeps a reduced weight instead
    assert actions.failover == []
    assert 0 < actions.weights["m0"] < 30.0  # stays in rotation with a reduced weight


def test_a_degraded_master_is_not_failed_over_onto_peers_that_are_down():
    fleet = make_fleet(1)
    policy = auto()
    actions = policy.decide(
        observe(
            fleet,
            0,
            events=[("m0", "degraded"), ("m0-s0", "crash")],
            health={"m0": False, "m0-s0": False},
            sent={"m0": 60.0, "m0-s0": 0.0, "m0-s1": 60.0},
        )
    )
    # m0-s0 has the room on paper but is down; m0-s1 alone cannot take 60/min
    assert "m0" not in actions.failover
    assert "m0-s0" in actions.failover


def test_a_throttled_account_queue_is_measured_against_what_it_can_send_now():
    fleet = make_fleet(1)
    policy = auto(smoothing=0.0)
    obs = observe(fleet, 0, events=[("m0", "degraded")], health={"m0": False}, sent={"m0": 30.0})
    obs.metrics.loc["m0", "queue_depth"] = 150.0
    policy.settings.degraded_failover = False
    w = policy.decide(obs).weights
    # 30 % of its 100/min: 150 queued are 5 min of its sending, not 1.5 min
    assert w["m0"] == pytest.approx(100 * 0.3 / (1 + 150 / 30))


def capped_at(utilisation: float) -> FleetmlPolicy:
    return FleetmlPolicy(
        default=GroupPolicy(mode=Mode.AUTO, smoothing=0.0),
        settings=PolicySettings(target_utilisation=utilisation),
    )


def test_weights_keep_every_account_below_the_target_utilisation_while_the_group_has_room():
    fleet = make_fleet(1)
    policy = capped_at(0.9)
    sent = {"m0": 60.0, "m0-s0": 60.0, "m0-s1": 60.0}  # 180/min in a group of 260/min
    w = policy.decide(observe(fleet, 0, risk={"m0-s0": 0.9}, sent=sent)).weights
    total = sum(w.values())
    share = {a: 180.0 * v / total for a, v in w.items()}
    # by risk alone m0 would get 96/min and m0-s1 77/min: past 90 % of their capacity
    assert share["m0"] == pytest.approx(90.0)
    assert share["m0-s1"] == pytest.approx(72.0)
    assert share["m0-s0"] == pytest.approx(18.0)  # the risky servant takes the rest
    assert total == pytest.approx(100.0 + 8.0 + 80.0)  # the group's total weight is kept
    # a group without room keeps its weights: someone must carry the overload
    busy = {"m0": 90.0, "m0-s0": 90.0, "m0-s1": 90.0}
    w2 = policy.decide(observe(fleet, MIN, risk={"m0-s0": 0.9}, sent=busy)).weights
    assert w2 == pytest.approx({"m0": 100.0, "m0-s0": 8.0, "m0-s1": 80.0})


def test_the_utilisation_cap_never_moves_a_held_accounts_share():
    fleet = make_fleet(1)
    policy = capped_at(0.9)
    sent = {"m0": 60.0, "m0-s0": 60.0, "m0-s1": 60.0}
    w = policy.decide(
        observe(fleet, 0, events=[("m0-s1", "restricted")], weights={"m0-s1": 42.0}, sent=sent)
    ).weights
    assert w["m0-s1"] == 42.0


def test_a_degraded_account_whose_load_is_unknown_is_not_moved_onto_its_peers():
    fleet = make_fleet(1)
    policy = auto()
    actions = policy.decide(
        observe(
            fleet,
            0,
            events=[("m0-s1", "degraded")],
            health={"m0-s1": False},
            sent={"m0-s1": float("nan"), "m0": 85.0, "m0-s0": 40.0},
        )
    )
    # no samples this tick: its load counts as its capacity (80/min), more than its peers'
    # room below 90 % (5 + 32/min); an unknown load is not a free move
    assert actions.failover == []


@pytest.mark.parametrize("mode", list(Mode))
def test_an_empty_fleet_decides_nothing_in_every_mode(mode):
    """An empty store ticks: the per-account masks must stay boolean when there are no accounts
    (``np.asarray([])`` is a float array, and ``~`` on it raised TypeError in ``fleetml tick``)."""
    cols = ["account_id", "role", "master_id", "group", "capacity"]
    fleet = Fleet.from_records(pd.DataFrame(columns=cols))
    policy = FleetmlPolicy(default=GroupPolicy(mode=mode))
    actions = policy.decide(observe(fleet, 0))
    assert actions.failover == [] and actions.failback == [] and actions.decisions == []


def test_failover_outcome_verdicts():
    from fleetml.decisions.policy import failover_outcome

    # a failover on a reported fault or a failed probe was needed, at once
    for rule in ("fault_reported", "health_failed"):
        assert failover_outcome(rule, until_ms=100, fault_ms=None, now_ms=10)["needed"] is True
    # a pre-emptive one waits for its horizon ...
    assert failover_outcome("risk_sustained", until_ms=100, fault_ms=None, now_ms=100) is None
    # ... is needed as soon as a fault follows, unneeded once the horizon ended without one
    hit = failover_outcome("risk_sustained", until_ms=100, fault_ms=40, now_ms=50)
    assert hit == {"needed": True, "fault_at_ms": 40, "judged_at_ms": 50, "horizon_end_ms": 100}
    miss = failover_outcome("risk_sustained", until_ms=100, fault_ms=None, now_ms=101)
    assert miss["needed"] is False and miss["fault_at_ms"] is None


def test_a_malformed_snapshot_changes_nothing():
    import json

    fleet = make_fleet()
    policy = auto(trigger_ticks=3)
    policy.decide(observe(fleet, 0, risk={"m0": 0.9}))
    before = json.dumps(policy.snapshot())
    snap = json.loads(before)
    bad = {**snap, "accounts": {}, "queue": {"depth": {}}}  # no ts_ms
    assert not policy.restore(bad)
    assert json.dumps(policy.snapshot()) == before
