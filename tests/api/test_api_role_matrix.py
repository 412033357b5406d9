"""The role matrix, whole: every operation of the OpenAPI document is listed here with the roles
that may call it (docs/api.md shows the same table), and every other role gets 403 naming the
roles that may, no key 401. A new operation fails this test until someone decides its roles."""

from __future__ import annotations

import pytest

from tests.api._contract import ALL, check_roles

RUNTIME, OPS, ADMIN_ = "runtime", "ops", "admin"
ANY = (RUNTIME, OPS, ADMIN_)
READ = (OPS, ADMIN_)  # ops review
ADMIN = (ADMIN_,)

MATRIX: dict[str, tuple[str, ...]] = {
    # the runtime's hot path: predictions, routing, weights, actions to carry out
    "GET /v1/predictions": ANY,
    "GET /v1/predictions/{account_id}": ANY,
    "GET /v1/predictions/{account_id}/history": ANY,
    "POST /v1/predictions/{account_id}/score": ANY,
    "POST /v1/route": ANY,
    "GET /v1/weights": ANY,
    "GET /v1/actions": ANY,
    "POST /v1/actions/{action_id}/ack": (RUNTIME, ADMIN_),
    # ingest (runtime), vocabularies (anyone), configuration (admin)
    "POST /v1/metrics": (RUNTIME, ADMIN_),
    "POST /v1/events": (RUNTIME, ADMIN_),
    "GET /v1/metric-kinds": ANY,
    "GET /v1/event-kinds": ANY,
    "PUT /v1/metric-kinds": ADMIN,
    "GET /v1/forecasts": ANY,
    "GET /v1/forecasts/accuracy": ANY,
    "GET /v1/models": ANY,
    "GET /v1/models/{family}/evaluation": ANY,
    "GET /v1/models/{family}/drift": ANY,
    "GET /v1/whoami": ANY,
    # reading the store
    "GET /v1/metrics": READ,
    "GET /v1/events": READ,
    "GET /v1/accounts": READ,
    "GET /v1/accounts/{account_id}": READ,
    "GET /v1/keys": READ,
    "GET /v1/audit": READ,
    "GET /v1/jobs": READ,
    "GET /v1/decisions": READ,
    "GET /v1/groups/{group}/policy": READ,
    # ops review: alerts, silences, approvals, recommendations
    "GET /v1/alerts": READ,
    "GET /v1/alerts/{alert_id}": READ,
    "POST /v1/alerts/{alert_id}/ack": READ,
    "POST /v1/alerts/{alert_id}/resolve": READ,
    "POST /v1/alerts/{alert_id}/feedback": READ,
    "GET /v1/alerts/precision": READ,
    "GET /v1/silences": READ,
    "POST /v1/silences": READ,
    "DELETE /v1/silences/{silence_id}": READ,
    "POST /v1/actions/{action_id}/approve": READ,
    "POST /v1/actions/{action_id}/reject": READ,
    "GET /v1/recommendations": READ,
    "POST /v1/recommendations/{rec_id}/accept": READ,
    "POST /v1/recommendations/{rec_id}/dismiss": READ,
    # administration
    "POST /v1/accounts": ADMIN,
    "PATCH /v1/accounts/{account_id}": ADMIN,
    "DELETE /v1/accounts/{account_id}": ADMIN,
    "POST /v1/keys": ADMIN,
    "DELETE /v1/keys/{key_id}": ADMIN,
    "PATCH /v1/groups/{group}/policy": ADMIN,
}
OPEN = {"GET /healthz", "GET /readyz", "GET /metrics"}  # no key: probes and Prometheus

_PATH_VALUES = {
    "account_id": "nobody",
    "action_id": "999",
    "alert_id": "999",
    "silence_id": "999",
    "rec_id": "999",
    "key_id": "999",
    "group": "nogroup",
    "family": "risk",
}


def _operations(app) -> set[str]:
    paths = app.openapi()["paths"]
    return {f"{m.upper()} {p}" for p, ops in paths.items() for m in ops}


def test_the_matrix_lists_every_operation(sqlite_api):
    assert _operations(sqlite_api.client.app) == set(MATRIX) | OPEN


@pytest.mark.parametrize("operation", sorted(MATRIX))
def test_each_role_is_let_in_or_refused_as_the_matrix_says(sqlite_api, operation):
    method, template = operation.split(" ", 1)
    path = template.format(**_PATH_VALUES)
    body = {} if method in ("POST", "PUT", "PATCH") else None
    check_roles(sqlite_api, method, path, body, MATRIX[operation])


@pytest.mark.parametrize("operation", sorted(OPEN))
def test_open_endpoints_need_no_key(sqlite_api, operation):
    method, path = operation.split(" ", 1)
    assert sqlite_api.request(method, path, as_=None).status_code in (200, 503)


def test_the_documented_matrix_matches():
    """docs/api.md's table has one row per operation, naming exactly the roles listed here."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    documented = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[0].endswith("`"):
            roles = tuple(role for role, cell in zip(ALL, cells[1:], strict=True) if cell == "yes")
            documented[cells[0].strip("`")] = roles
    assert documented == MATRIX
