"""The role matrix of the decision operations: who may call what (401 without a key, 403 for a
role that may not, anything but 401/403 for one that may)."""

from __future__ import annotations

import pytest

from tests.api._contract import ALL, check_roles

OPS = ("ops", "admin")
RUNTIME = ("runtime", "admin")
ADMIN = ("admin",)

OPERATIONS = [
    ("GET", "/v1/weights", None, ALL),
    ("POST", "/v1/route", {"group": "eu"}, ALL),
    ("GET", "/v1/actions", None, ALL),
    ("POST", "/v1/actions/1/ack", {"outcome": "ok"}, RUNTIME),
    ("POST", "/v1/actions/1/approve", None, OPS),
    ("POST", "/v1/actions/1/reject", None, OPS),
    ("GET", "/v1/recommendations", None, OPS),
    ("POST", "/v1/recommendations/1/accept", None, OPS),
    ("POST", "/v1/recommendations/1/dismiss", None, OPS),
    ("GET", "/v1/decisions", None, OPS),
    ("GET", "/v1/groups/eu/policy", None, OPS),
    ("PATCH", "/v1/groups/eu/policy", {"mode": "approve"}, ADMIN),
]


@pytest.mark.parametrize(("method", "path", "body", "allowed"), OPERATIONS)
def test_role_matrix_of_decision_operations(sqlite_api, method, path, body, allowed):
    check_roles(sqlite_api, method, path, body, allowed)
