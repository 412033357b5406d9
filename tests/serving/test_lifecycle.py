"""Model lifecycle in serving, through a real MLflow registry: a promotion is picked up without a
restart or a failed request; a corrupt champion is answered by the fallback, never a 5xx."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from .conftest import fit_anomaly, small_fleet

pytestmark = pytest.mark.slow


def register(bundle, settings) -> int:
    """Log and register ``bundle`` as a new fleetml-anomaly version (not promoted)."""
    from fleetml.training import registry

    with registry.start_run("fleetml-anomaly", settings=settings, run_name="test") as run:
        info = registry.log_bundle(bundle, pip_requirements=["pandas"])
        return registry.register_version("fleetml-anomaly", info.model_uri, run_id=run.info.run_id)


def promote(version: int, settings) -> None:
    from fleetml.training import registry

    registry.promote("fleetml-anomaly", version, reason="test", settings=settings)


def corrupt(settings, version: int) -> None:
    """Overwrite the bundle artifact of ``version`` with bytes that are not a pickle."""
    from fleetml.serving import registry

    source = registry.version_info("fleetml-anomaly", version, settings=settings)["source"]
    run_id = source.split("/")[1] if source.startswith("runs:/") else None
    root = Path(settings.home_path) / "mlartifacts"
    files = [p for p in root.rglob("bundle.joblib") if run_id is None or run_id in str(p)]
    if not files:  # models:/ sources: the logged model's own folder
        files = sorted(root.rglob("bundle.joblib"), key=lambda p: p.stat().st_mtime)[-1:]
    assert files, "no bundle artifact found"
    for path in files:
        path.write_bytes(b"this is not a pickle")


@pytest.fixture
def served(sqlite_settings, monkeypatch):
    """A home with a stored fleet, one promoted anomaly model, and the API over it."""
    from fleetml.cli_support import open_engine
    from fleetml.ingest.files import import_metrics_frame
    from fleetml.serving import registry
    from fleetml.store.keys import create_key

    monkeypatch.setenv("FLEETML_MODEL_CHECK_S", "1")
    from fleetml.config import get_settings, reset_settings

    reset_settings()
    settings = get_settings()
    registry.clear_cache()
    engine = open_engine(settings)
    frame = small_fleet(n_accounts=3, hours=20)
    with engine.begin() as conn:
        import_metrics_frame(conn, frame, register=True, actor="test")
        key, _ = create_key(conn, role="runtime", name="rt", actor="test")
    bundle = fit_anomaly(frame)
    promote(register(bundle, settings), settings)
    yield settings, engine, frame, bundle, {"Authorization": f"Bearer {key}"}
    registry.clear_cache()


def test_a_promotion_is_served_within_a_check_without_a_failed_request(served):
    from fleetml.api import create_app

    settings, engine, frame, bundle, auth = served
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        first = client.post("/v1/predictions/acc-0/score", headers=auth)
        assert first.status_code == 200, first.text
        assert first.json()["anomaly"]["model_version"] == 1
        promote(register(fit_anomaly(frame, n_estimators=50), settings), settings)
        seen, statuses = [], []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            resp = client.post("/v1/predictions/acc-0/score", headers=auth)
            statuses.append(resp.status_code)
            seen.append(resp.json()["anomaly"]["model_version"])
            if seen[-1] == 2:
                break
            time.sleep(0.2)
        assert seen[-1] == 2, seen
        assert set(statuses) == {200}
        models = client.get("/readyz").json()
        assert models["status"] == "degraded" and "anomaly" not in models["degraded"]


def test_the_tick_picks_up_a_promotion_without_restart(served):
    from fleetml.services.tick import LiveLoop

    settings, engine, frame, bundle, _ = served
    loop = LiveLoop(engine, settings)
    end = int(frame["ts"].max().value // 1_000_000)
    assert loop.run(now_ms=end - 600_000)["models"]["anomaly"] == 1
    promote(register(fit_anomaly(frame, n_estimators=50), settings), settings)
    time.sleep(1.1)  # model_check_s
    assert loop.run(now_ms=end)["models"]["anomaly"] == 2
    with engine.connect() as conn:
        versions = (
            conn.execute(
                sa.text(
                    "SELECT DISTINCT model_version FROM predictions_latest WHERE family='anomaly'"
                )
            )
            .scalars()
            .all()
        )
    assert versions == [2]


def test_a_corrupt_champion_is_answered_by_the_fallback_and_alerted(served):
    from fleetml.api import create_app
    from fleetml.services.tick import LiveLoop
    from fleetml.serving import registry

    settings, engine, frame, bundle, auth = served
    version = register(bundle, settings)
    corrupt(settings, version)
    promote(version, settings)
    registry.clear_cache()
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        resp = client.post("/v1/predictions/acc-1/score", headers=auth)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["fallback"] is True and body["anomaly"]["model_version"] is None
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert f"version {version}" in ready.json()["degraded"]["anomaly"]
    summary = LiveLoop(engine, settings).run(now_ms=int(frame["ts"].max().value // 1_000_000))
    assert summary["models"]["anomaly"] is None and "anomaly" in summary["degraded"]
    with engine.connect() as conn:
        kinds = (
            conn.execute(sa.text("SELECT kind FROM alerts WHERE state != 'resolved'"))
            .scalars()
            .all()
        )
    assert "model_degraded:anomaly" in kinds
