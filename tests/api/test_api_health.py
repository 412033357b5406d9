"""Open endpoints: readiness, Prometheus exposition, OpenAPI."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_readyz_reports_ready_when_migrated(sqlite_api):
    resp = sqlite_api.get("/readyz", as_=None)
    assert resp.status_code == 200
    # Nothing trained yet: ready, with both model families answered by their heuristics.
    body = resp.json()
    assert body["status"] == "degraded", body
    assert set(body["degraded"]) == {"anomaly", "risk"}
    assert "no @champion" in body["degraded"]["risk"]
    assert sqlite_api.get("/healthz", as_=None).json() == {"status": "ok"}


def test_readyz_is_503_before_migrations(sqlite_settings):
    from fleetml.api import create_app

    with TestClient(create_app(sqlite_settings)) as client:
        resp = client.get("/readyz")
    assert resp.status_code == 503
    assert "fleetml db upgrade" in resp.json()["detail"]


def test_metrics_endpoint_exposes_request_and_ingest_counters(sqlite_api):
    api = sqlite_api
    good = {"samples": [{"account_id": "wa-1", "ts": 1767225600, "values": {"a": 1, "b": 2}}]}
    bad = {"samples": [{"account_id": "wa-1", "ts": "never", "values": {"a": 1}}]}
    assert api.post("/v1/metrics?register=true", as_="runtime", json=good).status_code == 200
    assert api.post("/v1/metrics", as_="runtime", json=bad).status_code == 422
    api.get("/v1/accounts/wa-1", as_="ops")
    text = api.get("/metrics", as_=None).text
    assert 'fleetml_http_requests_total{method="POST",route="/v1/metrics",status="200"} 1.0' in text
    # labelled by route template, not by the raw path with the account id
    assert 'route="/v1/accounts/{account_id}",status="200"' in text
    assert "wa-1" not in text
    assert "fleetml_samples_ingested_total 1.0" in text
    assert "fleetml_metric_values_ingested_total 2.0" in text
    assert 'fleetml_rejected_batches_total{endpoint="/v1/metrics",status="422"} 1.0' in text
    assert "fleetml_http_request_duration_seconds_bucket" in text
    assert "fleetml_database_errors_total" in text
    assert "fleetml_ingest_commits_total 1.0" in text
    assert "fleetml_ingest_committed_batches_total 1.0" in text


def test_openapi_documents_the_raw_ingest_bodies(sqlite_api):
    schema = sqlite_api.get("/openapi.json", as_=None).json()
    body = schema["paths"]["/v1/metrics"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/MetricBatchIn"}
    components = schema["components"]["schemas"]
    assert "samples" in components["MetricBatchIn"]["properties"]
    assert "EventBatchIn" in components
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
