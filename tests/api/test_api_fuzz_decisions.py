"""Generated requests against the decision operations (schemathesis, from /openapi.json): no
input makes them answer 5xx, with an admin key (every handler reached) over a fleet that has
decisions, actions, recommendations, weights and a group policy. Over both stores: PostgreSQL
refuses text SQLite takes (NUL characters), so hostile input is not the same on each."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from tests.api._contract import fuzz  # noqa: E402

#: The operations the decisions change added.
DECISION_PREFIXES = (
    "/v1/weights",
    "/v1/actions",
    "/v1/recommendations",
    "/v1/decisions",
    "/v1/groups",
)

pytestmark = pytest.mark.slow


@pytest.fixture
def fuzzed_app(api, engine):
    """The API over a small decided fleet (see ``tests/api/test_api_decisions.seed``)."""
    from tests.api.test_api_decisions import seed

    api.register("m1", group="eu")
    api.register("m2", group="us")
    seed(engine)
    assert api.patch("/v1/groups/eu/policy", json={"risk_on": 0.7}).status_code == 200
    return api


def test_decision_operations_never_answer_5xx(fuzzed_app):
    app = fuzzed_app.client.app
    auth = fuzzed_app.headers("admin")
    checked, calls, failures = fuzz(app, auth, lambda op: op.path.startswith(DECISION_PREFIXES))
    assert len(checked) >= 11, checked  # every decision operation was generated for
    assert len(calls) >= 10 * len(checked)  # and really called with generated inputs
    assert any(c < 300 for c in calls) and any(400 <= c < 500 for c in calls)
    assert not failures, failures[:5]
