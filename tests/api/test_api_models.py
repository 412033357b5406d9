"""GET /v1/models: champion and challenger per family, their run metrics, and what is loaded."""

from __future__ import annotations

import pytest


@pytest.fixture
def models_api(sqlite_api):
    """The API with a fresh registry view (answers are reused for a few seconds)."""
    from fleetml.api.routers.models import forget_registry_view
    from fleetml.serving import registry

    forget_registry_view()
    registry.clear_cache()
    yield sqlite_api
    forget_registry_view()
    registry.clear_cache()


def _families(api, as_="ops") -> dict[str, dict]:
    resp = api.get("/v1/models", as_=as_)
    assert resp.status_code == 200, resp.text
    return {m["family"]: m for m in resp.json()["models"]}


def _register_forecast(settings, *, promote: bool, smape: float) -> int:
    """Log and register a tiny forecast bundle (no series choices) with evaluation metrics."""
    from fleetml.models.forecast import ForecastBundle
    from fleetml.training.forecast_cli import log_to_mlflow

    _, version, _ = log_to_mlflow(
        settings,
        bundle=ForecastBundle({}, metric_kinds={"cpu": "gauge"}),
        params={"horizon": "24h"},
        metrics={"smape": smape, "mase": 0.8, "n_scored": 2},
        choices={},
        summaries={},
        promote=promote,
    )
    return version


def test_no_registry_gives_null_versions_and_creates_none(models_api):
    resp = models_api.get("/v1/models", as_="runtime")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["registry_available"] is False and "nothing has been trained" in body["detail"]
    assert [m["family"] for m in body["models"]] == ["anomaly", "risk", "forecast"]
    for m in body["models"]:
        assert m["champion"] is None and m["challenger"] is None
        assert m["loaded"] is False and m["loaded_version"] is None
    assert {m["name"] for m in body["models"]} == {
        "fleetml-anomaly",
        "fleetml-risk",
        "fleetml-forecast",
    }
    assert not (models_api.settings.home_path / "mlflow.db").exists()


@pytest.mark.parametrize("role", ["runtime", "ops", "admin"])
def test_every_role_may_read(models_api, role):
    assert models_api.get("/v1/models", as_=role).status_code == 200
    assert models_api.get("/v1/models", as_=None).status_code == 401


@pytest.mark.slow
def test_registered_versions_show_with_their_run_metrics(models_api):
    from fleetml.api.routers.models import forget_registry_view

    settings = models_api.settings
    assert _register_forecast(settings, promote=True, smape=12.5) == 1
    assert _register_forecast(settings, promote=False, smape=11.0) == 2
    forget_registry_view()
    families = _families(models_api)
    forecast = families["forecast"]
    assert forecast["champion"]["version"] == 1
    assert forecast["champion"]["metrics"]["smape"] == 12.5
    assert forecast["champion"]["run_id"] and forecast["champion"]["trained_at"]
    assert forecast["champion"]["created_at"]
    assert forecast["challenger"]["version"] == 2
    assert forecast["challenger"]["metrics"]["smape"] == 11.0
    assert families["anomaly"]["champion"] is None and families["risk"]["challenger"] is None

    from fleetml.serving.forecast import ServedForecast

    served = ServedForecast.load(settings, metric="cpu")
    assert (served.version, served.fallback) == (1, False)  # the champion, not the challenger


def test_loaded_state_comes_from_the_serving_layer(models_api):
    class Holder:
        def status(self):
            return {
                "anomaly": {"version": 3, "loaded": True, "fallback": False, "reason": None},
                "risk": {
                    "version": None,
                    "loaded": True,
                    "fallback": True,
                    "reason": "no champion",
                },
            }

    models_api.client.app.state.fleetml.models = Holder()
    families = _families(models_api)
    assert families["anomaly"]["loaded"] is True and families["anomaly"]["loaded_version"] == 3
    assert families["risk"]["fallback"] is True and families["risk"]["reason"] == "no champion"
    assert families["forecast"]["loaded"] is False


def test_a_broken_registry_is_reported_not_a_500(models_api, monkeypatch):
    from fleetml.serving import registry

    def broken(settings=None):
        raise RuntimeError("registry database is locked")

    monkeypatch.setattr(registry, "registry_missing", lambda settings: None)
    monkeypatch.setattr(registry, "configure_mlflow", broken)
    resp = models_api.get("/v1/models", as_="ops")
    assert resp.status_code == 200, resp.text
    assert resp.json()["registry_available"] is False
    assert "locked" in resp.json()["detail"]


@pytest.mark.slow
def test_evaluation_shows_what_the_versions_run_logged(models_api):
    from fleetml.api.routers.models import forget_registry_view

    settings = models_api.settings
    _register_forecast(settings, promote=True, smape=12.5)
    _register_forecast(settings, promote=False, smape=11.0)
    forget_registry_view()
    champion = models_api.get("/v1/models/forecast/evaluation", as_="ops").json()
    assert (champion["alias"], champion["version"]) == ("champion", 1)
    assert champion["metrics"]["smape"] == 12.5
    assert champion["artifacts"] == {"choices": {}}  # what log_to_mlflow logged
    challenger = models_api.get("/v1/models/forecast/evaluation?alias=challenger").json()
    assert challenger["version"] == 2 and challenger["metrics"]["smape"] == 11.0
    missing = models_api.get("/v1/models/risk/evaluation")
    assert (
        missing.status_code == 404 and "fleetml-risk has no @champion" in missing.json()["detail"]
    )
    assert models_api.get("/v1/models/nope/evaluation").status_code == 422
