"""The API's contract, generated (schemathesis, from /openapi.json) over every operation:
no input makes the server answer 5xx, and every answer is one the OpenAPI document describes
(its status, its body's schema, its content type). Positive and negative cases, an admin key
(every handler reached), over a store with a ticked, decided fleet; on SQLite, and on
PostgreSQL when ``FLEETML_TEST_DATABASE_URL`` is set (it refuses text SQLite takes, so hostile
input is not the same on each).

``FLEETML_FUZZ_EXAMPLES`` raises the examples per operation and mode (default 25, what CI runs);
the test prints how many cases ran and what they answered."""

from __future__ import annotations

import collections
import os

import pytest

schemathesis = pytest.importorskip("schemathesis")

from tests.api._contract import fuzz  # noqa: E402

pytestmark = pytest.mark.slow
_METHODS = {"get", "post", "put", "patch", "delete"}
# Read at import: the suite's fixtures clear FLEETML_* variables before each test.
EXAMPLES = int(os.environ.get("FLEETML_FUZZ_EXAMPLES", "25"))


@pytest.fixture
def world(api, engine):
    """Accounts in two groups with six hours of samples, one tick (predictions, alerts), and a
    decided fleet (actions awaiting approval, weights, recommendations, a group policy)."""
    from fleetml.ingest.files import import_metrics_frame
    from fleetml.services.tick import LiveLoop
    from tests.api.test_api_decisions import seed
    from tests.serving.conftest import small_fleet

    frame = small_fleet(n_accounts=3, hours=6)
    with engine.begin() as conn:
        import_metrics_frame(conn, frame, register=True, actor="test")
    LiveLoop(engine, api.settings).run(now_ms=int(frame["ts"].max().value // 1_000_000))
    api.register("m1", group="eu")
    api.register("m2", group="us")
    seed(engine)
    assert api.patch("/v1/groups/eu/policy", json={"risk_on": 0.7}).status_code == 200
    return api


def test_every_operation_answers_as_documented_and_never_5xx(world, backend):
    app = world.client.app
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    checked, calls, failures = fuzz(
        app, world.headers("admin"), lambda op: True, max_examples=EXAMPLES, modes=modes
    )
    statuses = collections.Counter(calls)
    print(f"\n{backend}: {len(calls)} generated cases over {len(checked)} operations: "
          f"{dict(sorted(statuses.items()))}, {len(failures)} failures")  # fmt: skip
    document = app.openapi()["paths"]
    operations = sum(1 for ops in document.values() for m in ops if m in _METHODS)
    assert len(checked) == operations, checked  # every operation of the document was generated for
    assert len(calls) >= 8 * len(checked)  # and really called with generated inputs
    assert statuses[200] + statuses[201] > 0 and statuses[422] > 0
    assert not failures, failures[:5]
