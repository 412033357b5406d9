"""Generated requests against POST /v1/route (schemathesis, from /openapi.json, valid and
schema-breaking bodies): none makes it answer 5xx, over a group that exists (the schema's
example group) with stored weights, one account held."""

from __future__ import annotations

import pandas as pd
import pytest

schemathesis = pytest.importorskip("schemathesis")

from tests.api._contract import fuzz  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def routed_app(sqlite_api):
    """The API with group eu-sales (the documented example) routed by stored weights."""
    from fleetml.store.engine import get_engine
    from fleetml.store.weights import write_weights

    accounts = ("bot-017", "bot-018", "bot-019")
    for aid in accounts:
        sqlite_api.register(aid, group="eu-sales", capacity=10)
    frame = pd.DataFrame(
        {
            "account_id": list(accounts),
            "group": "eu-sales",
            "weight": [10.0, 5.0, 10.0],
            "target": [10.0, 5.0, 10.0],
            "reasons": [[], [], ["held: platform enforcement (traffic kept on the number)"]],
        }
    )
    with get_engine(sqlite_api.settings).begin() as conn:
        write_weights(conn, frame, ts_ms=1_000, models={})
    return sqlite_api


def test_route_never_answers_5xx(routed_app):
    app = routed_app.client.app
    auth = routed_app.headers("runtime")
    # valid bodies (mostly unknown groups) and bodies that break the schema
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    checked, calls, failures = fuzz(
        app, auth, lambda op: op.path == "/v1/route", max_examples=300, modes=modes
    )
    assert checked == ["POST /v1/route"]
    assert len(calls) >= 200
    assert 200 in calls  # the documented example routes
    assert 404 in calls and 422 in calls  # unknown groups, and bodies that break the schema
    assert not failures, failures[:5]
