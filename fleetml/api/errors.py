"""Exception handlers: every error answer is ``{"detail": "...", "errors": [...]}``.

That is :class:`fleetml.schemas.common.ErrorResponse`, for domain errors, request validation,
``HTTPException`` (401, 403, unknown paths, wrong methods) and, as a last resort, any unhandled
exception (500).
"""

from __future__ import annotations

import json
import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleetml.errors import Conflict, InvalidBatch, InvalidInput, NotFound

log = logging.getLogger("fleetml.api")


class ErrorJSONResponse(JSONResponse):
    """An error answer, ASCII-escaped: a lone surrogate quoted from the input cannot make it
    unserialisable (which would turn a 422 into a 500)."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, default=str).encode()


def _json(status: int, body: dict, headers: dict | None = None) -> JSONResponse:
    return ErrorJSONResponse(body, status_code=status, headers=headers)


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InvalidBatch)
    async def invalid_batch(request: Request, exc: InvalidBatch):
        status = getattr(exc, "status_code", 422)
        request.app.state.fleetml.metrics.rejected_batches.labels(
            _route(request), str(status)
        ).inc()
        # Big rejections (every sample of 100k bad) are serialised with orjson, not json.
        return _OrjsonResponse(exc.as_dict(), status_code=status)

    @app.exception_handler(InvalidInput)
    async def invalid_input(request: Request, exc: InvalidInput):
        field = getattr(exc, "field", None)
        errors = [] if field is None else [{"index": None, "field": field, "reason": str(exc)}]
        return _json(422, {"detail": str(exc), "errors": errors})

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        return _json(404, {"detail": str(exc), "errors": []})

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict):
        return _json(409, {"detail": str(exc), "errors": []})

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError):
        errors = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ())]
            errors.append({"index": None, "field": ".".join(loc), "reason": err.get("msg", "")})
        summary = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5])
        return _json(422, {"detail": f"invalid request: {summary}", "errors": errors})

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, exc: SQLAlchemyError):
        request.app.state.fleetml.metrics.db_errors.labels(type(exc).__name__).inc()
        log.exception("database error on %s %s", request.method, request.url.path)
        if isinstance(exc, OperationalError):
            return _json(
                503,
                {
                    "detail": "the database is unavailable or busy; "
                    "nothing was stored, retry later",
                    "errors": [],
                },
                headers={"Retry-After": "1"},
            )
        return _json(
            500,
            {"detail": f"database error ({type(exc).__name__}); nothing was stored", "errors": []},
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        # 401/403 from the key checks, 404/405 from routing: the same shape as every other error.
        headers = getattr(exc, "headers", None)
        if exc.status_code < 200 or exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=headers)
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            return _json(400, {"detail": "the request body is not valid JSON", "errors": []})
        return _json(exc.status_code, _http_error_body(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception):
        # Starlette re-raises after this answer, so the server still logs the traceback; the
        # body names only the exception type, never its message (it may quote data or secrets).
        return _json(
            500,
            {
                "detail": f"internal error ({type(exc).__name__}) on {request.method} "
                f"{_route(request)}; the server log has the details: report it with the time "
                "of the request",
                "errors": [],
            },
        )


def _http_error_body(detail) -> dict:
    """``HTTPException.detail`` as an ErrorResponse body: a string, or a dict already shaped."""
    if isinstance(detail, dict) and "detail" in detail:
        return {**detail, "detail": str(detail["detail"]), "errors": detail.get("errors") or []}
    return {"detail": detail if isinstance(detail, str) else str(detail), "errors": []}


class _OrjsonResponse(ErrorJSONResponse):
    def render(self, content) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:  # a string orjson will not encode (a lone surrogate): the slow way
            return super().render(content)
