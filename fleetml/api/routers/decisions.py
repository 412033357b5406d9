"""The decision record: what fleetml decided, why, on which inputs and models ("why did
traffic move"), newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fleetml.api.deps import OpsKey, StateDep
from fleetml.errors import InvalidInput
from fleetml.schemas.alerts import TimestampIn
from fleetml.schemas.decisions import GROUP_PATTERN, DecisionOut, DecisionsOut
from fleetml.store import decisions as store
from fleetml.vocab import ACCOUNT_ID_RE

router = APIRouter(prefix="/v1", tags=["decisions"])

Cursor = Annotated[
    str | None, Query(max_length=32, description="next_cursor of the previous page.")
]
Limit = Annotated[int, Query(ge=1, le=1000)]
GroupFilter = Annotated[str | None, Query(pattern=GROUP_PATTERN)]
AccountFilter = Annotated[str | None, Query(pattern=ACCOUNT_ID_RE.pattern)]


@router.get("/decisions", response_model=DecisionsOut, summary="The decision record, newest first")
def list_decisions(
    key: OpsKey,
    state: StateDep,
    account_id: AccountFilter = None,
    group: GroupFilter = None,
    kind: Annotated[
        str | None,
        Query(
            pattern=r"^[A-Za-z0-9_.:-]{1,32}$",
            description="weight, an action kind (failover, ...), recommendation.",
        ),
    ] = None,
    from_: Annotated[
        TimestampIn | None, Query(alias="from", description="ISO-8601 or epoch seconds.")
    ] = None,
    to: Annotated[TimestampIn | None, Query(description="ISO-8601 or epoch seconds.")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> DecisionsOut:
    """Every weight change, action and recommendation the policy decided, with the rule that
    fired, the inputs that mattered, the model versions behind them and, for failovers, the
    outcome once it is known."""
    if from_ is not None and to is not None and from_ > to:
        raise InvalidInput("'from' is after 'to'; swap them")
    rows = store.read_decisions(
        state.engine,
        account_id=account_id,
        group=group,
        kind=kind,
        since_ms=from_,
        until_ms=to,
        limit=limit + 1,
        after_id=page_cursor(cursor),
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return DecisionsOut(
        decisions=[DecisionOut.from_row(r) for r in rows],
        next_cursor=str(rows[-1]["id"]) if more else None,
    )


def page_cursor(cursor: str | None) -> int | None:
    """A ``cursor`` query value (the last id of the previous page) as an id."""
    if cursor is None or cursor == "":
        return None
    if (
        not (cursor.isascii() and cursor.isdigit()) or not 0 < int(cursor) < 2**63
    ):  # a cursor past every id is an empty page
        raise InvalidInput(f"cursor {cursor!r} is not one this API handed out; start without it")
    return int(cursor)
