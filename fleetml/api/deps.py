"""Dependencies shared by the routers, as ``Annotated`` aliases (``StateDep``, ``OpsKey``, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from fleetml.api.auth import ApiKey, KeyCache, check_role, unauthorized, verify_key
from fleetml.api.prometheus import ApiMetrics
from fleetml.config import Settings
from fleetml.ingest.batch import BatchIngestor
from fleetml.vocab import ApiRole


@dataclass
class ApiState:
    """Everything a request handler needs, built once per app by :func:`create_app`."""

    settings: Settings
    engine: Engine
    keys: KeyCache
    metrics: ApiMetrics
    ingestor: BatchIngestor
    #: the serving layer of this process (fleetml.serving): models, cached predictions, and
    #: on-demand scoring; built by create_app
    models: Any = None
    predictions: Any = None
    ondemand: Any = None
    #: POST /v1/route's balancers per group (fleetml.serving.routing.RouteTable)
    routes: Any = None


async def get_state(request: Request) -> ApiState:
    # async: a sync dependency would cost every request a hop to the thread pool
    return request.app.state.fleetml


StateDep = Annotated[ApiState, Depends(get_state)]


_bearer = HTTPBearer(
    auto_error=False,
    description="An API key (fleetml keys create, or POST /v1/keys) "
    "sent as 'Authorization: Bearer KEY'.",
)


async def current_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """The caller's key: 401 when missing or wrong. A cached key costs no thread hop."""
    if credentials is None or not credentials.credentials:
        raise unauthorized(
            "missing API key: send 'Authorization: Bearer KEY' (an admin creates keys with "
            "fleetml keys create or POST /v1/keys)"
        )
    state: ApiState = request.app.state.fleetml
    key = state.keys.get(credentials.credentials)
    if key is not None:
        return key
    return await run_in_threadpool(verify_key, state.engine, state.keys, credentials.credentials)


CurrentKey = Annotated[ApiKey, Depends(current_key)]


def require(*roles: ApiRole):
    """A dependency admitting keys with one of ``roles`` (admin is always admitted)."""
    allowed = frozenset(roles)

    async def dependency(request: Request, key: CurrentKey) -> ApiKey:
        route = request.scope.get("route")
        action = f"{request.method} {getattr(route, 'path', request.url.path)}"
        return check_role(key, allowed, action)

    return dependency


#: Any valid key (vocabularies that every client may read).
AnyKey = CurrentKey
#: Runtime or admin: ingest, declaring the runtime's own metric kinds.
RuntimeKey = Annotated[ApiKey, Depends(require(ApiRole.RUNTIME))]
#: Ops or admin: every read.
OpsKey = Annotated[ApiKey, Depends(require(ApiRole.OPS))]
#: Any role (runtime, ops, admin): predictions and forecasts for the runtime.
ReaderKey = CurrentKey
#: Admin only: registry, keys, configuration.
AdminKey = Annotated[ApiKey, Depends(require())]
