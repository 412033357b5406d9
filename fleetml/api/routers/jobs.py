"""Scheduler job runs: what ran, when, how it ended and what it counted."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from fleetml.api.deps import OpsKey, StateDep
from fleetml.errors import InvalidInput
from fleetml.schemas.jobs import JobOutcome, JobRunsOut

router = APIRouter(prefix="/v1", tags=["jobs"])


@router.get("/jobs", response_model=JobRunsOut, summary="Scheduler job runs, newest first")
def list_job_runs(
    key: OpsKey,
    state: StateDep,
    job: Annotated[
        str | None, Query(description="score, forecast, retrain, retention, ...")
    ] = None,
    outcome: JobOutcome | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        str | None, Query(description="The next_cursor of the previous page.")
    ] = None,
) -> dict:
    from fleetml.store.jobs import list_runs

    rows = list_runs(
        state.engine,
        job=job,
        outcome=outcome,
        before_id=_parse_cursor(cursor),
        limit=limit + 1,  # one more tells whether another page exists
    )
    page = rows[:limit]
    next_cursor = str(page[-1]["id"]) if len(rows) > limit else None
    return {"runs": [_run_out(r) for r in page], "count": len(page), "next_cursor": next_cursor}


def _parse_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    if not cursor.isdigit():
        raise InvalidInput(
            f"query parameter 'cursor': {cursor!r} is not a cursor this endpoint gave; "
            "pass the next_cursor of the previous page, or omit it for the first page"
        )
    return int(cursor)


def _run_out(row: dict) -> dict:
    started, ended = row["started_at"], row["ended_at"]
    return {
        **row,
        "started_at": _iso(started),
        "ended_at": None if ended is None else _iso(ended),
        "duration_s": None if ended is None else round((ended - started) / 1000, 3),
    }


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:23] + "Z"
