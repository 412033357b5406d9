"""The role matrix of the live-loop operations: who may call what (401 without a key, 403 for
a role that may not, anything but 401/403 for one that may)."""

from __future__ import annotations

import pytest

from tests.api._contract import ALL, check_roles

OPS = ("ops", "admin")
SILENCE = {"account_id": "acc-1", "ends_at": "2099-01-01T00:00:00Z"}

OPERATIONS = [
    ("GET", "/v1/predictions", None, ALL),
    ("GET", "/v1/predictions/acc-1", None, ALL),
    ("POST", "/v1/predictions/acc-1/score", None, ALL),
    ("GET", "/v1/forecasts?metric=msgs_sent&group=g1", None, ALL),
    ("GET", "/v1/models", None, ALL),
    ("GET", "/v1/alerts", None, OPS),
    ("GET", "/v1/alerts/1", None, OPS),
    ("POST", "/v1/alerts/1/ack", None, OPS),
    ("POST", "/v1/alerts/1/resolve", None, OPS),
    ("GET", "/v1/silences", None, OPS),
    ("POST", "/v1/silences", SILENCE, OPS),
    ("DELETE", "/v1/silences/1", None, OPS),
    ("GET", "/v1/jobs", None, OPS),
]


@pytest.mark.parametrize(("method", "path", "body", "allowed"), OPERATIONS)
def test_role_matrix_of_live_loop_operations(sqlite_api, method, path, body, allowed):
    check_roles(sqlite_api, method, path, body, allowed)
