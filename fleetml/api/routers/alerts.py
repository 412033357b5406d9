"""Alerts and silences: read, acknowledge and resolve alerts; mute them while work is planned."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from fleetml.api.deps import OpsKey, StateDep
from fleetml.api.routers._params import row_id, ts_param
from fleetml.errors import InvalidInput, NotFound
from fleetml.schemas.alerts import (
    AlertDetailOut,
    AlertFeedbackIn,
    AlertFeedbackOut,
    AlertHistoryOut,
    AlertNote,
    AlertOut,
    AlertPrecisionOut,
    AlertsOut,
    AlertStateFilter,
    SilenceCreate,
    SilenceOut,
    SilencesOut,
    iso,
)
from fleetml.schemas.common import ErrorResponse
from fleetml.store import alerts as store
from fleetml.store.audit import now_ms

router = APIRouter(prefix="/v1", tags=["alerts"])

AlertId = row_id("alert")
SilenceId = row_id("silence")
Note = Annotated[AlertNote | None, Body(description="Optional note for the history.")]

_NOT_FOUND = {404: {"model": ErrorResponse, "description": "No such alert."}}
_CHANGE = {
    **_NOT_FOUND,
    409: {"model": ErrorResponse, "description": "The alert is already resolved."},
}


@router.get("/alerts", response_model=AlertsOut, summary="List alerts, newest first")
def list_alerts(
    key: OpsKey,
    state: StateDep,
    state_: Annotated[
        AlertStateFilter | None,
        Query(alias="state", description="'open' means firing or acknowledged."),
    ] = None,
    account_id: Annotated[str | None, Query(max_length=128)] = None,
    group: Annotated[str | None, Query(max_length=128)] = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        str | None, Query(max_length=32, description="next_cursor of the previous page.")
    ] = None,
) -> AlertsOut:
    rows = store.list_alerts(
        state.engine,
        state=state_,
        account_id=account_id,
        group=group,
        kind=kind,
        limit=limit + 1,
        before_id=_cursor(cursor),
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return AlertsOut(
        alerts=[AlertOut.from_row(r) for r in rows],
        next_cursor=str(rows[-1]["id"]) if more else None,
    )


@router.get(
    "/alerts/precision",
    response_model=AlertPrecisionOut,
    summary="Alert precision per kind, from ops feedback",
)
def alert_precision(
    key: OpsKey,
    state: StateDep,
    from_: Annotated[str | None, Query(alias="from", description="Alerts opened from.")] = None,
    to: Annotated[str | None, Query(description="Alerts opened until.")] = None,
) -> AlertPrecisionOut:
    """How often each kind of alert was a real problem, as ops judged them (the model
    accuracy dashboard shows it beside the models' own test figures)."""
    from fleetml.store.alerts import alert_precision as precision
    from fleetml.timestamps import bound_ms

    kinds = precision(
        state.engine,
        start_ms=bound_ms(ts_param("from", from_)),
        end_ms=bound_ms(ts_param("to", to)),
    )
    return AlertPrecisionOut(kinds=kinds)


@router.get(
    "/alerts/{alert_id}",
    response_model=AlertDetailOut,
    responses=_NOT_FOUND,
    summary="One alert with its history",
)
def get_alert(alert_id: AlertId, key: OpsKey, state: StateDep) -> AlertDetailOut:
    row = store.get_alert(state.engine, alert_id=alert_id)
    if row is None:
        raise NotFound(f"alert {alert_id} does not exist")
    history = [
        AlertHistoryOut(**{**h, "ts": iso(h["ts"])})
        for h in store.read_history(state.engine, alert_id=alert_id)
    ]
    return AlertDetailOut(**AlertOut.from_row(row).model_dump(), history=history)


@router.post(
    "/alerts/{alert_id}/ack",
    response_model=AlertOut,
    responses=_CHANGE,
    summary="Acknowledge an open alert",
)
def acknowledge_alert(
    alert_id: AlertId, key: OpsKey, state: StateDep, body: Note = None
) -> AlertOut:
    """The alert stays open and still resolves by itself; acknowledging twice changes nothing."""
    from fleetml.services.alerts import acknowledge_alert as acknowledge

    row = acknowledge(state.engine, alert_id=alert_id, actor=key.name, note=_note(body))
    return AlertOut.from_row(row)


@router.post(
    "/alerts/{alert_id}/resolve",
    response_model=AlertOut,
    responses=_CHANGE,
    summary="Resolve an open alert by hand",
)
def resolve_alert(alert_id: AlertId, key: OpsKey, state: StateDep, body: Note = None) -> AlertOut:
    """Receivers that heard it fire hear it resolve. While its condition holds, no new alert of
    the same account and kind opens for ``alert_suppression_s``."""
    from fleetml.services.alerts import resolve_alert as resolve

    row = resolve(state.engine, alert_id=alert_id, actor=key.name, note=_note(body))
    return AlertOut.from_row(row)


@router.post(
    "/alerts/{alert_id}/feedback",
    response_model=AlertFeedbackOut,
    status_code=201,
    summary="Say whether an alert was a real problem or a false alarm",
)
def alert_feedback(
    alert_id: AlertId, body: AlertFeedbackIn, key: OpsKey, state: StateDep
) -> AlertFeedbackOut:
    """Any alert, open or resolved (a false alarm often resolves by itself before anyone looks);
    the latest word per alert counts in ``GET /v1/alerts/precision``. Audited."""
    from fleetml.store.alerts import record_feedback

    with state.engine.begin() as conn:
        row = record_feedback(
            conn,
            alert_id=alert_id,
            verdict=body.verdict,
            actor=key.name,
            note=body.note,
            now_ms=now_ms(),
        )
    return AlertFeedbackOut(**{**row, "ts": iso(row["ts"])})


@router.get("/silences", response_model=SilencesOut, summary="List silences, newest first")
def list_silences(
    key: OpsKey,
    state: StateDep,
    include_expired: Annotated[
        bool, Query(description="Also list silences that are over or deleted.")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SilencesOut:
    now = now_ms()
    rows = store.list_silences(
        state.engine, now_ms=now, include_expired=include_expired, limit=limit
    )
    return SilencesOut(silences=[SilenceOut.from_row(r, now_ms=now) for r in rows], count=len(rows))


@router.post(
    "/silences",
    status_code=201,
    response_model=SilenceOut,
    responses={422: {"model": ErrorResponse, "description": "No matcher, or a bad time range."}},
    summary="Silence matching alerts for a while",
)
def create_silence(body: SilenceCreate, key: OpsKey, state: StateDep) -> SilenceOut:
    """Matching alerts are still recorded (``silenced: true``) but nobody is notified."""
    now = now_ms()
    starts_at = now if body.starts_at is None else body.starts_at
    if body.ends_at <= max(starts_at, now):
        raise InvalidInput(
            f"ends_at {iso(body.ends_at)} is not after "
            f"{'now' if starts_at <= now else 'starts_at'}; a silence must end in the future"
        )
    with state.engine.begin() as conn:
        row = store.create_silence(
            conn,
            account_id=body.account_id,
            group=body.group,
            kind=body.kind,
            starts_at=starts_at,
            ends_at=body.ends_at,
            comment=body.comment,
            actor=key.name,
            now_ms=now,
        )
    return SilenceOut.from_row(row, now_ms=now)


@router.delete(
    "/silences/{silence_id}",
    response_model=SilenceOut,
    responses={
        404: {"model": ErrorResponse, "description": "No such silence."},
        409: {"model": ErrorResponse, "description": "Already deleted."},
    },
    summary="End a silence now",
)
def delete_silence(silence_id: SilenceId, key: OpsKey, state: StateDep) -> SilenceOut:
    now = now_ms()
    with state.engine.begin() as conn:
        row = store.delete_silence(conn, silence_id=silence_id, actor=key.name, now_ms=now)
    return SilenceOut.from_row(row, now_ms=now)


def _cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    if (
        not (cursor.isascii() and cursor.isdigit()) or not 0 < int(cursor) < 2**63
    ):  # a cursor past every id is an empty page
        raise InvalidInput(f"cursor {cursor!r} is not one this API handed out; start without it")
    return int(cursor)


def _note(body: AlertNote | None) -> str | None:
    return None if body is None else body.note
