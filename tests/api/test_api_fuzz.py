"""Generated requests against the live-loop operations (schemathesis, from /openapi.json): no
input makes them answer 5xx, with an admin key (every handler reached) over a fleet that has
predictions, alerts and job runs."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from tests.api._contract import fuzz  # noqa: E402

#: The operations this change added; the older ones are issue 12's.
LIVE_PREFIXES = (
    "/v1/predictions",
    "/v1/forecasts",
    "/v1/models",
    "/v1/alerts",
    "/v1/silences",
    "/v1/jobs",
)

pytestmark = pytest.mark.slow


@pytest.fixture
def fuzzed_app(sqlite_api):
    """The API after one tick over a small stored fleet (predictions and alerts exist)."""
    from fleetml.ingest.files import import_metrics_frame
    from fleetml.services.tick import LiveLoop
    from fleetml.store.engine import get_engine
    from tests.serving.conftest import small_fleet

    frame = small_fleet(n_accounts=3, hours=6)
    engine = get_engine(sqlite_api.settings)
    with engine.begin() as conn:
        import_metrics_frame(conn, frame, register=True, actor="test")
    LiveLoop(engine, sqlite_api.settings).run(now_ms=int(frame["ts"].max().value // 1_000_000))
    return sqlite_api


def test_live_loop_operations_never_answer_5xx(fuzzed_app):
    app = fuzzed_app.client.app
    auth = fuzzed_app.headers("admin")
    checked, calls, failures = fuzz(app, auth, lambda op: op.path.startswith(LIVE_PREFIXES))
    assert len(checked) >= 12, checked  # every live-loop operation was generated for
    assert len(calls) >= 10 * len(checked)  # and really called with generated inputs
    assert any(c < 300 for c in calls) and any(400 <= c < 500 for c in calls)
    assert not failures, failures[:5]
