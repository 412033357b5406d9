"""``POST /v1/route``: the account of a group that sends the runtime's next message.

The answer comes from the process's :class:`~fleetml.serving.routing.RouteTable` (balancers in
memory); the store is only read by a background refresh every ``route_refresh_s`` seconds. The
body is read raw and validated in one pass (pydantic's JSON parser), and the answer is written
with orjson: the runtime may ask for every message it sends.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from fleetml.api.deps import ReaderKey
from fleetml.api.openapi import raw_body_openapi
from fleetml.errors import NotFound
from fleetml.schemas.common import ErrorResponse
from fleetml.schemas.routing import RouteIn, RouteOut
from fleetml.serving.routing import NoRoute, RouteTable, UnknownGroup

router = APIRouter(prefix="/v1", tags=["routing"])


async def route_table(state) -> RouteTable:
    """The process's route table, refreshed in the background when due (the first request of
    the process waits for the first load)."""
    table: RouteTable = state.routes
    if table.due():
        if table.loaded:
            table.refresh_in_background()
        else:
            await run_in_threadpool(table.refresh)
    return table


@router.post(
    "/route",
    response_model=RouteOut,
    responses={
        404: {"model": ErrorResponse, "description": "No account belongs to the group."},
        422: {"model": ErrorResponse, "description": "The body is not a valid RouteIn."},
        503: {
            "model": ErrorResponse,
            "description": "No account of the group can take traffic now (every weight is 0); "
            "retry later. Held accounts never cause this: they are answered with hold=true.",
        },
    },
    openapi_extra=raw_body_openapi(RouteIn),
    summary="The account of a group that sends the next message",
)
async def route(request: Request, key: ReaderKey) -> Response:
    """Reports the outcomes of earlier sends (``report``) to the group's balancer, then picks
    by the group's algorithm and the routing weights in effect.

    ``hold: true`` means the picked account is held for platform enforcement: keep the message
    waiting for that number and never send it from another one."""
    try:
        body = RouteIn.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        raise RequestValidationError(
            [{**e, "loc": ("body", *e.get("loc", ()))} for e in errors]
        ) from None
    state = request.app.state.fleetml
    table = await route_table(state)
    report = [(r.account_id, r.latency_ms, r.ok) for r in body.report]
    try:
        answer = table.route(body.group, report)
    except UnknownGroup:
        raise NotFound(
            f"group {body.group!r} has no accounts; list groups with GET /v1/weights or "
            "GET /v1/accounts (a group appears once an account is registered in it)"
        ) from None
    except NoRoute:
        raise HTTPException(
            503,
            f"no account of group {body.group!r} can take traffic now: every weight is 0 "
            "(accounts failed over, failed, draining or out of rotation). Retry shortly; "
            "GET /v1/weights with ?group= shows the reasons",
            headers={"Retry-After": str(max(1, round(table.refresh_s)))},
        ) from None
    return Response(orjson.dumps(answer), media_type="application/json")
