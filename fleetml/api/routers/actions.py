"""Actions for the runtime: list them, approve or reject the ones waiting for an operator, and
acknowledge (from the runtime) the ones carried out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from fleetml.api.deps import OpsKey, ReaderKey, RuntimeKey, StateDep
from fleetml.api.routers._params import row_id
from fleetml.api.routers.decisions import AccountFilter, Cursor, GroupFilter, Limit, page_cursor
from fleetml.schemas.common import ErrorResponse
from fleetml.schemas.decisions import ActionAck, ActionOut, ActionsOut, ActionState, Comment
from fleetml.store import actions as store
from fleetml.store.audit import now_ms

router = APIRouter(prefix="/v1", tags=["actions"])

ActionId = row_id("action")
CommentBody = Annotated[Comment | None, Body(description="Optional comment for the audit log.")]

_CHANGE = {
    404: {"model": ErrorResponse, "description": "No such action."},
    409: {"model": ErrorResponse, "description": "The action is not in a state that allows it."},
}


@router.get("/actions", response_model=ActionsOut, summary="List actions, newest first")
def list_actions(
    key: ReaderKey,
    state: StateDep,
    state_: Annotated[
        ActionState | None,
        Query(alias="state", description="The runtime polls state=pending."),
    ] = None,
    account_id: AccountFilter = None,
    group: GroupFilter = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> ActionsOut:
    rows = store.list_actions(
        state.engine,
        state=state_,
        account_id=account_id,
        group=group,
        limit=limit + 1,
        after_id=page_cursor(cursor),
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return ActionsOut(
        actions=[ActionOut.from_row(r) for r in rows],
        next_cursor=str(rows[-1]["id"]) if more else None,
    )


@router.post(
    "/actions/{action_id}/ack",
    response_model=ActionOut,
    responses=_CHANGE,
    summary="Report a pending action carried out (ok) or not (failed)",
)
def ack_action(action_id: ActionId, body: ActionAck, key: RuntimeKey, state: StateDep) -> ActionOut:
    """Sending the same report again returns the action unchanged (safe to retry); a different
    report, or an action that is not pending, is a 409."""
    with state.engine.begin() as conn:
        row = store.ack_action(
            conn,
            action_id=action_id,
            outcome=body.outcome,
            detail=body.detail,
            actor=key.name,
            now_ms=now_ms(),
        )
    return ActionOut.from_row(row)


@router.post(
    "/actions/{action_id}/approve",
    response_model=ActionOut,
    responses=_CHANGE,
    summary="Approve an action waiting for an operator",
)
def approve_action(
    action_id: ActionId, key: OpsKey, state: StateDep, body: CommentBody = None
) -> ActionOut:
    """The action becomes pending: published to the runtime, with a fresh time to live. An
    action is approved once; a second approval (or one racing it) is a 409."""
    with state.engine.begin() as conn:
        row = store.approve_action(
            conn, action_id=action_id, actor=key.name, now_ms=now_ms(), comment=_comment(body)
        )
    return ActionOut.from_row(row)


@router.post(
    "/actions/{action_id}/reject",
    response_model=ActionOut,
    responses=_CHANGE,
    summary="Reject an action waiting for an operator",
)
def reject_action(
    action_id: ActionId, key: OpsKey, state: StateDep, body: CommentBody = None
) -> ActionOut:
    with state.engine.begin() as conn:
        row = store.reject_action(
            conn, action_id=action_id, actor=key.name, now_ms=now_ms(), comment=_comment(body)
        )
    return ActionOut.from_row(row)


def _comment(body: Comment | None) -> str | None:
    return None if body is None else body.comment
