"""Offline API docs: Swagger UI at ``/docs`` and ReDoc at ``/redoc``, with no CDN.

FastAPI's own pages load their JavaScript and CSS from a CDN, so on a fleet host without
internet access they render blank. Here the same pages load the assets that the
``fastapi-offline`` package ships (Swagger UI bundle and CSS, the ReDoc standalone bundle and a
favicon), served by the app itself under :data:`ASSETS_URL`. Upgrading that package refreshes
the assets; nothing here needs Node.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: Where the docs' JavaScript, CSS and favicon are served.
ASSETS_URL = "/docs-assets"

#: Added to FastAPI's Swagger UI defaults: no spec-validator call out, and the bearer key
#: typed into "Authorize" survives a reload.
_SWAGGER_PARAMETERS = {"validatorUrl": None, "persistAuthorization": True}


def assets_dir() -> Path:
    """The folder of the installed Swagger UI and ReDoc assets."""
    return Path(str(files("fastapi_offline") / "static"))


def install_docs(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve Swagger UI at ``docs_url`` and ReDoc at ``redoc_url`` from local assets.

    Build the app with ``docs_url=None, redoc_url=None`` so FastAPI's CDN pages are not added
    too. The pages follow ``root_path``, so they also work behind a path-prefixing proxy.
    """
    directory = assets_dir()
    if not (directory / "swagger-ui-bundle.js").is_file():
        raise RuntimeError(
            f"the API docs assets are missing from {directory}: reinstall fleetml's "
            "dependencies (pip install fastapi-offline)"
        )
    app.mount(ASSETS_URL, StaticFiles(directory=directory), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=_SWAGGER_PARAMETERS,
        )

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
