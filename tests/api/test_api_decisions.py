"""The decisions API: weights, actions, recommendations, the decision record and group policies,
over SQLite and PostgreSQL; unknown ids and hostile input get a clear 4xx."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from fleetml.decisions.contracts import Decision, Recommendation, RecommendationKind
from fleetml.store import actions, decisions, recommendations, weights

NOW = 1_769_860_800_000  # 2026-01-31T12:00:00Z
MIN = 60_000
DECISION_TABLES = ("decisions", "actions", "recommendations", "weights", "group_policies")


def seed(engine, *, now_ms: int = NOW) -> dict[str, int]:
    """A small decided fleet: groups eu (m1, s1) and us (m2); a failover of m1 waiting for
    approval, a pending drain of m2, weights, and two open recommendations (one with a
    setting). Returns the ids by name."""
    with engine.begin() as conn:
        for table in DECISION_TABLES:  # the PostgreSQL database is shared by the session
            conn.execute(sa.text(f"DELETE FROM {table}"))
        ds = [
            Decision(
                kind="failover",
                rule="risk_sustained",
                account_id="m1",
                group="eu",
                params={"to": "s1"},
                inputs={"risk": 0.72, "risk_on": 0.6},
                models={"risk": 4},
                reason="failure risk 0.72 >= 0.60 for 2 ticks (1h horizon)",
                mode="approve",
                status="awaiting_approval",
            ),
            Decision(
                kind="drain",
                rule="maintenance",
                account_id="m2",
                group="us",
                reason="planned maintenance began",
            ),
            Decision(
                kind="weight",
                rule="weights",
                account_id="s1",
                group="eu",
                reason="failure risk 0.41",
                mode="shadow",
                status="shadow",
            ),
        ]
        keys = [f"{now_ms}:{d.kind}:{d.account_id}" for d in ds]
        ids = decisions.write_decisions(conn, ds, ts_ms=now_ms, dedup_keys=keys)
        waiting, pending = actions.create_actions(
            conn,
            [
                {"decision_id": ids[0], "account_id": "m1", "group": "eu", "kind": "failover",
                 "params": {"to": "s1"}, "state": "awaiting_approval", "dedup_key": keys[0]},
                {"decision_id": ids[1], "account_id": "m2", "group": "us", "kind": "drain",
                 "params": {}, "state": "pending", "dedup_key": keys[1]},
            ],
            now_ms=now_ms,
            ttl_ms=10**12,  # the server's clock is "now": keep them valid
        )  # fmt: skip
        weights.write_weights(
            conn,
            pd.DataFrame(
                {
                    "account_id": ["m1", "s1", "m2"],
                    "group": ["eu", "eu", "us"],
                    "weight": [100.0, 40.0, 60.0],
                    "target": [100.0, 30.0, 60.0],
                    "reasons": [[], ["failure risk 0.41"], []],
                }
            ),
            ts_ms=now_ms,
            models={"risk": 4},
        )
        recommendations.upsert_recommendations(
            conn,
            [
                Recommendation(
                    kind=RecommendationKind.CHANGE_ALGORITHM,
                    title="eu: least_load fits better",
                    dedup_key="change_algorithm:eu",
                    group="eu",
                    setting={"group": "eu", "field": "algorithm", "value": "least_load"},
                    expires_after_s=10**7,
                ),
                Recommendation(
                    kind=RecommendationKind.ADD_SERVANTS,
                    title="us: add 2 servants before the evening peak",
                    dedup_key="add_servants:us",
                    group="us",
                    expires_after_s=10**7,
                ),
            ],
            now_ms=now_ms,
        )
    recs = {r["kind"]: r["id"] for r in recommendations.list_recommendations(engine)}
    return {
        "waiting": waiting,
        "pending": pending,
        "failover_decision": ids[0],
        "algorithm_rec": recs["change_algorithm"],
        "servants_rec": recs["add_servants"],
    }


@pytest.fixture
def fleet(api, engine):
    api.register("m1", group="eu")
    api.register("m2", group="us")
    return seed(engine)


# ---- weights -------------------------------------------------------------------------------


def test_weights_per_account_with_each_groups_algorithm_and_mode(api, fleet):
    body = api.get("/v1/weights", as_="runtime").json()
    assert body["version"] == "2026-01-31T12:00:00.000Z"
    by_account = {a["account_id"]: a for a in body["accounts"]}
    assert by_account["s1"] == {
        "account_id": "s1",
        "group": "eu",
        "weight": 40.0,
        "target": 30.0,
        "reasons": ["failure risk 0.41"],
        "updated_at": "2026-01-31T12:00:00.000Z",
    }
    assert body["groups"] == [
        {"group": "eu", "algorithm": "p2c_ewma", "mode": "shadow"},
        {"group": "us", "algorithm": "p2c_ewma", "mode": "shadow"},
    ]
    patched = api.patch("/v1/groups/eu/policy", json={"mode": "auto", "algorithm": "least_load"})
    assert patched.status_code == 200, patched.text
    eu = api.get("/v1/weights", params={"group": "eu"}, as_="ops").json()
    assert {a["account_id"] for a in eu["accounts"]} == {"m1", "s1"}
    assert eu["groups"] == [{"group": "eu", "algorithm": "least_load", "mode": "auto"}]


def test_weights_of_an_unknown_group_are_404(api, fleet):
    resp = api.get("/v1/weights", params={"group": "nowhere"}, as_="runtime")
    assert resp.status_code == 404 and "nowhere" in resp.json()["detail"]
    api.register("m3", group="ap")  # registered, nothing decided yet: known, no weights
    ap = api.get("/v1/weights", params={"group": "ap"}, as_="runtime").json()
    assert ap["accounts"] == [] and ap["groups"][0]["group"] == "ap"


# ---- actions -------------------------------------------------------------------------------


def test_actions_list_filter_and_page(api, fleet):
    pending = api.get("/v1/actions", params={"state": "pending"}, as_="runtime").json()
    assert [a["id"] for a in pending["actions"]] == [fleet["pending"]]
    assert pending["actions"][0]["created_at"] == "2026-01-31T12:00:00.000Z"
    first = api.get("/v1/actions", params={"limit": 1}, as_="runtime").json()
    rest = api.get("/v1/actions", params={"limit": 1, "cursor": first["next_cursor"]}).json()
    assert [first["actions"][0]["id"], rest["actions"][0]["id"]] == [
        fleet["pending"],
        fleet["waiting"],
    ]
    assert rest["next_cursor"] is None
    eu = api.get("/v1/actions", params={"group": "eu", "account_id": "m1"}).json()["actions"]
    assert [a["kind"] for a in eu] == ["failover"] and eu[0]["params"] == {"to": "s1"}


def test_an_approved_action_runs_once_and_the_runtime_acks_it(api, fleet):
    url = f"/v1/actions/{fleet['waiting']}"
    early = api.post(url + "/ack", json={"outcome": "ok"}, as_="runtime")
    assert early.status_code == 409 and "awaiting approval" in early.json()["detail"]

    approved = api.post(url + "/approve", json={"comment": "checked"}, as_="ops")
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "pending" and approved.json()["approved_by"] == "test-ops"
    again = api.post(url + "/approve", as_="admin")
    assert again.status_code == 409 and "already approved by test-ops" in again.json()["detail"]
    assert api.post(url + "/reject", as_="ops").status_code == 409

    acked = api.post(url + "/ack", json={"outcome": "ok"}, as_="runtime")
    assert acked.status_code == 200 and acked.json()["state"] == "acknowledged"
    retry = api.post(url + "/ack", json={"outcome": "ok", "detail": "retry"}, as_="runtime")
    assert retry.status_code == 200 and retry.json() == acked.json()
    other = api.post(url + "/ack", json={"outcome": "failed"}, as_="runtime")
    assert other.status_code == 409

    [decision] = api.get("/v1/decisions", params={"kind": "failover"}).json()["decisions"]
    assert decision["status"] == "executed" and decision["action_id"] == fleet["waiting"]
    audit = api.get("/v1/audit", params={"entity_type": "action"}).json()["entries"]
    assert [e["action"] for e in audit] == ["action.ack", "action.approve"]


def test_reject_a_waiting_action(api, fleet):
    url = f"/v1/actions/{fleet['waiting']}/reject"
    resp = api.post(url, json={"comment": "servant is cold"}, as_="ops")
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "rejected" and resp.json()["detail"] == "servant is cold"
    assert api.post(url, as_="ops").status_code == 409
    pending = f"/v1/actions/{fleet['pending']}/approve"
    assert api.post(pending, as_="ops").status_code == 409  # auto mode: nothing to approve


# ---- recommendations and policies ----------------------------------------------------------


def test_accepting_a_recommendation_changes_the_group_policy(api, fleet):
    listed = api.get("/v1/recommendations", params={"state": "open", "group": "eu"}).json()
    [rec] = listed["recommendations"]
    assert rec["setting"] == {"group": "eu", "field": "algorithm", "value": "least_load"}
    assert api.get("/v1/groups/eu/policy").json()["algorithm"] == "p2c_ewma"

    resp = api.post(f"/v1/recommendations/{rec['id']}/accept", json={"comment": "go"}, as_="ops")
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "applied" and resp.json()["decided_by"] == "test-ops"
    policy = api.get("/v1/groups/eu/policy", as_="ops").json()
    assert policy["algorithm"] == "least_load" and policy["customized"] == ["algorithm"]
    assert policy["updated_by"] == "test-ops"
    [entry] = api.get("/v1/audit", params={"entity_type": "group_policy"}).json()["entries"]
    assert entry["entity_id"] == "eu" and entry["actor"] == "test-ops"
    assert entry["after"] == {"algorithm": "least_load"}
    assert entry["detail"] == {"recommendation_id": rec["id"]}
    again = api.post(f"/v1/recommendations/{rec['id']}/accept", as_="ops")
    assert again.status_code == 409 and "already applied" in again.json()["detail"]

    plain = api.post(f"/v1/recommendations/{fleet['servants_rec']}/dismiss", as_="ops")
    assert plain.status_code == 200 and plain.json()["state"] == "dismissed"
    kinds = api.get("/v1/recommendations", params={"kind": "add_servants"}).json()
    assert [r["state"] for r in kinds["recommendations"]] == ["dismissed"]


def test_policy_patch_changes_resets_and_refuses_bad_values(api, fleet):
    resp = api.patch("/v1/groups/eu/policy", json={"mode": "approve", "risk_on": 0.7})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["mode"] == "approve" and body["risk_on"] == 0.7 and body["risk_off"] == 0.3
    assert body["customized"] == ["mode", "risk_on"] and body["updated_by"] == "test-admin"
    reset = api.patch("/v1/groups/eu/policy", json={"risk_on": None}).json()
    assert reset["risk_on"] == 0.6 and reset["customized"] == ["mode"]
    fresh = api.get("/v1/groups/not-yet/policy").json()  # defaults for a group to come
    assert fresh["mode"] == "shadow" and fresh["customized"] == []

    for body, words in (
        ({"risk_on": 1.5}, "risk_on must be in (0, 1)"),
        ({"risk_off": 0.9}, "risk_off (0.9) must be below risk_on"),
        ({"trigger_ticks": 0}, "trigger_ticks"),
        ({"weight_cap": 50}, "weight_cap"),
        ({"risk_horizon": "soon"}, "risk_horizon"),
        ({"mode": "yolo"}, "mode"),
        ({"turbo": True}, "turbo"),
    ):
        bad = api.patch("/v1/groups/eu/policy", json=body)
        assert bad.status_code == 422, (body, bad.text)
        assert words in bad.json()["detail"], (body, bad.json())
    assert api.get("/v1/groups/eu/policy").json()["risk_on"] == 0.6


def test_the_patch_body_offers_every_policy_setting():
    from fleetml.decisions.contracts import POLICY_FIELDS
    from fleetml.schemas.decisions import GroupPolicyOut, GroupPolicyPatch

    assert set(GroupPolicyPatch.model_fields) == set(POLICY_FIELDS)
    assert set(POLICY_FIELDS) <= set(GroupPolicyOut.model_fields)


# ---- the decision record -------------------------------------------------------------------


def test_decisions_answer_why_traffic_moved(api, fleet):
    body = api.get("/v1/decisions", params={"account_id": "m1"}, as_="ops").json()
    [d] = body["decisions"]
    assert d["ts"] == "2026-01-31T12:00:00.000Z" and d["rule"] == "risk_sustained"
    assert d["reason"].startswith("failure risk 0.72") and d["inputs"]["risk"] == 0.72
    assert d["models"] == {"risk": 4} and d["mode"] == "approve" and d["outcome"] is None
    eu = api.get("/v1/decisions", params={"group": "eu"}).json()["decisions"]
    assert {x["kind"] for x in eu} == {"failover", "weight"}
    window = {"from": "2026-01-31T11:59:00Z", "to": "2026-01-31T12:00:00Z"}
    assert len(api.get("/v1/decisions", params=window).json()["decisions"]) == 3
    later = {"from": str((NOW + MIN) / 1000)}  # epoch seconds
    assert api.get("/v1/decisions", params=later).json()["decisions"] == []
    page = api.get("/v1/decisions", params={"limit": 2}).json()
    assert len(page["decisions"]) == 2 and page["next_cursor"]
    rest = api.get("/v1/decisions", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert len(rest["decisions"]) == 1 and rest["next_cursor"] is None


# ---- unknown ids and hostile input ---------------------------------------------------------


@pytest.mark.parametrize(
    ("action_id", "status"),
    [("999999", 404), ("2147483647", 404), ("2147483648", 422), ("9223372036854775807", 422)],
)
def test_unknown_ids_are_404_and_impossible_ones_422(api, fleet, action_id, status):
    """Ids are PostgreSQL integers on both stores: past 2**31 - 1 no row can have one."""
    for url, body in (
        (f"/v1/actions/{action_id}/approve", None),
        (f"/v1/actions/{action_id}/reject", None),
        (f"/v1/actions/{action_id}/ack", {"outcome": "ok"}),
        (f"/v1/recommendations/{action_id}/accept", None),
        (f"/v1/recommendations/{action_id}/dismiss", None),
    ):
        assert api.post(url, json=body).status_code == status, url
    for url in ("/v1/actions", "/v1/decisions", "/v1/recommendations"):
        assert api.get(url, params={"cursor": action_id}).status_code == 200, url


@pytest.mark.parametrize(
    ("method", "url", "kw"),
    [
        ("POST", "/v1/actions/99999999999999999999999/approve", {}),
        ("POST", "/v1/actions/-1/approve", {}),
        ("POST", "/v1/actions/abc/reject", {}),
        ("POST", "/v1/actions/1/ack", {}),
        ("POST", "/v1/actions/1/ack", {"json": {"outcome": "maybe"}}),
        ("POST", "/v1/actions/1/ack", {"json": {"outcome": "ok", "extra": 1}}),
        ("POST", "/v1/actions/1/ack", {"json": {"outcome": "ok", "detail": "x" * 5000}}),
        ("POST", "/v1/actions/1/ack", {"json": {"outcome": "ok", "detail": "a\x00b"}}),
        ("POST", "/v1/actions/1/approve", {"json": {"comment": 5}}),
        (
            "POST",
            "/v1/actions/1/approve",
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        ),
        ("POST", "/v1/recommendations/1/accept", {"json": ["not", "an", "object"]}),
        ("GET", "/v1/actions?state=broken", {}),
        ("GET", "/v1/actions?cursor=abc", {}),
        ("GET", "/v1/actions?cursor=99999999999999999999999", {}),
        ("GET", "/v1/actions?limit=0", {}),
        ("GET", "/v1/actions?account_id=has%20space", {}),
        ("GET", "/v1/actions?group=a%00b", {}),
        ("GET", "/v1/recommendations?kind=nope", {}),
        ("GET", "/v1/recommendations?state=nope", {}),
        ("GET", "/v1/decisions?kind=a%00b", {}),
        ("GET", "/v1/decisions?from=tomorrow", {}),
        ("GET", "/v1/decisions?from=1e300", {}),
        ("GET", "/v1/decisions?to=-5", {}),
        ("GET", "/v1/decisions?from=2026-02-01&to=2026-01-01", {}),
        ("GET", "/v1/decisions?cursor=%C2%B2", {}),
        ("GET", "/v1/weights?group=" + "x" * 200, {}),
        ("GET", "/v1/groups/a%01b/policy", {}),
        ("PATCH", "/v1/groups/eu/policy", {"json": {"risk_on": "high"}}),
        ("PATCH", "/v1/groups/eu/policy", {"json": {"trigger_ticks": 10**40}}),
        ("PATCH", "/v1/groups/eu/policy", {"json": {"cooldown_s": 1.5}}),
        ("PATCH", "/v1/groups/eu/policy", {"json": {"risk_horizon": "1h\u0000"}}),
        (
            "PATCH",
            "/v1/groups/eu/policy",
            {"content": b'{"risk_on": NaN}', "headers": {"Content-Type": "application/json"}},
        ),
        (
            "PATCH",
            "/v1/groups/eu/policy",
            {
                "content": b'{"smoothing": Infinity}',
                "headers": {"Content-Type": "application/json"},
            },
        ),
        ("PATCH", "/v1/groups/eu/policy", {"json": [1, 2]}),
    ],
)
def test_hostile_input_gets_a_clear_4xx(api, fleet, method, url, kw):
    response = api.request(method, url, **kw)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    assert api.get("/v1/groups/eu/policy").json()["customized"] == []
