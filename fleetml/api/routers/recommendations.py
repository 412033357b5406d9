"""Recommendations for people: review them, accept (applying the setting one carries to its
group's policy) or dismiss them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from fleetml.api.deps import OpsKey, StateDep
from fleetml.api.routers._params import row_id
from fleetml.api.routers.decisions import Cursor, GroupFilter, Limit, page_cursor
from fleetml.decisions.contracts import RecommendationKind
from fleetml.schemas.common import ErrorResponse
from fleetml.schemas.decisions import (
    Comment,
    RecommendationOut,
    RecommendationsOut,
    RecommendationState,
)
from fleetml.store import recommendations as store
from fleetml.store.audit import now_ms

router = APIRouter(prefix="/v1", tags=["recommendations"])

RecommendationId = row_id("recommendation")
CommentBody = Annotated[Comment | None, Body(description="Optional comment for the record.")]

_CHANGE = {
    404: {"model": ErrorResponse, "description": "No such recommendation."},
    409: {"model": ErrorResponse, "description": "It is not open, or its setting no longer fits."},
}


@router.get(
    "/recommendations",
    response_model=RecommendationsOut,
    summary="List recommendations, newest first",
)
def list_recommendations(
    key: OpsKey,
    state: StateDep,
    state_: Annotated[RecommendationState | None, Query(alias="state")] = None,
    group: GroupFilter = None,
    kind: RecommendationKind | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> RecommendationsOut:
    rows = store.list_recommendations(
        state.engine,
        state=state_,
        group=group,
        kind=None if kind is None else kind.value,
        limit=limit + 1,
        after_id=page_cursor(cursor),
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return RecommendationsOut(
        recommendations=[RecommendationOut.from_row(r) for r in rows],
        next_cursor=str(rows[-1]["id"]) if more else None,
    )


@router.post(
    "/recommendations/{rec_id}/accept",
    response_model=RecommendationOut,
    responses=_CHANGE,
    summary="Accept an open recommendation",
)
def accept_recommendation(
    rec_id: RecommendationId, key: OpsKey, state: StateDep, body: CommentBody = None
) -> RecommendationOut:
    """One that carries a setting is applied to its group's policy at once (state ``applied``,
    visible at ``GET /v1/groups/{group}/policy`` and in the audit log); one without is
    ``accepted`` and left to a person to carry out."""
    with state.engine.begin() as conn:
        row = store.accept_recommendation(
            conn,
            rec_id=rec_id,
            actor=key.name,
            comment=_comment(body),
            now_ms=now_ms(),
            default_mode=state.settings.decision_mode,
        )
    return RecommendationOut.from_row(row)


@router.post(
    "/recommendations/{rec_id}/dismiss",
    response_model=RecommendationOut,
    responses=_CHANGE,
    summary="Dismiss an open recommendation",
)
def dismiss_recommendation(
    rec_id: RecommendationId, key: OpsKey, state: StateDep, body: CommentBody = None
) -> RecommendationOut:
    """It is not raised again until it would have expired."""
    with state.engine.begin() as conn:
        row = store.dismiss_recommendation(
            conn, rec_id=rec_id, actor=key.name, comment=_comment(body), now_ms=now_ms()
        )
    return RecommendationOut.from_row(row)


def _comment(body: Comment | None) -> str | None:
    return None if body is None else body.comment
