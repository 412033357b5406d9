"""Account events: batch ingest, reads and the documented vocabulary of kinds."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from fleetml.api.deps import AnyKey, OpsKey, RuntimeKey, StateDep
from fleetml.api.openapi import raw_body_openapi
from fleetml.api.routers._params import iso_ms, ts_param
from fleetml.api.routers.metrics import _BATCH_ERRORS
from fleetml.schemas.common import ErrorResponse
from fleetml.schemas.events import (
    EventBatchIn,
    EventIngestResult,
    EventKind,
    EventKindsOut,
    EventOut,
    EventsOut,
)
from fleetml.vocab import EVENT_DESCRIPTIONS, EVENT_KINDS, event_category

router = APIRouter(prefix="/v1", tags=["events"])


@router.post(
    "/events",
    summary="Ingest a batch of events (all or nothing)",
    response_model=EventIngestResult,
    openapi_extra=raw_body_openapi(EventBatchIn),
    responses=_BATCH_ERRORS,
)
async def ingest_events(
    request: Request,
    key: RuntimeKey,
    state: StateDep,
    register: Annotated[bool, Query(description="Register unknown accounts.")] = False,
) -> EventIngestResult:
    """Store events; (account, ts, kind) is unique, so a replay stores nothing twice."""
    body = await request.body()
    outcome = await run_in_threadpool(
        state.ingestor.ingest_events, body, register=register, actor=key.name
    )
    state.metrics.events_ingested.inc(outcome.rows)
    return EventIngestResult(events=outcome.rows, registered=outcome.registered)


@router.get(
    "/events",
    summary="Read events, oldest first",
    response_model=EventsOut,
    responses={422: {"model": ErrorResponse}},
)
def read_events(
    key: OpsKey,
    state: StateDep,
    account_id: Annotated[list[str] | None, Query(description="Repeatable; default all.")] = None,
    kind: Annotated[list[str] | None, Query(description="Repeatable; default all.")] = None,
    from_: Annotated[str | None, Query(alias="from", description="Inclusive.")] = None,
    to: Annotated[str | None, Query(description="Inclusive.")] = None,
    limit: Annotated[int, Query(ge=1, le=1_000_000)] = 100_000,
) -> EventsOut:
    from fleetml.store.events import read_events as store_read

    frame = store_read(
        state.engine,
        accounts=account_id,
        kinds=kind,
        start=ts_param("from", from_),
        end=ts_param("to", to),
        limit=limit,
    )
    stamps = iso_ms(frame["ts"])
    events = [
        EventOut(
            account_id=aid,
            ts=ts,
            kind=k,
            detail=None if d is None or d != d else d,
            source=None if s is None or s != s else s,
        )
        for aid, ts, k, d, s in zip(
            frame["account_id"].tolist(),
            stamps,
            frame["kind"].tolist(),
            frame["detail"].tolist(),
            frame["source"].tolist(),
            strict=True,
        )
    ]
    return EventsOut(events=events, count=len(events))


@router.get(
    "/event-kinds", summary="The event vocabulary with categories", response_model=EventKindsOut
)
async def event_kinds(key: AnyKey) -> EventKindsOut:
    """Faults are what failover exists for; enforcement signals are never routed around."""
    order = {"fault": 0, "enforcement": 1, "operation": 2}
    kinds = sorted(EVENT_KINDS, key=lambda k: (order[event_category(k)], k))
    return EventKindsOut(
        kinds=[
            EventKind(kind=k, category=event_category(k), description=EVENT_DESCRIPTIONS.get(k, ""))
            for k in kinds
        ]
    )
