"""The OpenAPI document: raw-read bodies documented by their model, and one error shape.

The ingest routes parse bytes, but /docs still shows the body's model. Every error answer is
:class:`~fleetml.schemas.common.ErrorResponse` (see ``fleetml.api.errors``), and the document
says so: FastAPI's ``HTTPValidationError`` is replaced for 422, and every /v1 operation lists
401, 403, 500 and 503.
"""

from __future__ import annotations

import json

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from fleetml.schemas.common import ErrorResponse

#: Request bodies read raw (for speed) but documented by a model: added to the OpenAPI components.
_RAW_BODY_MODELS: list[type[BaseModel]] = []


def raw_body_openapi(model: type[BaseModel], *, required: bool = True) -> dict:
    """``openapi_extra`` documenting a raw-read JSON body with ``model``'s schema."""
    if model not in _RAW_BODY_MODELS:
        _RAW_BODY_MODELS.append(model)
    return {
        "requestBody": {
            "required": required,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


def openapi_builder(app: FastAPI):
    def build() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in [*_RAW_BODY_MODELS, ErrorResponse]:
            _add_component(components, model)
        document_errors(schema)
        app.openapi_schema = schema
        return schema

    return build


def _add_component(components: dict, model: type[BaseModel]) -> None:
    body = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(body.pop("$defs", {}))
    components[model.__name__] = body


_ERROR_REF = {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}
_FASTAPI_COMPONENTS = ("HTTPValidationError", "ValidationError")

#: What every /v1 operation may answer besides its own statuses.
V1_ERRORS = {
    "401": "Missing or unknown API key: send 'Authorization: Bearer KEY'.",
    "403": "The key's role may not do this.",
    "422": "The request is not valid (a parameter, or text the store cannot hold); 'errors' "
    "names every problem.",
    "500": "Internal error; the server log has the details.",
    "503": "The database is unavailable or busy, or the server is at its limit of request "
    "bodies in flight; retry after the Retry-After seconds.",
}
#: What every operation that takes a body may answer besides (the request guard's answers).
BODY_ERRORS = {
    "400": "The body is not parseable JSON.",
    "413": "The body is over the size limit (FLEETML_MAX_BODY_BYTES), or a batch over its item "
    "limit.",
    "415": "The body is not JSON: send 'Content-Type: application/json'.",
}
#: What every operation naming a stored thing in its path may answer.
PATH_ERRORS = {"404": "No such thing (the path names one that does not exist)."}
_422_DESCRIPTION = "The request is not valid; 'errors' lists every problem."


def _error_response(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def document_errors(schema: dict) -> dict:
    """Make ``schema`` (an OpenAPI dict, changed in place) describe the one error shape.

    Every 422 answer points at ErrorResponse instead of FastAPI's HTTPValidationError, every
    /v1 operation gains the 401, 403, 422, 500 and 503 answers it does not list yet (with a
    body also 400, 413 and 415; with a path parameter also 404), and the unused
    HTTPValidationError and ValidationError components are dropped.
    """
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            invalid = responses.get("422")
            if invalid is not None and _json_schema(invalid) != _ERROR_REF:
                description = invalid.get("description")
                if description in (None, "", "Validation Error"):
                    description = _422_DESCRIPTION
                responses["422"] = _error_response(description)
            if path.startswith("/v1/"):
                extra = dict(V1_ERRORS)
                if "requestBody" in operation:
                    extra.update(BODY_ERRORS)
                if "{" in path:
                    extra.update(PATH_ERRORS)
                for status, description in extra.items():
                    responses.setdefault(status, _error_response(description))
    components = schema.get("components", {}).get("schemas", {})
    kept = {k: v for k, v in schema.items() if k != "components"}
    kept["schemas"] = {k: v for k, v in components.items() if k not in _FASTAPI_COMPONENTS}
    text = json.dumps(kept)
    for name in _FASTAPI_COMPONENTS:
        if f'"#/components/schemas/{name}"' not in text:
            components.pop(name, None)
    return schema


def _json_schema(response: dict) -> dict | None:
    return response.get("content", {}).get("application/json", {}).get("schema")
