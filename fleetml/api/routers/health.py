"""Open endpoints: liveness, readiness and Prometheus exposition."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fleetml.api.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database is reachable and its schema is current; degraded model families",
    responses={503: {"description": "Not ready: database unreachable or migrations pending."}},
)
def readyz(state: StateDep):
    from fleetml.store.migrate import current_revision, head_revision

    try:
        current = current_revision(state.engine)
    except Exception as exc:  # any failure to reach the database means "not ready"
        state.metrics.db_errors.labels(type(exc).__name__).inc()
        return JSONResponse(
            {
                "status": "unavailable",
                "detail": f"database unreachable: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}",
                "errors": [],
            },
            status_code=503,
        )
    head = head_revision()
    if current != head:
        return JSONResponse(
            {
                "status": "migrations pending",
                "detail": f"database schema is at {current!r}, this version needs {head!r}; "
                "run fleetml db upgrade (fleetml serve does it on start)",
                "errors": [],
            },
            status_code=503,
        )
    degraded = {}
    if state.models is not None:
        state.models.ensure_loaded()
        degraded = state.models.degraded()
    if degraded:
        # Still ready: a documented heuristic answers for these families (fallback: true).
        return {"status": "degraded", "revision": current, "degraded": degraded}
    return {"status": "ready", "revision": current}


@router.get("/metrics", summary="Prometheus exposition", response_class=Response)
def prometheus_metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
