"""One error shape everywhere: the OpenAPI document says ErrorResponse, and the answers match."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def _operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def _json_schema(response: dict) -> dict | None:
    return response.get("content", {}).get("application/json", {}).get("schema")


@pytest.fixture
def openapi(sqlite_api) -> dict:
    return sqlite_api.get("/openapi.json", as_=None).json()


def test_every_v1_operation_documents_its_answer_and_the_error_shape(openapi):
    v1 = [(p, m, op) for p, m, op in _operations(openapi) if p.startswith("/v1/")]
    assert len(v1) >= 10
    for path, method, op in v1:
        where = f"{method.upper()} {path}"
        responses = op["responses"]
        ok = [responses[s] for s in ("200", "201") if s in responses]
        assert ok, f"{where} documents no 200/201"
        assert "$ref" in (_json_schema(ok[0]) or {}), f"{where}: 2xx has no response model"
        for status in ("401", "403", "500", "503"):
            assert _json_schema(responses.get(status, {})) == ERROR_REF, f"{where} {status}"
        # 422 wherever the request carries input; no operation may claim FastAPI's own shape.
        if op.get("parameters") or op.get("requestBody"):
            assert _json_schema(responses.get("422", {})) == ERROR_REF, f"{where} 422"


def test_no_operation_documents_fastapis_validation_error(openapi):
    for path, method, op in _operations(openapi):
        if "422" in op["responses"]:
            assert _json_schema(op["responses"]["422"]) == ERROR_REF, f"{method} {path}"
    components = openapi["components"]["schemas"]
    assert "HTTPValidationError" not in components
    assert "ValidationError" not in components
    error = components["ErrorResponse"]
    assert {"detail", "errors"} <= set(error["properties"])
    assert error["properties"]["errors"]["items"] == {"$ref": "#/components/schemas/ErrorItem"}
    assert {"index", "field", "reason"} <= set(components["ErrorItem"]["properties"])


def test_validation_auth_and_routing_errors_share_the_shape(sqlite_api):
    api = sqlite_api
    answers = {
        401: api.get("/v1/accounts", as_=None),
        403: api.get("/v1/audit", as_="runtime"),
        404: api.get("/v1/nowhere"),
        405: api.request("PATCH", "/v1/metrics"),
        422: api.get("/v1/audit", params={"limit": "many"}),
    }
    for status, resp in answers.items():
        assert resp.status_code == status, (status, resp.text)
        body = resp.json()
        assert isinstance(body["detail"], str) and body["detail"], status
        assert isinstance(body["errors"], list), status
    assert answers[401].headers["www-authenticate"].startswith("Bearer")
    assert answers[422].json()["errors"][0]["field"] == "query.limit"


def test_an_unhandled_exception_answers_a_json_500(sqlite_settings):
    from fleetml.api import create_app

    app = create_app(sqlite_settings)

    @app.get("/test-only/boom")
    def boom():
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.get("/test-only/boom")
    assert resp.status_code == 500
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["errors"] == []
    assert "RuntimeError" in body["detail"] and "GET /test-only/boom" in body["detail"]
    assert "secret internals" not in body["detail"]
