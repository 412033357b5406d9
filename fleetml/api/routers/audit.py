"""The audit log: who changed what, when, with before and after."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fleetml.api.deps import OpsKey, StateDep
from fleetml.api.routers._params import ts_param
from fleetml.schemas.keys import AuditOut

router = APIRouter(prefix="/v1", tags=["audit"])


@router.get("/audit", response_model=AuditOut, summary="Audit entries, newest first")
def read_audit(
    key: OpsKey,
    state: StateDep,
    entity_type: Annotated[str | None, Query(description="account, api_key, metric, ...")] = None,
    entity_id: str | None = None,
    actor: Annotated[str | None, Query(description="The API key name that acted.")] = None,
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> dict:
    from fleetml.store.audit import read_audit as store_read

    entries = store_read(
        state.engine,
        entity_type=entity_type,
        entity_id=entity_id,
        actor=actor,
        start=ts_param("from", from_),
        end=ts_param("to", to),
        limit=limit,
    )
    return {"entries": entries, "count": len(entries)}
