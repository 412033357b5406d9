"""The decision store on SQLite and PostgreSQL: the decision record, actions (approve once, ack
idempotence, expiry), recommendations (dedup, accepting applies the setting), group policies,
weights, and migration 0003 up and down."""

from __future__ import annotations

import json
import os
import threading
import uuid

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fleetml.decisions.contracts import (
    Algorithm,
    Decision,
    GroupPolicy,
    Mode,
    Recommendation,
    RecommendationKind,
)
from fleetml.errors import Conflict, InvalidInput, NotFound
from fleetml.store import actions, decisions, policies, recommendations, weights
from fleetml.store.audit import read_audit

NOW = 1_769_860_800_000  # 2026-01-31T12:00:00Z
MIN = 60_000
TTL = 15 * MIN
DECISION_TABLES = ("decisions", "actions", "recommendations", "weights", "group_policies")


@pytest.fixture
def store(engine):
    """The migrated store with the decision tables empty (the PostgreSQL database is shared by
    the session, and the session's truncation predates these tables)."""
    with engine.begin() as conn:
        for table in DECISION_TABLES:
            conn.execute(sa.text(f"DELETE FROM {table}"))
    return engine


def failover(account_id: str = "m1", *, status: str = "awaiting_approval", to: str = "s1"):
    return Decision(
        kind="failover",
        rule="risk_sustained",
        account_id=account_id,
        group="eu",
        params={"to": to},
        inputs={"risk": 0.72, "risk_on": 0.6, "nan_input": float("nan"), "n": np.int64(2)},
        models={"risk": 4},
        reason="failure risk 0.72 >= 0.60 for 2 ticks (1h horizon)",
        mode="approve" if status == "awaiting_approval" else "auto",
        status=status,
    )


def decide(engine, *ds: Decision, now_ms: int = NOW) -> list[int]:
    """What the tick does: record decisions, then the actions they make."""
    keys = [f"{now_ms}:{d.kind}:{d.account_id}:{d.rule}" for d in ds]
    with engine.begin() as conn:
        ids = decisions.write_decisions(conn, ds, ts_ms=now_ms, dedup_keys=keys)
        rows = [
            {
                "decision_id": i,
                "account_id": d.account_id,
                "group": d.group,
                "kind": d.kind,
                "params": d.params,
                "state": "pending" if d.status == "executed" else "awaiting_approval",
                "dedup_key": k,
            }
            for d, i, k in zip(ds, ids, keys, strict=True)
        ]
        return actions.create_actions(conn, rows, now_ms=now_ms, ttl_ms=TTL)


def count(engine, table: str, where: str = "1=1") -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {where}")).scalar()


# ---- the decision record -------------------------------------------------------------------


def test_a_rerun_tick_does_not_duplicate_decisions(store):
    ds = [failover("m1"), failover("m2"), Decision(kind="weight", rule="weights", account_id="m1")]
    keys = ["t1:failover:m1", "t1:failover:m2", "t1:weight:m1"]
    with store.begin() as conn:
        first = decisions.write_decisions(conn, ds, ts_ms=NOW, dedup_keys=keys)
    with store.begin() as conn:  # the same tick again, after a crash
        again = decisions.write_decisions(conn, ds[::-1], ts_ms=NOW, dedup_keys=keys[::-1])
    assert again == first[::-1] and len(set(first)) == 3
    assert count(store, "decisions") == 3
    with store.begin() as conn:  # no key: always a new row
        loose = decisions.write_decisions(conn, ds[:1] * 2, ts_ms=NOW, dedup_keys=[None, None])
    assert len(set(loose)) == 2 and count(store, "decisions") == 5

    [row] = decisions.read_decisions(store, account_id="m2")
    assert row["inputs"] == {"risk": 0.72, "risk_on": 0.6, "nan_input": None, "n": 2}
    assert row["reason"].startswith("failure risk") and row["models"] == {"risk": 4}
    with pytest.raises(ValueError, match="dedup keys"):
        with store.begin() as conn:
            decisions.write_decisions(conn, ds, ts_ms=NOW, dedup_keys=keys[:1])


def test_decisions_read_newest_first_with_filters_cursor_and_outcomes(store):
    with store.begin() as conn:
        for i in range(5):
            decisions.write_decisions(
                conn, [failover(f"m{i % 2}")], ts_ms=NOW + i * MIN, dedup_keys=[f"k{i}"]
            )
    all_ = decisions.read_decisions(store)
    assert [r["ts_ms"] for r in all_] == [NOW + i * MIN for i in range(4, -1, -1)]
    page = decisions.read_decisions(store, limit=2, after_id=all_[1]["id"])
    assert [r["id"] for r in page] == [all_[2]["id"], all_[3]["id"]]
    window = decisions.read_decisions(store, since_ms=NOW + MIN, until_ms=NOW + 3 * MIN)
    assert len(window) == 3
    assert {r["account_id"] for r in decisions.read_decisions(store, account_id="m1")} == {"m1"}
    assert decisions.read_decisions(store, kind="weight") == []

    open_ = decisions.read_open_outcomes(store, kinds=["failover"], before_ms=NOW + 2 * MIN)
    assert [r["ts_ms"] for r in open_] == [NOW, NOW + MIN]
    with store.begin() as conn:
        assert decisions.set_outcome(
            conn, decision_id=open_[0]["id"], outcome={"needed": True}, at_ms=NOW + 9 * MIN
        )
        assert not decisions.set_outcome(conn, decision_id=2**31, outcome={}, at_ms=NOW)
    left = decisions.read_open_outcomes(store, kinds=["failover"], before_ms=NOW + 2 * MIN)
    assert [r["id"] for r in left] == [open_[1]["id"]]
    assert decisions.get_decision(store, decision_id=open_[0]["id"])["outcome"] == {"needed": True}


# ---- actions -------------------------------------------------------------------------------


def test_an_approved_action_executes_once(store):
    [action_id] = decide(store, failover())
    with store.begin() as conn:
        approved = actions.approve_action(conn, action_id=action_id, actor="alice", now_ms=NOW + 1)
    assert approved["state"] == "pending" and approved["approved_by"] == "alice"
    assert approved["expires_at"] == NOW + 1 + TTL  # a full time to live from the approval
    for verb in (actions.approve_action, actions.reject_action):
        with pytest.raises(Conflict, match="already approved by alice"):
            with store.begin() as conn:
                verb(conn, action_id=action_id, actor="bob", now_ms=NOW + 2)
    assert actions.get_action(store, action_id=action_id)["approved_by"] == "alice"
    [decision] = decisions.read_decisions(store)
    assert decision["status"] == "executed" and decision["action_id"] == action_id
    log = read_audit(store, entity_type="action", entity_id=str(action_id))
    assert [(e["action"], e["actor"]) for e in log] == [("action.approve", "alice")]
    with pytest.raises(NotFound):
        with store.begin() as conn:
            actions.approve_action(conn, action_id=2**31, actor="bob", now_ms=NOW)


def test_two_concurrent_approvals_exactly_one_wins(store, monkeypatch):
    """Both replicas read the action as waiting before either writes: only the conditional
    update keeps the second from approving it too."""
    [action_id] = decide(store, failover())
    barrier = threading.Barrier(2, timeout=20)
    real_get = actions.get_action
    seen: set[int] = set()

    def racing_get(bind, *, action_id):
        row = real_get(bind, action_id=action_id)
        me = threading.get_ident()
        if me not in seen:  # the first read of each replica: wait until both have read
            seen.add(me)
            barrier.wait()
        return row

    monkeypatch.setattr(actions, "get_action", racing_get)
    results: list[object] = []

    def approve(actor: str) -> None:
        try:
            with store.begin() as conn:
                results.append(
                    actions.approve_action(conn, action_id=action_id, actor=actor, now_ms=NOW + 1)
                )
        except Exception as exc:  # noqa: BLE001 (collected and asserted below)
            results.append(exc)

    threads = [threading.Thread(target=approve, args=(a,)) for a in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    won = [r for r in results if isinstance(r, dict)]
    lost = [r for r in results if not isinstance(r, dict)]
    assert len(won) == 1 and len(lost) == 1, results
    assert isinstance(lost[0], Conflict), lost
    log = read_audit(store, entity_type="action", entity_id=str(action_id))
    assert [e["actor"] for e in log] == [won[0]["approved_by"]]


def test_ack_is_idempotent_and_refuses_a_different_report(store):
    [action_id] = decide(store, failover(status="executed"))
    assert actions.get_action(store, action_id=action_id)["state"] == "pending"
    with store.begin() as conn:
        done = actions.ack_action(
            conn, action_id=action_id, outcome="ok", detail=None, actor="rt", now_ms=NOW + 5
        )
    assert done["state"] == "acknowledged" and done["acked_at"] == NOW + 5
    with store.begin() as conn:  # the runtime retried: same answer, nothing changes
        again = actions.ack_action(
            conn, action_id=action_id, outcome="ok", detail="retry", actor="rt", now_ms=NOW + 9
        )
    assert again == done
    with pytest.raises(Conflict, match="already reported 'ok'"):
        with store.begin() as conn:
            actions.ack_action(
                conn, action_id=action_id, outcome="failed", detail=None, actor="rt", now_ms=NOW
            )
    with pytest.raises(InvalidInput):
        with store.begin() as conn:
            actions.ack_action(
                conn, action_id=action_id, outcome="maybe", detail=None, actor="rt", now_ms=NOW
            )
    assert len(read_audit(store, entity_type="action", entity_id=str(action_id))) == 1

    [waiting] = decide(store, failover("m2"))
    with pytest.raises(Conflict, match="awaiting approval"):
        with store.begin() as conn:
            actions.ack_action(
                conn, action_id=waiting, outcome="ok", detail=None, actor="rt", now_ms=NOW
            )

    [broken] = decide(store, failover("m3", status="executed"))
    with store.begin() as conn:
        failed = actions.ack_action(
            conn, action_id=broken, outcome="failed", detail="no servant", actor="rt", now_ms=NOW
        )
    assert failed["state"] == "failed" and failed["detail"] == "no servant"
    assert decisions.read_decisions(store, account_id="m3")[0]["status"] == "failed"


def test_unacted_actions_expire_and_can_then_not_be_acted_on(store):
    pending, waiting = decide(store, failover("m1", status="executed"), failover("m2"))
    with store.begin() as conn:
        assert actions.expire_actions(conn, now_ms=NOW + TTL - 1) == 0
    with store.begin() as conn:
        assert actions.expire_actions(conn, now_ms=NOW + TTL) == 2
    with store.begin() as conn:
        assert actions.expire_actions(conn, now_ms=NOW + TTL) == 0
    assert {r["state"] for r in actions.list_actions(store)} == {"expired"}
    assert {r["status"] for r in decisions.read_decisions(store)} == {"expired"}
    with pytest.raises(Conflict, match="expired"):
        with store.begin() as conn:
            actions.approve_action(conn, action_id=waiting, actor="alice", now_ms=NOW + TTL)
    with pytest.raises(Conflict, match="expired"):
        with store.begin() as conn:
            actions.ack_action(
                conn, action_id=pending, outcome="ok", detail=None, actor="rt", now_ms=NOW + TTL
            )
    expiries = read_audit(store, entity_type="action")
    assert sorted(e["entity_id"] for e in expiries) == sorted([str(pending), str(waiting)])


def test_a_waiting_action_past_its_expiry_cannot_be_approved(store):
    [action_id] = decide(store, failover())
    with pytest.raises(Conflict, match="expiry"):
        with store.begin() as conn:
            actions.approve_action(conn, action_id=action_id, actor="alice", now_ms=NOW + TTL)


def test_a_repeated_decision_joins_the_waiting_action_and_a_new_one_supersedes_it(store):
    [first] = decide(store, failover(to="s1"))
    [again] = decide(store, failover(to="s1"), now_ms=NOW + MIN)  # the next tick, same failover
    assert again == first
    assert actions.get_action(store, action_id=first)["expires_at"] == NOW + MIN + TTL
    assert decide(store, failover(to="s1"), now_ms=NOW + MIN) == [first]  # that tick rerun
    assert count(store, "actions") == 1
    assert {r["action_id"] for r in decisions.read_decisions(store)} == {first}

    [other] = decide(store, failover(to="s2"), now_ms=NOW + 2 * MIN)  # a different target
    assert other != first
    old = actions.get_action(store, action_id=first)
    assert old["state"] == "superseded" and str(other) in old["detail"]
    with pytest.raises(Conflict, match="superseded"):
        with store.begin() as conn:
            actions.approve_action(conn, action_id=first, actor="alice", now_ms=NOW + 3 * MIN)
    states = {r["action_id"]: r["status"] for r in decisions.read_decisions(store)}
    assert states == {first: "superseded", other: "awaiting_approval"}


def test_reject_records_who_and_why(store):
    [action_id] = decide(store, failover())
    with store.begin() as conn:
        row = actions.reject_action(
            conn, action_id=action_id, actor="alice", now_ms=NOW + 1, comment="servant is cold"
        )
    assert row["state"] == "rejected" and row["approved_by"] == "alice"
    assert row["detail"] == "servant is cold"
    assert decisions.read_decisions(store)[0]["status"] == "rejected"
    [entry] = read_audit(store, entity_type="action", entity_id=str(action_id))
    assert entry["action"] == "action.reject" and entry["detail"]["comment"] == "servant is cold"


# ---- recommendations -----------------------------------------------------------------------


def rec(value: str = "least_load", *, key: str = "change_algorithm:eu", **kw) -> Recommendation:
    return Recommendation(
        kind=RecommendationKind.CHANGE_ALGORITHM,
        title=f"eu: {value} fits better",
        dedup_key=key,
        group="eu",
        evidence={"p95_ms": np.float64(840.0), "bad": float("inf")},
        expected_impact={"p95_latency_change": -0.18},
        setting={"group": "eu", "field": "algorithm", "value": value},
        **{"confidence": 0.7, **kw},
    )


def test_raising_the_same_recommendation_twice_keeps_one_open_row(store):
    with store.begin() as conn:
        assert recommendations.upsert_recommendations(conn, [rec()], now_ms=NOW)["opened"] == 1
    with store.begin() as conn:
        counts = recommendations.upsert_recommendations(
            conn, [rec(confidence=0.9)], now_ms=NOW + MIN
        )
    assert counts["opened"] == 0 and counts["updated"] == 1
    with store.begin() as conn:  # the same tick rerun: no extra occurrence
        recommendations.upsert_recommendations(conn, [rec(confidence=0.9)], now_ms=NOW + MIN)
    [row] = recommendations.list_recommendations(store)
    assert row["state"] == "open" and row["occurrences"] == 2
    assert row["confidence"] == 0.9 and row["updated_at"] == NOW + MIN
    assert row["evidence"] == {"p95_ms": 840.0, "bad": None}
    assert row["expires_at"] == NOW + MIN + 86_400_000

    with store.begin() as conn:  # another key is another recommendation
        recommendations.upsert_recommendations(conn, [rec(key="other")], now_ms=NOW + MIN)
    assert count(store, "recommendations", "state = 'open'") == 2


def test_a_dismissed_recommendation_stays_quiet_until_it_would_have_expired(store):
    with store.begin() as conn:
        recommendations.upsert_recommendations(conn, [rec(expires_after_s=3600)], now_ms=NOW)
    [row] = recommendations.list_recommendations(store)
    with store.begin() as conn:
        recommendations.dismiss_recommendation(
            conn, rec_id=row["id"], actor="alice", comment="no", now_ms=NOW + 1
        )
    with store.begin() as conn:
        quiet = recommendations.upsert_recommendations(conn, [rec()], now_ms=NOW + MIN)
    assert quiet == {"opened": 0, "updated": 0, "suppressed": 1}
    with store.begin() as conn:
        back = recommendations.upsert_recommendations(conn, [rec()], now_ms=NOW + 3_600_000)
    assert back["opened"] == 1
    assert [r["state"] for r in recommendations.list_recommendations(store)] == [
        "open",
        "dismissed",
    ]


def test_recommendations_expire(store):
    with store.begin() as conn:
        recommendations.upsert_recommendations(conn, [rec(expires_after_s=60)], now_ms=NOW)
    with store.begin() as conn:
        assert recommendations.expire_recommendations(conn, now_ms=NOW + 59_999) == 0
        assert recommendations.expire_recommendations(conn, now_ms=NOW + MIN) == 1
    [row] = recommendations.list_recommendations(store, state="expired")
    with pytest.raises(Conflict, match="already expired"):
        with store.begin() as conn:
            recommendations.accept_recommendation(
                conn, rec_id=row["id"], actor="a", comment=None, now_ms=NOW + MIN
            )


def test_accepting_a_recommendation_with_a_setting_changes_the_group_policy(store):
    with store.begin() as conn:
        recommendations.upsert_recommendations(conn, [rec()], now_ms=NOW)
    [row] = recommendations.list_recommendations(store)
    assert policies.read_group_policies(store) == {}
    with store.begin() as conn:
        accepted = recommendations.accept_recommendation(
            conn, rec_id=row["id"], actor="alice", comment="go", now_ms=NOW + 1
        )
    assert accepted["state"] == "applied" and accepted["decided_by"] == "alice"
    assert policies.read_group_policies(store)["eu"].algorithm is Algorithm.LEAST_LOAD
    [change] = read_audit(store, entity_type="group_policy", entity_id="eu")
    assert change["actor"] == "alice" and change["detail"] == {"recommendation_id": row["id"]}
    assert change["before"] == {"algorithm": "p2c_ewma"}
    assert change["after"] == {"algorithm": "least_load"}
    assert read_audit(store, entity_type="recommendation")[0]["action"] == "recommendation.accept"
    with pytest.raises(Conflict, match="already applied by alice"):
        with store.begin() as conn:
            recommendations.accept_recommendation(
                conn, rec_id=row["id"], actor="bob", comment=None, now_ms=NOW + 2
            )

    # Without a setting it is only accepted: nothing else changes.
    plain = Recommendation(kind=RecommendationKind.ADD_SERVANTS, title="add 2", dedup_key="add:eu")
    with store.begin() as conn:
        recommendations.upsert_recommendations(conn, [plain], now_ms=NOW)
    [row] = recommendations.list_recommendations(store, kind="add_servants")
    with store.begin() as conn:
        out = recommendations.accept_recommendation(
            conn, rec_id=row["id"], actor="alice", comment=None, now_ms=NOW + 3
        )
    assert out["state"] == "accepted"
    assert len(read_audit(store, entity_type="group_policy")) == 1


def test_a_setting_that_no_longer_fits_leaves_the_recommendation_open(store):
    with store.begin() as conn:
        policies.set_group_policy(
            conn, group="eu", changes={"risk_off": 0.5}, actor="admin", now_ms=NOW
        )
        stale = Recommendation(
            kind=RecommendationKind.ADJUST_FAILOVER_THRESHOLD,
            title="lower risk_on to 0.45",
            dedup_key="threshold:eu",
            group="eu",
            setting={"group": "eu", "field": "risk_on", "value": 0.45},
        )
        recommendations.upsert_recommendations(conn, [stale], now_ms=NOW)
    [row] = recommendations.list_recommendations(store)
    with pytest.raises(Conflict, match="risk_off"):
        with store.begin() as conn:
            recommendations.accept_recommendation(
                conn, rec_id=row["id"], actor="alice", comment=None, now_ms=NOW + 1
            )
    assert recommendations.get_recommendation(store, rec_id=row["id"])["state"] == "open"
    assert policies.read_group_policies(store)["eu"].risk_on == GroupPolicy().risk_on


# ---- group policies ------------------------------------------------------------------------


def test_group_policy_stores_only_what_differs_and_merges_over_defaults(store):
    with store.begin() as conn:
        out = policies.set_group_policy(
            conn,
            group="eu",
            changes={"mode": "shadow", "risk_on": 0.7, "weight_cap": 1.0, "trigger_ticks": 3},
            actor="admin",
            now_ms=NOW,
            default_mode="auto",
        )
    assert out == GroupPolicy(mode=Mode.SHADOW, risk_on=0.7, trigger_ticks=3)
    with store.connect() as conn:
        stored = conn.execute(sa.text("SELECT settings FROM group_policies")).scalar()
    stored = stored if isinstance(stored, dict) else json.loads(stored)
    # weight_cap equals the default: not stored; mode is kept (its default is a deployment's)
    assert stored == {"mode": "shadow", "risk_on": 0.7, "trigger_ticks": 3}
    got = policies.read_group_policies(store, default_mode="auto")["eu"]
    assert got.mode is Mode.SHADOW and got.risk_on == 0.7

    with store.begin() as conn:  # null puts a field back to its default
        policies.set_group_policy(
            conn,
            group="eu",
            changes={"mode": None},
            actor="admin",
            now_ms=NOW + 1,
            default_mode="auto",
        )
    assert policies.read_group_policies(store, default_mode="auto")["eu"].mode is Mode.AUTO
    found = policies.read_group_policy(store, group="eu")
    assert found["customized"] == ["risk_on", "trigger_ticks"] and found["updated_by"] == "admin"
    log = read_audit(store, entity_type="group_policy", entity_id="eu")
    assert log[0]["before"] == {"mode": "shadow"} and log[0]["after"] == {"mode": "auto"}
    assert log[1]["after"]["risk_on"] == 0.7


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"nope": 1}, "nope"),
        ({"mode": "yolo"}, "mode"),
        ({"algorithm": 3}, "algorithm"),
        ({"risk_on": 1.0}, "risk_on"),
        ({"risk_on": 0}, "risk_on"),
        ({"risk_on": float("nan")}, "risk_on"),
        ({"risk_on": "0.7"}, "risk_on"),
        ({"risk_on": True}, "risk_on"),
        ({"risk_off": 0.65}, "risk_off"),  # not below the default risk_on 0.6
        ({"weight_floor": 1.5}, "weight_floor"),
        ({"weight_cap": 0}, "weight_cap"),
        ({"weight_cap": 11}, "weight_cap"),
        ({"weight_cap": 0.01}, "weight_floor"),  # below the default floor 0.05
        ({"smoothing": -0.1}, "smoothing"),
        ({"trigger_ticks": 0}, "trigger_ticks"),
        ({"trigger_ticks": 2.5}, "trigger_ticks"),
        ({"clear_ticks": 10**40}, "clear_ticks"),
        ({"cooldown_s": -1}, "cooldown_s"),
        ({"probation_s": 10**12}, "probation_s"),
        ({"risk_horizon": "soon"}, "risk_horizon"),
        ({"risk_horizon": "-1h"}, "risk_horizon"),
        ({"risk_horizon": "1h\x00"}, "risk_horizon"),
        ({"risk_horizon": "1000h"}, "risk_horizon"),
    ],
)
def test_bad_policy_changes_name_the_field(store, changes, field):
    with pytest.raises(InvalidInput, match=field):
        with store.begin() as conn:
            policies.set_group_policy(conn, group="eu", changes=changes, actor="a", now_ms=NOW)
    assert policies.read_group_policies(store) == {}
    assert read_audit(store, entity_type="group_policy") == []


# ---- weights -------------------------------------------------------------------------------


def weight_frame(w: float = 0.5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "account_id": ["m1", "s1", "m2"],
            "group": ["eu", "eu", "us"],
            "weight": [1.0, w, 0.8],
            "target": [1.0, 0.25, 0.8],
            "held": [False, False, False],
            "reasons": [[], ["failure risk 0.41"], []],
        }
    )


def test_weights_upsert_per_account_and_version_moves(store):
    assert weights.weights_version(store) is None
    assert weights.read_weights(store).empty
    with store.begin() as conn:
        assert weights.write_weights(conn, weight_frame(), ts_ms=NOW, models={"risk": 4}) == 3
    with store.begin() as conn:
        weights.write_weights(conn, weight_frame(0.4)[1:2], ts_ms=NOW + MIN, models={"risk": 5})
    assert weights.weights_version(store) == NOW + MIN
    eu = weights.read_weights(store, group="eu").set_index("account_id")
    assert eu.loc["s1", "weight"] == 0.4 and eu.loc["s1", "reasons"] == ["failure risk 0.41"]
    assert eu.loc["s1", "models"] == {"risk": 5} and eu.loc["m1", "ts_ms"] == NOW
    assert len(weights.read_weights(store)) == 3
    assert weights.group_known(store, group="us") and not weights.group_known(store, group="ap")

    bad = weight_frame(float("nan"))
    with pytest.raises(ValueError, match="s1"):
        with store.begin() as conn:
            weights.write_weights(conn, bad, ts_ms=NOW + 2 * MIN, models={})
    assert weights.weights_version(store) == NOW + MIN


# ---- migration 0003 ------------------------------------------------------------------------


def _up_and_down(url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from fleetml.store.engine import make_engine
    from fleetml.store.migrate import _MIGRATIONS, current_revision

    engine = make_engine(url)
    try:
        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", url)

        def run(fn, revision):
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                fn(cfg, revision)

        run(command.upgrade, "0003")
        assert set(DECISION_TABLES) <= set(sa.inspect(engine).get_table_names())
        with engine.begin() as conn:
            decisions.write_decisions(conn, [failover()], ts_ms=NOW, dedup_keys=["k"])
        run(command.downgrade, "0002")
        assert current_revision(engine) == "0002"
        tables = set(sa.inspect(engine).get_table_names())
        assert not tables & set(DECISION_TABLES) and "alerts" in tables
        run(command.upgrade, "0003")  # later migrations (0004, ...) have their own tests
        assert current_revision(engine) == "0003"
        assert decisions.read_decisions(engine) == []
    finally:
        engine.dispose()


def test_migration_0003_upgrades_and_downgrades_on_sqlite(tmp_path):
    _up_and_down(f"sqlite:///{tmp_path / 'fleetml.db'}")


@pytest.mark.postgres
def test_migration_0003_upgrades_and_downgrades_on_postgres():
    from tests.conftest import PG_ENV, _pg_url

    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set; PostgreSQL tests need a server")
    name = f"fleetml_mig_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(
        _pg_url(base, sa.engine.make_url(base).database or "postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        _up_and_down(_pg_url(base, name))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
