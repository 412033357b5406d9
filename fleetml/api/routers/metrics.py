"""Metric samples: batch ingest, range reads (JSON or streamed CSV) and metric kinds."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Annotated, Literal

import numpy as np
import orjson
import pandas as pd
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from fleetml.api.deps import AdminKey, AnyKey, OpsKey, RuntimeKey, StateDep
from fleetml.api.openapi import raw_body_openapi
from fleetml.api.routers._params import iso_ms, ts_param
from fleetml.errors import InvalidInput
from fleetml.schemas.common import ErrorResponse
from fleetml.schemas.metrics import (
    IngestResult,
    MetricBatchIn,
    MetricKindsIn,
    MetricKindsOut,
    MetricsOut,
)

router = APIRouter(prefix="/v1", tags=["metrics"])

_CSV_CHUNK_ROWS = 20_000
#: Rows of a JSON page when the request names no limit, and the most a page may hold.
DEFAULT_PAGE_ROWS = 10_000
MAX_PAGE_ROWS = 100_000
#: Header carrying the next cursor of a paged CSV read.
NEXT_CURSOR_HEADER = "X-Next-Cursor"
_CURSOR_TAG = "m1"
_BATCH_ERRORS = {
    400: {"model": ErrorResponse, "description": "The body is not JSON."},
    401: {"model": ErrorResponse, "description": "Missing or unknown API key."},
    403: {"model": ErrorResponse, "description": "The key's role may not do this."},
    413: {"model": ErrorResponse, "description": "More samples than max_batch_samples."},
    422: {"model": ErrorResponse, "description": "Nothing stored; every bad item is listed."},
    503: {"model": ErrorResponse, "description": "Database unavailable; nothing stored."},
}


@router.post(
    "/metrics",
    summary="Ingest a batch of metric samples (all or nothing)",
    response_model=IngestResult,
    openapi_extra=raw_body_openapi(MetricBatchIn),
    responses=_BATCH_ERRORS,
)
async def ingest_metrics(
    request: Request,
    key: RuntimeKey,
    state: StateDep,
    register: Annotated[
        bool,
        Query(description="Register unknown accounts (as active masters) instead of refusing."),
    ] = False,
) -> IngestResult:
    """Store a batch of samples; a 2xx answer means every sample is durably committed.

    Idempotent on (account, ts, metric): replaying a batch stores nothing twice, a later value
    replaces an earlier one. ``null`` values mean "not observed" and are not stored. NaN and
    Infinity (as bare literals or strings) are refused per sample. The body is parsed and
    validated without per-sample models, in a worker thread so the event loop stays free.
    """
    body = await request.body()
    outcome = await run_in_threadpool(
        state.ingestor.ingest_metrics, body, register=register, actor=key.name
    )
    state.metrics.samples_ingested.inc(outcome.samples)
    state.metrics.values_ingested.inc(outcome.values)
    return IngestResult(
        samples=outcome.samples,
        rows=outcome.rows,
        values=outcome.values,
        registered=outcome.registered,
    )


def _wants_csv(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "csv"
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept.split("text/csv")[0]


def _csv_chunks(frame: pd.DataFrame) -> Iterator[bytes]:
    out = frame.copy()
    out["ts"] = iso_ms(frame["ts"]) if len(frame) else pd.Series([], dtype="str")
    yield (",".join(out.columns) + "\n").encode()
    for start in range(0, len(out), _CSV_CHUNK_ROWS):
        chunk = out.iloc[start : start + _CSV_CHUNK_ROWS]
        yield chunk.to_csv(index=False, header=False, lineterminator="\n").encode()


def encode_cursor(key: tuple[int, int]) -> str:
    """An opaque cursor for the samples' keyset position (ts, account key)."""
    text = f"{_CURSOR_TAG}:{int(key[0])}:{int(key[1])}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """The keyset position of a cursor from :func:`encode_cursor`; ``InvalidInput`` otherwise."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        tag, ts, pk = text.split(":")
        key = int(ts), int(pk)
        if tag != _CURSOR_TAG or not all(-(2**63) <= v < 2**63 for v in key):
            raise ValueError(text)  # a forged cursor must not reach the database as an overflow
        return key
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors too
        raise InvalidInput(
            "query parameter 'cursor' is not a cursor this API returned; use the next_cursor "
            "of the previous page, or leave it out to start from the first page"
        ) from None


def _json_samples(frame: pd.DataFrame, names: list[str], next_cursor: str | None = None) -> bytes:
    stamps = iso_ms(frame["ts"])
    ids = frame["account_id"].tolist()
    values = frame[names].to_numpy(dtype="float64") if names else np.empty((len(frame), 0))
    samples = []
    for i, row in enumerate(values.tolist()):
        # NaN means not observed: left out, as on ingest.
        samples.append(
            {
                "account_id": ids[i],
                "ts": stamps[i],
                "values": {n: v for n, v in zip(names, row, strict=True) if v == v},
            }
        )
    return orjson.dumps({"samples": samples, "count": len(samples), "next_cursor": next_cursor})


@router.get(
    "/metrics",
    summary="Read samples in a time range, a page at a time (JSON, or streamed wide CSV)",
    response_model=MetricsOut,
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "headers": {
                NEXT_CURSOR_HEADER: {
                    "description": "Paged CSV only: the cursor of the next page.",
                    "schema": {"type": "string"},
                }
            },
        },
        422: {"model": ErrorResponse},
    },
)
def read_metrics(
    request: Request,
    key: OpsKey,
    state: StateDep,
    account_id: Annotated[list[str] | None, Query(description="Repeatable; default all.")] = None,
    metric: Annotated[list[str] | None, Query(description="Repeatable; default all.")] = None,
    from_: Annotated[
        str | None, Query(alias="from", description="Inclusive; ISO-8601 or epoch seconds.")
    ] = None,
    to: Annotated[str | None, Query(description="Inclusive; ISO-8601 or epoch seconds.")] = None,
    format: Annotated[
        Literal["json", "csv"] | None,
        Query(description="Default JSON; CSV also with 'Accept: text/csv'."),
    ] = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_PAGE_ROWS,
            description=f"Rows per page (JSON default {DEFAULT_PAGE_ROWS:,}). CSV is paged only "
            "when limit or cursor is given; otherwise it streams the whole range.",
        ),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="The next_cursor of the previous page."),
    ] = None,
):
    """Samples of a time range, paged by an opaque cursor.

    Pages are in (ts, account) order and keyed on that position, so paging stays stable while
    ingest continues: every row present at the first page is returned exactly once, and newer
    samples appear on later pages. ``next_cursor`` is null on the last page. CSV (the wide file
    format: ts, account_id, metrics) streams the whole range sorted by (account_id, ts), unless
    ``limit`` or ``cursor`` is given: then it is one page, with the next cursor in the
    ``X-Next-Cursor`` header (absent on the last page).
    """
    from fleetml.store.metrics import read_metrics as store_read
    from fleetml.store.metrics import read_metrics_page

    selection = dict(
        accounts=account_id,
        metrics=metric,
        start=ts_param("from", from_),
        end=ts_param("to", to),
    )
    after = None if cursor is None else decode_cursor(cursor)
    csv = _wants_csv(request, format)
    next_cursor = None
    if csv and limit is None and after is None:
        frame = store_read(state.engine, **selection)
    else:
        frame, next_key = read_metrics_page(
            state.engine, limit=limit or DEFAULT_PAGE_ROWS, after=after, **selection
        )
        next_cursor = None if next_key is None else encode_cursor(next_key)
    names = [c for c in frame.columns if c not in ("ts", "account_id")]
    if csv:
        headers = {"Content-Disposition": 'attachment; filename="metrics.csv"'}
        if next_cursor is not None:
            headers[NEXT_CURSOR_HEADER] = next_cursor
        return StreamingResponse(
            _csv_chunks(frame), media_type="text/csv; charset=utf-8", headers=headers
        )
    return Response(_json_samples(frame, names, next_cursor), media_type="application/json")


@router.get(
    "/metric-kinds", summary="Every known metric and its kind", response_model=MetricKindsOut
)
def get_metric_kinds(key: AnyKey, state: StateDep) -> MetricKindsOut:
    from fleetml.store.metrics import metric_kinds

    return MetricKindsOut(kinds=metric_kinds(state.engine))


@router.put(
    "/metric-kinds",
    summary="Declare metric kinds (gauge or counter)",
    response_model=MetricKindsOut,
    responses={422: {"model": ErrorResponse}},
)
def put_metric_kinds(body: MetricKindsIn, key: AdminKey, state: StateDep) -> MetricKindsOut:
    """Declare or change kinds; names not mentioned keep theirs. Every change is audited.

    An admin setting: a kind changes how every later model reads the metric, so it is
    configuration, not ingest. Without a declaration a name ending in ``_total`` is a counter
    and anything else a gauge.
    """
    from fleetml.store.metrics import declare_metric_kinds

    with state.engine.begin() as conn:
        kinds = declare_metric_kinds(conn, dict(body.kinds), actor=key.name)
    return MetricKindsOut(kinds=kinds)
