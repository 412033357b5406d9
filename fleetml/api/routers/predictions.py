"""Predictions for the runtime: cached answers from the tick, and on-demand scoring.

Reads are served from the process's :class:`~fleetml.serving.cache.PredictionCache` (no model
work, no database read on the hot path); ``POST .../score`` scores the account now with the
models this process serves.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from typing import Annotated, Literal

import orjson
import pandas as pd
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fleetml.api.deps import AnyKey, StateDep
from fleetml.api.openapi import raw_body_openapi
from fleetml.api.routers._params import ts_param
from fleetml.errors import InvalidInput, NotFound
from fleetml.schemas.common import ErrorResponse
from fleetml.schemas.predictions import (
    PredictionHistoryOut,
    PredictionOut,
    PredictionsOut,
    ScoreIn,
)
from fleetml.serving.cache import iso

router = APIRouter(prefix="/v1", tags=["predictions"])

_NOT_FOUND = {404: {"model": ErrorResponse, "description": "No prediction for this account."}}


async def _snapshot(state):
    cache = state.predictions
    if cache.due():
        await run_in_threadpool(cache.refresh)
    return cache.snapshot


def _cursor_out(account_id: str) -> str:
    return base64.urlsafe_b64encode(account_id.encode()).decode().rstrip("=")


def _cursor_in(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        value = None
    if not value or _cursor_out(value) != cursor:
        raise InvalidInput(f"cursor {cursor[:40]!r} is not one this API returned")
    return value


@router.get(
    "/predictions",
    response_model=PredictionsOut,
    summary="Latest predictions of the fleet (cached from the tick)",
)
async def list_predictions(
    key: AnyKey,
    state: StateDep,
    group: Annotated[str | None, Query(max_length=128, description="Only this group.")] = None,
    account_id: Annotated[
        list[str] | None, Query(description="Only these accounts (repeatable).")
    ] = None,
    at_risk: Annotated[
        bool | None, Query(description="true: accounts at risk at some horizon.")
    ] = None,
    is_anomaly: Annotated[bool | None, Query(description="true: anomalous accounts.")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
) -> Response:
    """Per account: anomaly, risk per horizon, staleness and the model versions behind them."""
    snap = await _snapshot(state)
    after = _cursor_in(cursor) if cursor else None
    wanted = set(account_id) if account_id else None
    out, last = [], None
    start = bisect.bisect_right(snap.order, after) if after is not None else 0
    for acc in snap.order[start:]:
        entry = snap.by_account[acc]
        if wanted is not None and acc not in wanted:
            continue
        if group is not None and entry["group"] != group:
            continue
        if at_risk is not None and any(r["at_risk"] for r in entry["risk"]) != at_risk:
            continue
        if is_anomaly is not None:
            flagged = bool(entry["anomaly"] and entry["anomaly"]["is_anomaly"])
            if flagged != is_anomaly:
                continue
        if len(out) == limit:
            last = out[-1]["account_id"]
            break
        out.append({**entry, "models": snap.models})
    body = {
        "predictions": out,
        "next_cursor": _cursor_out(last) if last is not None else None,
        "computed_at": iso(snap.tick_at),
        "models": snap.models,
    }
    return Response(orjson.dumps(body), media_type="application/json")


@router.get(
    "/predictions/{account_id}",
    response_model=PredictionOut,
    responses=_NOT_FOUND,
    summary="Latest prediction of one account (cached from the tick)",
)
async def get_prediction(account_id: str, key: AnyKey, request: Request) -> Response:
    """The hot path for the runtime: a dictionary lookup of a pre-serialised answer (the app
    state is read directly: one dependency less to resolve per request)."""
    snap = await _snapshot(request.app.state.fleetml)
    blob = snap.blobs.get(account_id)
    if blob is None:
        raise NotFound(
            f"no prediction for account {account_id[:128]!r}: it is unknown, has sent no "
            "samples, or no scoring tick ran since (is a worker running? fleetml worker, or "
            "fleetml serve --worker)"
        )
    return Response(blob, media_type="application/json")


@router.get(
    "/predictions/{account_id}/history",
    response_model=PredictionHistoryOut,
    summary="One account's predictions over time, with the risk thresholds",
)
def prediction_history(
    account_id: str,
    key: AnyKey,
    state: StateDep,
    from_: Annotated[str | None, Query(alias="from", description="Inclusive.")] = None,
    to: Annotated[str | None, Query(description="Inclusive.")] = None,
    family: Annotated[
        list[Literal["anomaly", "risk"]] | None, Query(description="Repeatable; default both.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=50_000)] = 10_000,
) -> dict:
    """The newest ``limit`` predictions in the range, oldest first (what the dashboard charts:
    anomaly scores with their flags, risk per horizon against its threshold). Kept for
    ``FLEETML_PREDICTION_RETENTION_S``."""
    from fleetml.store.predictions import read_history
    from fleetml.timestamps import bound_ms

    start, end = ts_param("from", from_), ts_param("to", to)
    frame = read_history(
        state.engine,
        account_id,
        start_ms=bound_ms(start),
        end_ms=bound_ms(end),
        families=family,
        limit=limit,
    )
    risk = state.models.get("risk") if state.models is not None else None
    thresholds = {h: float(t) for h, t in getattr(risk, "thresholds", {}).items()}
    points = [
        {
            "family": row.family,
            "horizon": row.horizon,
            "ts": iso(int(row.data_until)),
            "score": None if pd.isna(row.score) else float(row.score),
            "flag": bool(row.flag),
            "model_version": None if pd.isna(row.model_version) else int(row.model_version),
            "fallback": bool(row.fallback),
        }
        for row in frame.itertuples(index=False)
    ]
    return {"account_id": account_id, "points": points, "thresholds": thresholds}


@router.post(
    "/predictions/{account_id}/score",
    response_model=PredictionOut,
    responses={
        **_NOT_FOUND,
        400: {"model": ErrorResponse, "description": "The body is not JSON."},
        422: {"model": ErrorResponse, "description": "Invalid samples; every bad one listed."},
    },
    openapi_extra=raw_body_openapi(ScoreIn, required=False),
    summary="Score one account now (optionally with samples that are not stored)",
)
async def score_account(
    account_id: str, request: Request, key: AnyKey, state: StateDep
) -> Response:
    """Scores from the account's stored history plus the posted samples, with the models this
    process serves; nothing is stored."""
    from fleetml.vocab import ACCOUNT_ID_RE

    if not ACCOUNT_ID_RE.match(account_id):
        raise NotFound(f"no account {account_id[:128]!r}: not a valid account id")
    posted = await _posted_samples(request, state, account_id)
    group = None
    snap = state.predictions.snapshot
    if account_id in snap.by_account:
        group = snap.by_account[account_id]["group"]
    try:
        result = await run_in_threadpool(state.ondemand.score, account_id, posted, group=group)
    except LookupError as exc:
        raise NotFound(str(exc)) from None
    # plain JSON types already (the documented PredictionOut shape): no second validation pass
    return Response(orjson.dumps(result), media_type="application/json")


async def _posted_samples(request: Request, state, account_id: str) -> pd.DataFrame | None:
    from fleetml.ingest.batch import BatchRejected, ValidationItem, parse_body
    from fleetml.ingest.batch import validate_metric_samples as validate
    from fleetml.timestamps import now_ms

    body = await request.body()
    if not body.strip():
        return None
    payload = parse_body(body)
    if not isinstance(payload, dict) or "samples" not in payload:
        raise BatchRejected(
            'body must be a JSON object {"samples": [...]} (or empty)',
            [ValidationItem(None, "body", "expected an object with a 'samples' list")],
        )
    batch = validate(
        payload,
        now_ms=now_ms(),
        max_future_skew_s=state.settings.max_future_skew_s,
        max_samples=10_000,
    )
    others = sorted(batch.account_ids - {account_id})
    if others:
        raise BatchRejected(
            f"samples of other accounts ({', '.join(others[:5])}) posted to score {account_id!r}",
            [ValidationItem(None, "samples.account_id", f"must be {account_id!r}")],
        )
    if not batch.samples:
        return None
    rows = [{"ts": ts, "account_id": aid, **vals} for (aid, ts), vals in batch.samples.items()]
    frame = pd.DataFrame(rows)
    frame["ts"] = pd.to_datetime(frame["ts"], unit="ms", utc=True).astype("datetime64[ms, UTC]")
    return frame
