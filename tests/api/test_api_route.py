"""POST /v1/route: the next account of a group, by its algorithm and the weights in effect;
enforcement holds keep their share; reports steer the balancer; hostile bodies are 4xx."""

from __future__ import annotations

import time
from collections import Counter

import pandas as pd
import pytest

from fleetml.serving.routing import HOLD_REASON, RouteTable

HELD = ["held: platform enforcement (traffic kept on the number, not moved)"]


@pytest.fixture
def routed(api):
    """The API with a seeded route table: group g1 (a1, a2, a3) and group g2 (b1)."""
    from fleetml.store.engine import get_engine

    for aid in ("a1", "a2", "a3"):
        api.register(aid, group="g1", capacity=10)
    api.register("b1", group="g2", capacity=10)
    engine = get_engine(api.settings)
    state = api.client.app.state.fleetml
    state.routes = RouteTable(engine, refresh_s=3600, seed=7)
    return api, engine, state.routes


def write_weights(engine, rows: dict[str, tuple], *, ts_ms: int = 1_000) -> None:
    """``rows``: account -> (group, weight) or (group, weight, reasons)."""
    from fleetml.store.weights import write_weights as store_write

    frame = pd.DataFrame(
        [
            {
                "account_id": a,
                "group": v[0],
                "weight": v[1],
                "target": v[1],
                "reasons": v[2] if len(v) > 2 else [],
            }
            for a, v in rows.items()
        ]
    )
    with engine.begin() as conn:
        store_write(conn, frame, ts_ms=ts_ms, models={})


def set_algorithm(engine, group: str, algorithm: str) -> None:
    from fleetml.store.policies import set_group_policy

    with engine.begin() as conn:
        set_group_policy(
            conn, group=group, changes={"algorithm": algorithm}, actor="pytest", now_ms=1_000
        )


def picks(api, group: str, n: int, *, as_: str = "runtime") -> list[dict]:
    out = []
    for _ in range(n):
        resp = api.post("/v1/route", as_=as_, json={"group": group})
        assert resp.status_code == 200, resp.text
        out.append(resp.json())
    return out


def test_routes_only_to_accounts_of_the_group(routed):
    api, _, table = routed
    table.refresh(force=True)
    answers = picks(api, "g1", 60)
    assert {a["account_id"] for a in answers} == {"a1", "a2", "a3"}
    assert all(a["group"] == "g1" and a["hold"] is False for a in answers)
    assert answers[0]["algorithm"] == "p2c_ewma"  # the default policy
    assert {a["account_id"] for a in picks(api, "g2", 5)} == {"b1"}


def test_before_any_tick_the_registry_capacities_are_the_weights(routed):
    api, engine, table = routed
    api.patch("/v1/accounts/a1", json={"capacity": 30})
    set_algorithm(engine, "g1", "weighted_round_robin")
    table.refresh(force=True)
    counts = Counter(a["account_id"] for a in picks(api, "g1", 250))
    assert counts == {"a1": 150, "a2": 50, "a3": 50}


def test_weighted_round_robin_follows_the_stored_weights(routed):
    api, engine, table = routed
    write_weights(engine, {"a1": ("g1", 1.0), "a2": ("g1", 3.0), "a3": ("g1", 0.0)})
    set_algorithm(engine, "g1", "weighted_round_robin")
    table.refresh(force=True)
    answers = picks(api, "g1", 400)
    assert Counter(a["account_id"] for a in answers) == {"a1": 100, "a2": 300}
    assert {(a["account_id"], a["weight"]) for a in answers} == {("a1", 1.0), ("a2", 3.0)}
    assert {a["algorithm"] for a in answers} == {"weighted_round_robin"}


@pytest.mark.parametrize(
    ("algorithm", "held_picks"),
    [
        ("weighted_round_robin", 100),
        ("least_load", 100),
        ("p2c_ewma", 100),
        ("round_robin", 400 // 3),  # round robin ignores sizes: one share per account
    ],
)
def test_a_held_account_keeps_its_share(routed, algorithm, held_picks):
    api, engine, table = routed
    write_weights(engine, {"a1": ("g1", 10.0, HELD), "a2": ("g1", 10.0), "a3": ("g1", 20.0)})
    set_algorithm(engine, "g1", algorithm)
    table.refresh(force=True)
    answers = picks(api, "g1", 400)
    held = [a for a in answers if a["hold"]]
    assert {a["account_id"] for a in held} == {"a1"}
    assert all(a["reason"] == HOLD_REASON and a["weight"] == 10.0 for a in held)
    # the held account's share is answered "hold", never given to a2 or a3
    assert abs(len(held) - held_picks) <= 1
    assert all(a["reason"] is None for a in answers if not a["hold"])
    assert "a1" not in {a["account_id"] for a in answers if not a["hold"]}


def test_a_fully_held_group_answers_hold_not_503(routed):
    api, engine, table = routed
    write_weights(engine, {a: ("g1", 5.0, HELD) for a in ("a1", "a2", "a3")})
    table.refresh(force=True)
    answers = picks(api, "g1", 30)
    assert all(a["hold"] for a in answers)
    assert Counter(a["account_id"] for a in answers) == {"a1": 10, "a2": 10, "a3": 10}


def test_a_paused_account_is_held_and_a_draining_one_gets_nothing(routed):
    api, engine, table = routed
    assert api.patch("/v1/accounts/a1", json={"state": "paused"}).status_code == 200
    assert api.patch("/v1/accounts/a2", json={"state": "draining"}).status_code == 200
    set_algorithm(engine, "g1", "weighted_round_robin")
    table.refresh(force=True)
    answers = picks(api, "g1", 60)
    assert {(a["account_id"], a["hold"]) for a in answers} == {("a1", True), ("a3", False)}


def test_every_weight_zero_is_503_with_a_reason(routed):
    api, engine, table = routed
    write_weights(engine, {a: ("g1", 0.0, ["out of rotation"]) for a in ("a1", "a2", "a3")})
    table.refresh(force=True)
    resp = api.post("/v1/route", as_="runtime", json={"group": "g1"})
    assert resp.status_code == 503
    assert "g1" in resp.json()["detail"] and "weight" in resp.json()["detail"]
    assert resp.headers["Retry-After"]


def test_unknown_group_is_404(routed):
    api, _, _ = routed
    resp = api.post("/v1/route", as_="runtime", json={"group": "nowhere"})
    assert resp.status_code == 404
    assert "nowhere" in resp.json()["detail"]


def test_reported_latency_steers_p2c_away_from_a_slow_account(routed):
    api, engine, table = routed
    write_weights(engine, {"a1": ("g1", 1.0), "a2": ("g1", 1.0), "a3": ("g1", 0.0)})
    table.refresh(force=True)
    latency = {"a1": 100.0, "a2": 3000.0}  # a2 is thirty times slower
    report, chosen = [], []
    for _ in range(200):
        resp = api.post("/v1/route", as_="runtime", json={"group": "g1", "report": report})
        assert resp.status_code == 200, resp.text
        account = resp.json()["account_id"]
        chosen.append(account)
        report = [{"account_id": account, "latency_ms": latency[account], "ok": True}]
    assert "a2" in chosen[:20]  # tried while nothing was known
    assert chosen[50:].count("a2") <= 5  # then avoided
    state = table.snapshot("g1")["accounts"]
    assert state["a2"]["ewma_ms"] > 10 * state["a1"]["ewma_ms"]


def test_failed_sends_count_as_slow(routed):
    api, engine, table = routed
    write_weights(engine, {"a1": ("g1", 1.0), "a2": ("g1", 1.0), "a3": ("g1", 0.0)})
    table.refresh(force=True)
    report = [{"account_id": "a2", "latency_ms": 5.0, "ok": False}] + [
        {"account_id": "a1", "latency_ms": 30.0} for _ in range(3)
    ]
    api.post("/v1/route", as_="runtime", json={"group": "g1", "report": report})
    state = table.snapshot("g1")["accounts"]
    assert state["a2"]["ewma_ms"] >= 900  # the failure penalty, not the 5 ms it took


def test_new_weights_keep_what_the_balancer_learned(routed):
    api, engine, table = routed
    write_weights(engine, {"a1": ("g1", 1.0), "a2": ("g1", 1.0), "a3": ("g1", 1.0)})
    table.refresh(force=True)
    report = [{"account_id": "a2", "latency_ms": 900.0}]
    api.post("/v1/route", as_="runtime", json={"group": "g1", "report": report})
    before = table.snapshot("g1")["accounts"]
    write_weights(engine, {"a1": ("g1", 2.0), "a2": ("g1", 1.0), "a3": ("g1", 1.0)}, ts_ms=2_000)
    assert table.refresh() is True  # the weights version moved
    after = table.snapshot("g1")["accounts"]
    assert after["a1"]["weight"] == 2.0
    assert after["a2"]["ewma_ms"] == pytest.approx(before["a2"]["ewma_ms"], rel=0.2)
    assert sum(a["outstanding"] for a in after.values()) == 1  # the one pick, still out
    assert table.refresh() is False  # nothing moved since


def test_a_background_refresh_applies_new_weights_without_a_forced_reload(routed):
    api, engine, table = routed
    table.refresh_s = 0.05
    assert {a["account_id"] for a in picks(api, "g1", 30)} == {"a1", "a2", "a3"}
    write_weights(engine, {"a1": ("g1", 1.0), "a2": ("g1", 0.0), "a3": ("g1", 0.0)})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if {a["account_id"] for a in picks(api, "g1", 5)} == {"a1"}:
            break
        time.sleep(0.05)
    assert {a["account_id"] for a in picks(api, "g1", 20)} == {"a1"}


def test_a_retired_account_is_not_routed(routed):
    api, engine, table = routed
    write_weights(engine, {"a1": ("g1", 1.0), "a2": ("g1", 1.0), "a3": ("g1", 1.0)})
    assert api.delete("/v1/accounts/a3").status_code in (200, 204)
    table.refresh(force=True)
    assert {a["account_id"] for a in picks(api, "g1", 40)} == {"a1", "a2"}


def test_reports_of_unknown_accounts_are_ignored_and_counted(routed):
    api, _, table = routed
    table.refresh(force=True)
    report = [
        {"account_id": "ghost", "latency_ms": 10.0},
        {"account_id": "b1", "latency_ms": 10.0},  # another group's account
        {"account_id": "a1", "latency_ms": 10.0},
    ]
    resp = api.post("/v1/route", as_="runtime", json={"group": "g1", "report": report})
    assert resp.status_code == 200, resp.text
    assert resp.json()["reports_ignored"] == 2


def _report(n: int) -> list[dict]:
    return [{"account_id": "a1", "latency_ms": 1.0}] * n


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"\xff\xfe",
        b"[]",
        b'"g1"',
        b"null",
        b'{"group": 1}',
        b'{"group": ""}',
        b'{"group": "g\\u0000"}',
        b'{"group": "' + b"g" * 129 + b'"}',
        b'{"report": []}',
        b'{"group": "g1", "report": {}}',
        b'{"group": "g1", "report": [1]}',
        b'{"group": "g1", "report": [{"account_id": "a1"}]}',
        b'{"group": "g1", "report": [{"account_id": "a1", "latency_ms": -1}]}',
        b'{"group": "g1", "report": [{"account_id": "a1", "latency_ms": NaN}]}',
        b'{"group": "g1", "report": [{"account_id": "a1", "latency_ms": Infinity}]}',
        b'{"group": "g1", "report": [{"account_id": "a1", "latency_ms": 1e308}]}',
        b'{"group": "g1", "report": [{"account_id": "a1", "latency_ms": "fast"}]}',
        b'{"group": "g1", "report": [{"account_id": "a1", "latency_ms": 1, "ok": "maybe"}]}',
        b'{"group": "g1", "report": [{"account_id": "a b", "latency_ms": 1}]}',
        b'{"group": "g1", "report": [{"account_id": "' + b"a" * 200 + b'", "latency_ms": 1}]}',
        b'{"group": "g1", "report": [{"account_id": 7, "latency_ms": 1}]}',
        b'{"group": "g1", "extra": true}',
        b'{"group": "g1", "report": [{"account_id": "a1", "latency_ms": 1, "x": 1}]}',
        b'{"group": "g1", "report": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
)
def test_hostile_bodies_are_4xx(routed, body):
    api, _, table = routed
    table.refresh(force=True)
    resp = api.post(
        "/v1/route", as_="runtime", content=body, headers={"Content-Type": "application/json"}
    )
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:300])
    assert resp.json()["detail"]


def test_a_huge_report_is_refused_and_the_limit_is_accepted(routed):
    import orjson

    api, _, table = routed
    table.refresh(force=True)
    too_many = api.post(
        "/v1/route",
        as_="runtime",
        content=orjson.dumps({"group": "g1", "report": _report(1001)}),
        headers={"Content-Type": "application/json"},
    )
    assert too_many.status_code == 422 and "report" in too_many.json()["detail"]
    at_limit = api.post("/v1/route", as_="runtime", json={"group": "g1", "report": _report(1000)})
    assert at_limit.status_code == 200, at_limit.text


@pytest.mark.parametrize(
    ("role", "status"), [("runtime", 200), ("ops", 200), ("admin", 200), (None, 401)]
)
def test_roles(routed, role, status):
    api, _, table = routed
    table.refresh(force=True)
    assert api.post("/v1/route", as_=role, json={"group": "g1"}).status_code == status


def test_a_wrong_key_is_401(routed):
    api, _, _ = routed
    resp = api.post(
        "/v1/route", as_=None, headers={"Authorization": "Bearer nope"}, json={"group": "g1"}
    )
    assert resp.status_code == 401


def test_the_route_is_documented(api):
    doc = api.get("/openapi.json", as_=None).json()
    operation = doc["paths"]["/v1/route"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/RouteIn"}
    assert {"200", "404", "422", "503"} <= set(operation["responses"])
    assert "report" in doc["components"]["schemas"]["RouteIn"]["properties"]
