"""OpenAPI for raw-read bodies: the ingest routes parse bytes, but /docs still shows the model."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

#: Request bodies read raw (for speed) but documented by a model: added to the OpenAPI components.
_RAW_BODY_MODELS: list[type[BaseModel]] = []


def raw_body_openapi(model: type[BaseModel]) -> dict:
    """``openapi_extra`` documenting a raw-read JSON body with ``model``'s schema."""
    if model not in _RAW_BODY_MODELS:
        _RAW_BODY_MODELS.append(model)
    return {
        "requestBody": {
            "required": True,
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
        for model in _RAW_BODY_MODELS:
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
        app.openapi_schema = schema
        return schema

    return build
