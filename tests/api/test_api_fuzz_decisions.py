"""Generated requests against the decision operations (schemathesis, from /openapi.json): no
input makes them answer 5xx, with an admin key (every handler reached) over a fleet that has
decisions, actions, recommendations, weights and a group policy. Over both stores: PostgreSQL
refuses text SQLite takes (NUL characters), so hostile input is not the same on each."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

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
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    auth = fuzzed_app.headers("admin")
    checked, failures, calls = [], [], []
    for result in schema.get_all_operations():
        operation = result.ok()
        if not operation.path.startswith(DECISION_PREFIXES):
            continue
        checked.append(f"{operation.method.upper()} {operation.path}")

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            response = case.call(headers=auth)
            calls.append(response.status_code)
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, case.query, case.body,
                                 response.status_code, response.text[:300]))  # fmt: skip

        run()
    assert len(checked) >= 11, checked  # every decision operation was generated for
    assert len(calls) >= 10 * len(checked)  # and really called with generated inputs
    assert any(c < 300 for c in calls) and any(400 <= c < 500 for c in calls)
    assert not failures, failures[:5]
