"""The tick's decision step on a real store: record, actions, approval, restart, enforcement."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from fleetml.errors import Conflict

T0 = 1_767_571_200_000  # 2026-01-05T00:00Z
MIN = 60_000


@pytest.fixture
def fleet(engine):
    """Two groups, each a master with two servants; samples every minute for an hour."""
    from fleetml.store.accounts import account_pks, create_account
    from fleetml.store.metrics import ensure_metric_kinds, write_samples

    ids = []
    with engine.begin() as conn:
        for g in ("g0", "g1"):
            m = f"m-{g}"
            create_account(conn, account_id=m, group=g, capacity=100.0, actor="pytest")
            ids.append(m)
            for k in (1, 2):
                create_account(
                    conn,
                    account_id=f"{m}-s{k}",
                    role="servant",
                    master_id=m,
                    group=g,
                    capacity=80.0,
                    actor="pytest",
                )
                ids.append(f"{m}-s{k}")
        ensure_metric_kinds(
            conn, ["queue_depth", "msgs_sent"], {"queue_depth": "gauge", "msgs_sent": "counter"}
        )
    pks = account_pks(engine)
    rows = [
        (pks[a], T0 + i * MIN, json.dumps({"queue_depth": 1.0, "msgs_sent": 10.0 * i}))
        for i in range(61)
        for a in ids
    ]
    with engine.begin() as conn:
        write_samples(conn, rows)
    return ids


def settings_for(settings, mode: str):
    """``mode``, failing over at the first failing tick (the mechanics these tests check; the
    shipped default waits for a second one, see the fail_after_ticks tests)."""
    return settings.model_copy(update={"decision_mode": mode, "decision_fail_after_ticks": 1})


def event(engine, account: str, kind: str, ts: int) -> None:
    from fleetml.store.accounts import account_pks
    from fleetml.store.events import write_events

    with engine.begin() as conn:
        write_events(conn, [(account_pks(engine)[account], ts, kind, None, "runtime")])


def table(engine, name: str) -> list[dict]:
    from fleetml.store import tables

    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(getattr(tables, name))).mappings()]


def test_a_reported_crash_fails_the_master_over_once_with_its_record(settings, engine, fleet):
    from fleetml.services.tick import LiveLoop

    loop = LiveLoop(engine, settings_for(settings, "auto"))
    now = T0 + 60 * MIN
    event(engine, "m-g0", "crash", now - 30_000)
    summary = loop.run(now_ms=now)
    assert summary["actions"] >= 1
    acts = [a for a in table(engine, "actions") if a["kind"] == "failover"]
    assert [(a["account_id"], a["state"]) for a in acts] == [("m-g0", "pending")]
    assert acts[0]["params"]["to"] in {"m-g0-s1", "m-g0-s2"}
    rec = [d for d in table(engine, "decisions") if d["kind"] == "failover"]
    assert rec[0]["rule"] == "fault_reported" and rec[0]["status"] == "executed"
    assert set(rec[0]["models"]) >= {"anomaly", "risk"}  # the versions in effect are recorded
    weights = {w["account_id"]: w["weight"] for w in table(engine, "weights")}
    assert weights["m-g0"] == 0.0 and weights["m-g0-s1"] > 0
    # the same tick again (a crash and a rerun): nothing twice
    LiveLoop(engine, settings_for(settings, "auto")).run(now_ms=now)
    assert len([a for a in table(engine, "actions") if a["kind"] == "failover"]) == 1


def test_shadow_records_but_publishes_no_action_and_no_weight(settings, engine, fleet):
    from fleetml.services.tick import LiveLoop

    now = T0 + 60 * MIN
    event(engine, "m-g0", "crash", now - 30_000)
    LiveLoop(engine, settings_for(settings, "shadow")).run(now_ms=now)
    assert table(engine, "actions") == []
    rec = [d for d in table(engine, "decisions") if d["kind"] == "failover"]
    assert [(d["account_id"], d["status"]) for d in rec] == [("m-g0", "shadow")]
    weights = {w["account_id"]: (w["weight"], w["target"]) for w in table(engine, "weights")}
    assert weights["m-g0"][0] == 100.0  # published: capacity, as if fleetml were not there
    assert weights["m-g0"][1] == 0.0  # what fleetml would have set
    # standby servants are backups, not serving: weight 0, so a route call never picks one
    assert weights["m-g1-s1"][0] == weights["m-g1-s2"][0] == 0.0
    assert weights["m-g1"][0] == 100.0


def test_an_approved_failover_executes_once_and_survives_a_restart(settings, engine, fleet):
    from fleetml.services.tick import LiveLoop
    from fleetml.store.actions import approve_action

    s = settings_for(settings, "approve")
    loop = LiveLoop(engine, s)
    now = T0 + 60 * MIN
    event(engine, "m-g1", "crash", now - 30_000)
    loop.run(now_ms=now)
    (act,) = [a for a in table(engine, "actions") if a["kind"] == "failover"]
    assert act["state"] == "awaiting_approval"
    with engine.begin() as conn:
        approve_action(conn, action_id=act["id"], actor="ops-1", now_ms=now + 1000)
    with pytest.raises(Conflict), engine.begin() as conn:
        approve_action(conn, action_id=act["id"], actor="ops-2", now_ms=now + 2000)
    loop.run(now_ms=now + MIN)
    state = loop.decisions.policy.controller_state(loop.decisions.fleet())
    assert not state.loc["m-g1", "in_rotation"]  # the approval reached the controller
    failovers = [a for a in table(engine, "actions") if a["kind"] == "failover"]
    assert len(failovers) == 1  # not decided again while it is failed over
    # a new worker (a restart) restores it from what was published
    fresh = LiveLoop(engine, s)
    fresh.run(now_ms=now + 2 * MIN)
    restored = fresh.decisions.policy.controller_state(fresh.decisions.fleet())
    assert not restored.loc["m-g1", "in_rotation"]
    assert len([a for a in table(engine, "actions") if a["kind"] == "failover"]) == 1


@pytest.mark.parametrize("kind", ["restricted", "banned", "quality_drop"])
def test_enforcement_in_the_service_holds_and_never_fails_over(settings, engine, fleet, kind):
    from fleetml.services.tick import LiveLoop

    loop = LiveLoop(engine, settings_for(settings, "auto"))
    now = T0 + 60 * MIN
    event(engine, "m-g0", kind, now - 40_000)
    event(engine, "m-g0", "crash", now - 30_000)  # even a technical fault does not move it
    loop.run(now_ms=now)
    kinds = {(a["account_id"], a["kind"]) for a in table(engine, "actions")}
    assert ("m-g0", "hold") in kinds and ("m-g0", "failover") not in kinds
    recs = table(engine, "recommendations")
    assert [(r["kind"], r["account_id"]) for r in recs] == [("review_enforcement", "m-g0")]
    weights = {w["account_id"]: w for w in table(engine, "weights")}
    assert weights["m-g0"]["weight"] > 0  # its share is kept on it, not handed to others
    assert weights["m-g0"]["reasons"][0].startswith("held")
    loop.run(now_ms=now + MIN)
    assert ("m-g0", "failover") not in {
        (a["account_id"], a["kind"]) for a in table(engine, "actions")
    }


@pytest.mark.parametrize("kind", ["restricted", "banned"])
def test_enforcement_from_before_the_first_tick_still_holds(settings, engine, fleet, kind):
    """A number restricted or banned hours before the worker's first tick (a first start, an
    outage) is held, and a later fault never fails it over; a lifted restriction is not."""
    from fleetml.services.tick import LiveLoop

    now = T0 + 60 * MIN
    event(engine, "m-g0", kind, T0)  # an hour before the first tick, outside its event window
    event(engine, "m-g1", "restricted", T0)
    event(engine, "m-g1", "restriction_lifted", T0 + 10 * MIN)
    event(engine, "m-g0", "crash", now - 30_000)
    event(engine, "m-g1", "crash", now - 30_000)
    LiveLoop(engine, settings_for(settings, "auto")).run(now_ms=now)
    kinds = {(a["account_id"], a["kind"]) for a in table(engine, "actions")}
    assert ("m-g0", "hold") in kinds and ("m-g0", "failover") not in kinds
    assert ("m-g1", "failover") in kinds and ("m-g1", "hold") not in kinds


def test_a_restriction_after_a_quality_hold_keeps_the_hold(settings, engine, fleet):
    """A quality drop holds the number; a restriction a tick later turns the hold into a
    restriction hold (not a resume), so a crash after it never fails the number over."""
    from fleetml.services.tick import LiveLoop

    loop = LiveLoop(engine, settings_for(settings, "auto"))
    now = T0 + 60 * MIN
    event(engine, "m-g0", "quality_drop", now - 30_000)
    loop.run(now_ms=now)
    event(engine, "m-g0", "restricted", now + MIN - 30_000)
    event(engine, "m-g0", "crash", now + MIN - 20_000)
    loop.run(now_ms=now + MIN)
    event(engine, "m-g0", "crash", now + 2 * MIN - 20_000)
    loop.run(now_ms=now + 2 * MIN)
    kinds = [(a["account_id"], a["kind"]) for a in table(engine, "actions")]
    assert ("m-g0", "hold") in kinds
    assert ("m-g0", "resume") not in kinds and ("m-g0", "failover") not in kinds


def test_the_runtimes_up_gauge_is_its_health_probe(settings, engine, fleet):
    from fleetml.services.tick import LiveLoop
    from fleetml.store.accounts import account_pks
    from fleetml.store.metrics import ensure_metric_kinds, write_samples

    now = T0 + 61 * MIN
    pks = account_pks(engine)
    with engine.begin() as conn:
        ensure_metric_kinds(conn, ["up"], {"up": "gauge"})
        write_samples(
            conn,
            [
                (pks[a], now, json.dumps({"queue_depth": 1.0, "up": 0.0 if a == "m-g1" else 1.0}))
                for a in fleet
            ],
        )
    LiveLoop(engine, settings_for(settings, "auto")).run(now_ms=now)
    rec = [d for d in table(engine, "decisions") if d["kind"] == "failover"]
    assert [(d["account_id"], d["rule"]) for d in rec] == [("m-g1", "health_failed")]


def test_fail_after_ticks_lets_a_one_tick_blip_pass_without_a_failover(settings, engine, fleet):
    """FLEETML_DECISION_FAIL_AFTER_TICKS=2: a probe failing for one tick takes new traffic
    away (weight 0) but moves nothing; failing on the next tick too fails the master over."""
    from fleetml.services.tick import LiveLoop
    from fleetml.store.accounts import account_pks
    from fleetml.store.metrics import ensure_metric_kinds, write_samples

    pks = account_pks(engine)
    with engine.begin() as conn:
        ensure_metric_kinds(conn, ["up"], {"up": "gauge"})

    def probe(now, down):
        with engine.begin() as conn:
            write_samples(
                conn,
                [
                    (pks[a], now, json.dumps({"queue_depth": 1.0, "up": 0.0 if a in down else 1.0}))
                    for a in fleet
                ],
            )

    cfg = settings_for(settings, "auto").model_copy(update={"decision_fail_after_ticks": 2})
    loop = LiveLoop(engine, cfg)
    first = T0 + 61 * MIN
    probe(first, {"m-g1"})
    loop.run(now_ms=first)
    assert [d for d in table(engine, "decisions") if d["kind"] == "failover"] == []
    weights = {w["account_id"]: w["weight"] for w in table(engine, "weights")}
    assert weights["m-g1"] == 0.0
    probe(first + 5 * MIN, {"m-g1"})
    loop.run(now_ms=first + 5 * MIN)
    rec = [d for d in table(engine, "decisions") if d["kind"] == "failover"]
    assert [(d["account_id"], d["rule"]) for d in rec] == [("m-g1", "health_failed")]


@pytest.mark.parametrize("gap_min", [5, 61])
def test_ticks_in_a_row_count_across_restarts_but_not_across_an_outage(
    settings, engine, fleet, gap_min
):
    """Each tick in a new process (a restart, a cron of one-shot ``fleetml tick``): the second
    failing tick still fails the master over, because the controller state saved with the first
    tick's decisions is restored; after an outage longer than a few ticks it is not, and the
    count starts again."""
    from fleetml.services.tick import LiveLoop
    from fleetml.store.accounts import account_pks
    from fleetml.store.metrics import ensure_metric_kinds, write_samples

    pks = account_pks(engine)
    with engine.begin() as conn:
        ensure_metric_kinds(conn, ["up"], {"up": "gauge"})

    def probe(now):
        with engine.begin() as conn:
            write_samples(
                conn,
                [
                    (pks[a], now, json.dumps({"queue_depth": 1.0, "up": float(a != "m-g1")}))
                    for a in fleet
                ],
            )

    cfg = settings_for(settings, "auto").model_copy(update={"decision_fail_after_ticks": 2})
    first = T0 + 61 * MIN
    probe(first)
    assert LiveLoop(engine, cfg).run(now_ms=first)["state_restored"] is False
    assert [d for d in table(engine, "decisions") if d["kind"] == "failover"] == []
    second = first + gap_min * MIN
    probe(second)
    summary = LiveLoop(engine, cfg).run(now_ms=second)
    rec = [
        (d["account_id"], d["rule"]) for d in table(engine, "decisions") if d["kind"] == "failover"
    ]
    if gap_min == 5:
        assert summary["state_restored"] is True
        assert rec == [("m-g1", "health_failed")]
    else:
        assert summary["state_restored"] is False and rec == []


def test_a_rerun_or_replay_neither_counts_a_tick_twice_nor_overwrites_a_later_state(
    settings, engine, fleet
):
    """Re-running the saved tick (a retry) does not restore the state that already counted it;
    a replay of an earlier tick leaves the saved state of the later one alone."""
    from fleetml.services.tick import LiveLoop
    from fleetml.store.controller import load_controller_state

    cfg = settings_for(settings, "auto")
    now = T0 + 60 * MIN
    LiveLoop(engine, cfg).run(now_ms=now)
    saved = load_controller_state(engine)
    assert saved[0] == now
    assert LiveLoop(engine, cfg).run(now_ms=now)["state_restored"] is False
    assert load_controller_state(engine) == saved
    assert LiveLoop(engine, cfg).run(now_ms=now - 30 * MIN)["state_restored"] is False
    assert load_controller_state(engine) == saved
    assert LiveLoop(engine, cfg).run(now_ms=now + MIN)["state_restored"] is True
    assert load_controller_state(engine)[0] == now + MIN


def test_the_controller_state_round_trips_through_the_store(settings, engine, fleet):
    """What a tick saved is what the next process restores: cooldowns, holds, the envelope's
    window, smoothed weights and probation clocks."""
    from fleetml.services.decide import DecisionLoop
    from fleetml.services.tick import LiveLoop
    from fleetml.store.controller import load_controller_state

    now = T0 + 60 * MIN
    event(engine, "m-g0", "crash", now - 30_000)
    event(engine, "m-g1", "restricted", now - 20_000)
    loop = LiveLoop(engine, settings_for(settings, "auto"))
    loop.run(now_ms=now)
    before = loop.decisions.policy.snapshot()
    assert before["accounts"]["m-g1"]["held"] == ["restricted", now - 20_000]
    assert before["smoother"]["ids"]  # weights were smoothed and are kept
    tick_ms, saved = load_controller_state(engine)
    assert tick_ms == now and saved == json.loads(json.dumps(before))
    fresh = DecisionLoop(engine, settings_for(settings, "auto"))
    assert fresh.restore(now + MIN)
    assert fresh.policy.snapshot() == saved
    assert fresh.policy._acc["m-g1"]["held"] == ("restricted", now - 20_000)
    state = fresh.policy.controller_state(fresh.fleet())
    assert not state.loc["m-g0", "in_rotation"] and state.loc["m-g1", "paused"]


def test_fail_after_ticks_is_a_validated_setting(tmp_path):
    from pydantic import ValidationError

    from fleetml.config import Settings

    assert Settings(home=tmp_path, decision_fail_after_ticks=3).decision_fail_after_ticks == 3
    # the default debounces one failing tick (a crash that restarts within the tick)
    assert Settings(home=tmp_path).decision_fail_after_ticks == 2
    with pytest.raises(ValidationError, match="decision_fail_after_ticks"):
        Settings(home=tmp_path, decision_fail_after_ticks=0)


class _EnforcementModels:
    """A model set whose risk champion has a platform-enforcement part at 24 h."""

    def __init__(self, threshold):
        self.threshold = threshold

    def get(self, family):
        from types import SimpleNamespace

        if family != "risk" or self.threshold is None:
            return None
        part = SimpleNamespace(threshold=self.threshold)
        return SimpleNamespace(bundle=SimpleNamespace(enforcement={"24h": part}))


def _risk_rows(enforcement: dict[str, float]):
    import pandas as pd

    return pd.DataFrame(
        {
            "account_id": list(enforcement),
            "family": "risk",
            "horizon": "24h",
            "score": 0.2,
            "flag": False,
            "data_until": T0,
            "model_version": 3,
            "fallback": False,
            "detail": [{"enforcement_risk": v} for v in enforcement.values()],
        }
    )


@pytest.mark.parametrize("source", ["store", "tick"])
def test_the_enforcement_part_of_the_risk_model_reaches_the_policy(settings, engine, fleet, source):
    """Stored predictions (detail as JSON) and this tick's (detail as dicts) both carry the
    enforcement risk; the flag uses the threshold stored with the served risk model."""
    from types import SimpleNamespace

    from fleetml.services.decide import DecisionLoop
    from fleetml.store.predictions import write_predictions

    rows = _risk_rows({"m-g0": 0.8, "m-g1": 0.1})
    fresh = None
    if source == "store":
        with engine.begin() as conn:
            write_predictions(conn, rows, computed_at=T0)
    else:
        fresh = rows
    loop = DecisionLoop(engine, settings_for(settings, "auto"))
    scorer = SimpleNamespace(window=[], models=_EnforcementModels(0.5))
    obs = loop.observe(T0 + MIN, scorer=scorer, models={}, predictions=fresh)
    suspected = dict(zip(obs.fleet.ids.tolist(), obs.enforcement_suspected().tolist(), strict=True))
    assert suspected["m-g0"] is True
    assert not any(v for a, v in suspected.items() if a != "m-g0")
    # a risk model without an enforcement part flags nothing
    bare = SimpleNamespace(window=[], models=_EnforcementModels(None))
    again = DecisionLoop(engine, settings_for(settings, "auto"))
    plain = again.observe(T0 + MIN, scorer=bare, models={}, predictions=fresh)
    assert not plain.enforcement_suspected().any()


@pytest.mark.parametrize("kind", ["logout", "restricted"])
def test_a_restarted_worker_does_not_answer_the_same_event_twice(settings, engine, fleet, kind):
    """A new worker (or a one-shot ``fleetml tick``) reads the last minutes of events again:
    the restart or hold it decides for an event already answered is neither recorded nor
    published a second time; a later event of the same kind is answered again."""
    from fleetml.services.tick import LiveLoop

    action = {"logout": "restart_session", "restricted": "hold"}[kind]
    now = T0 + 60 * MIN
    event(engine, "m-g1-s1", kind, now - 30_000)
    LiveLoop(engine, settings_for(settings, "auto")).run(now_ms=now)
    LiveLoop(engine, settings_for(settings, "auto")).run(now_ms=now + MIN)  # restarted
    acts = [a for a in table(engine, "actions") if a["kind"] == action]
    assert [a["account_id"] for a in acts] == ["m-g1-s1"]
    assert len([d for d in table(engine, "decisions") if d["kind"] == action]) == 1
    if kind == "logout":  # a new logout later is a new event: answered again (the unacked
        # restart action stays the one open instruction, see create_actions)
        event(engine, "m-g1-s1", kind, now + 2 * MIN)
        LiveLoop(engine, settings_for(settings, "auto")).run(now_ms=now + 3 * MIN)
        again = [d for d in table(engine, "decisions") if d["kind"] == action]
        assert [d["inputs"]["event_ts_ms"] for d in again] == [now - 30_000, now + 2 * MIN]


def test_a_restarted_worker_keeps_counting_the_envelopes_failovers(settings, engine, fleet):
    """Pre-emptive failovers published before a restart count against the safety envelope's
    window in the new worker (read with their decision's rule); a failover on a reported fault
    does not."""
    from fleetml.decisions.contracts import Decision
    from fleetml.services.decide import DecisionLoop
    from fleetml.store.actions import create_actions
    from fleetml.store.decisions import write_decisions

    now = T0 + 60 * MIN
    made = [
        Decision(kind="failover", rule="risk_sustained", account_id="m-g0", reason="risk"),
        Decision(kind="failover", rule="fault_reported", account_id="m-g1", reason="crash"),
    ]
    with engine.begin() as conn:
        ids = write_decisions(conn, made, ts_ms=now - 10 * MIN, dedup_keys=["a", "b"])
        create_actions(
            conn,
            [
                {
                    "decision_id": i,
                    "account_id": d.account_id,
                    "group": d.account_id[2:],
                    "kind": "failover",
                    "params": {"to": f"{d.account_id}-s1"},
                    "state": "pending",
                    "dedup_key": f"k{i}",
                }
                for d, i in zip(made, ids, strict=True)
            ],
            now_ms=now - 10 * MIN,
            ttl_ms=3_600_000,
        )
    loop = DecisionLoop(engine, settings_for(settings, "auto"))
    assert loop.sync(now) == 2
    assert loop.policy._fleet_failovers == [now - 10 * MIN]  # the pre-emptive one only
    state = loop.policy.controller_state(loop.fleet())
    assert not state.loc["m-g0", "in_rotation"] and not state.loc["m-g1", "in_rotation"]


def _stored_failover(
    engine, account, ts, key, horizon="30min", rule="risk_sustained", status="executed"
):
    from fleetml.decisions.contracts import Decision
    from fleetml.store.decisions import write_decisions

    d = Decision(
        kind="failover", rule=rule, account_id=account, inputs={"horizon": horizon}, status=status
    )
    with engine.begin() as conn:
        return d, write_decisions(conn, [d], ts_ms=ts, dedup_keys=[key])[0]


def test_failovers_made_before_a_restart_still_get_their_outcome(settings, engine, fleet):
    """A failover whose policy is gone (a restart, a one-shot tick) is judged from the store by
    the next tick: needed when a technical fault of its account followed within its horizon,
    unneeded once the horizon ended without one, still open before that; a verdict is never
    written twice."""
    from fleetml.services.tick import LiveLoop

    now = T0 + 60 * MIN
    made = [  # all made 50 min before the tick
        ("m-g0", "30min", "risk_sustained"),  # horizon over, no fault: unneeded
        ("m-g1", "30min", "risk_sustained"),  # a crash 20 min later: needed
        ("m-g0-s1", "6h", "risk_sustained"),  # horizon still running: open
        ("m-g1-s1", "6h", "health_failed"),  # reacting to a fault: needed
        ("m-g1-s2", "30min", "envelope"),  # held back by the envelope: not tracked
    ]
    ids = [
        _stored_failover(
            engine,
            a,
            now - 50 * MIN,
            f"old{i}",
            horizon=h,
            rule=rule,
            status="recommended" if rule == "envelope" else "executed",
        )[1]
        for i, (a, h, rule) in enumerate(made)
    ]
    event(engine, "m-g1", "crash", now - 30 * MIN)
    event(engine, "m-g0", "crash", now - 10 * MIN)  # after m-g0's horizon: does not count
    summary = LiveLoop(engine, settings_for(settings, "auto")).run(now_ms=now)
    rows = {d["id"]: d for d in table(engine, "decisions")}
    verdict = {i: (rows[i]["outcome"] or {}).get("needed") for i in ids}
    assert verdict == {ids[0]: False, ids[1]: True, ids[2]: None, ids[3]: True, ids[4]: None}
    assert rows[ids[1]]["outcome"]["fault_at_ms"] == now - 30 * MIN
    assert rows[ids[0]]["outcome"]["horizon_end_ms"] == now - 20 * MIN
    assert summary["outcomes"] >= 3
    first = {i: rows[i]["outcome_at"] for i in ids}
    # the next tick (another process again) judges the open one when its fault comes, and
    # leaves the verdicts already written alone
    event(engine, "m-g0-s1", "disconnect", now + 2 * MIN)
    LiveLoop(engine, settings_for(settings, "auto")).run(now_ms=now + 5 * MIN)
    rows = {d["id"]: d for d in table(engine, "decisions")}
    assert rows[ids[2]]["outcome"]["needed"] is True
    assert rows[ids[2]]["outcome"]["fault_at_ms"] == now + 2 * MIN
    assert {i: rows[i]["outcome_at"] for i in (ids[0], ids[1], ids[3])} == {
        i: first[i] for i in (ids[0], ids[1], ids[3])
    }
    assert rows[ids[4]]["outcome"] is None


def test_a_replayed_tick_judges_only_by_what_it_could_have_seen(settings, engine, fleet):
    """``fleetml tick --now TS``: a failover made after TS is not judged, and a fault after TS
    does not make an earlier failover needed."""
    from fleetml.services.tick import LiveLoop

    now = T0 + 60 * MIN
    _, before = _stored_failover(engine, "m-g0", now - 50 * MIN, "before", horizon="6h")
    _, after = _stored_failover(engine, "m-g1", now + 30 * MIN, "after", rule="health_failed")
    event(engine, "m-g0", "crash", now + 60 * MIN)
    LiveLoop(engine, settings_for(settings, "auto")).run(now_ms=now)
    rows = {d["id"]: d for d in table(engine, "decisions")}
    assert rows[before]["outcome"] is None and rows[after]["outcome"] is None


def test_a_worker_and_a_one_shot_tick_judge_a_failover_once(settings, engine, fleet):
    """A worker judges the failovers it tracks itself, not from the store; a one-shot tick
    beside it judges them from the store, and the first verdict written stands."""
    from fleetml.services.tick import LiveLoop

    now = T0 + 60 * MIN
    cfg = settings_for(settings, "auto")
    worker = LiveLoop(engine, cfg)
    worker.run(now_ms=now)
    # the worker tracks a pre-emptive failover until well past the horizon the record shows
    decision, db_id = _stored_failover(engine, "m-g0", now - 50 * MIN, "tracked")
    worker.decisions._ids[id(decision)] = db_id
    worker.decisions.policy._pending.append(
        {
            "decision": decision,
            "account_id": "m-g0",
            "group": "g0",
            "at": now - 50 * MIN,
            "until": now + 6 * 60 * MIN,
            "score": 0.9,
            "rule": "risk_sustained",
            "mode": "auto",
        }
    )
    worker.run(now_ms=now + MIN)
    assert {d["id"]: d for d in table(engine, "decisions")}[db_id]["outcome"] is None
    # a one-shot tick (no tracking of its own) judges it first from the store: its recorded
    # horizon is over, no fault within it
    event(engine, "m-g0", "disconnect", now + 90_000)
    LiveLoop(engine, cfg).run(now_ms=now + 2 * MIN)
    first = {d["id"]: d for d in table(engine, "decisions")}[db_id]
    assert first["outcome"]["needed"] is False and first["outcome_at"] == now + 2 * MIN
    # the worker then judges the fault within its own window as needed, and does not overwrite
    worker.run(now_ms=now + 3 * MIN)
    assert worker.decisions.policy._pending == []
    last = {d["id"]: d for d in table(engine, "decisions")}[db_id]
    assert (last["outcome"], last["outcome_at"]) == (first["outcome"], first["outcome_at"])
