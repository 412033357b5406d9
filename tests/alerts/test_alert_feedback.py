"""Ops feedback on alerts (a real problem or a false alarm) and the precision per alert kind it
gives: the model accuracy dashboard's "alert precision from ops feedback"."""

from __future__ import annotations

import pytest
from alertdata import NOW, anomaly, predictions, risk

from fleetml.services.alerts import evaluate_alerts
from fleetml.store.audit import read_audit


@pytest.fixture
def opened(client, engine, settings, fleet):
    """Firing alerts: anomaly on a1, a2 and b1; failure risk on b1."""
    frame = predictions(anomaly("a1"), anomaly("a2"), anomaly("b1"), risk("b1", "6h", run=2))
    evaluate_alerts(engine, settings, frame, now_ms=NOW, groups=fleet)
    alerts = client.get("/v1/alerts").json()["alerts"]
    return {(a["account_id"], a["kind"]): a["id"] for a in alerts}


def _precision(client) -> dict[str, dict]:
    resp = client.get("/v1/alerts/precision")
    assert resp.status_code == 200, resp.text
    return {k["kind"]: k for k in resp.json()["kinds"]}


def test_precision_counts_each_alerts_latest_verdict(client, opened):
    assert _precision(client)["anomaly"] == {
        "kind": "anomaly",
        "real": 0,
        "false_alarm": 0,
        "unjudged": 3,
        "precision": None,
    }
    a1, a2, b1 = opened[("a1", "anomaly")], opened[("a2", "anomaly")], opened[("b1", "anomaly")]
    for alert_id, verdict in ((a1, "real"), (a2, "false_alarm"), (b1, "false_alarm")):
        resp = client.post(f"/v1/alerts/{alert_id}/feedback", json={"verdict": verdict})
        assert resp.status_code == 201, resp.text
        assert resp.json()["actor"] == "test-ops"
    # a change of mind: the latest word counts, even on a resolved alert
    assert client.post(f"/v1/alerts/{b1}/resolve").status_code == 200
    resp = client.post(f"/v1/alerts/{b1}/feedback", json={"verdict": "real", "note": "it was"})
    assert resp.status_code == 201
    anomaly_kind = _precision(client)["anomaly"]
    assert (anomaly_kind["real"], anomaly_kind["false_alarm"], anomaly_kind["unjudged"]) == (
        2,
        1,
        0,
    )
    assert anomaly_kind["precision"] == pytest.approx(2 / 3)
    risk_kind = _precision(client)["failure_risk"]
    assert risk_kind["unjudged"] == 1 and risk_kind["precision"] is None
    audit = [e for e in read_audit(client.client.app.state.fleetml.engine)]
    assert sum(e["action"] == "alert.feedback" for e in audit) == 4


def test_precision_is_over_alerts_opened_in_the_range(client, opened):
    a1 = opened[("a1", "anomaly")]
    client.post(f"/v1/alerts/{a1}/feedback", json={"verdict": "real"})
    after = client.get("/v1/alerts/precision", params={"from": NOW / 1000 + 1}).json()
    assert after["kinds"] == []
    during = client.get("/v1/alerts/precision", params={"to": NOW / 1000}).json()
    assert {k["kind"] for k in during["kinds"]} == {"anomaly", "failure_risk"}


def test_feedback_is_checked(client, opened):
    a1 = opened[("a1", "anomaly")]
    bad = client.post(f"/v1/alerts/{a1}/feedback", json={"verdict": "maybe"})
    assert bad.status_code == 422
    assert client.post("/v1/alerts/999999/feedback", json={"verdict": "real"}).status_code == 404
    assert (
        client.post(f"/v1/alerts/{a1}/feedback", json={"verdict": "real"}, as_="runtime")
    ).status_code == 403
