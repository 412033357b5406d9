"""Metric samples on the wire.

The ingest endpoint does not build these models per sample (too slow at 100k samples a second);
they document the body in OpenAPI and serve clients that want typed shapes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Timestamp = str | float | int


class MetricSample(BaseModel):
    """One sample of one account: metric values observed at one time."""

    account_id: str = Field(
        max_length=128, pattern=r"^[A-Za-z0-9_.:@+\-]{1,128}$", examples=["wa-0001"]
    )
    ts: Timestamp = Field(
        description="ISO-8601 (naive means UTC, 'Z' accepted) or epoch seconds.",
        examples=["2026-01-31T12:00:00Z", 1769860800.0],
    )
    values: dict[str, float | None] = Field(
        description="Metric name -> finite number, or null when not observed (not stored). "
        "Names match ^[A-Za-z_][A-Za-z0-9_]{0,63}$; a name ending in _total is a counter "
        "unless declared otherwise.",
        examples=[
            {"cpu_pct": 41.5, "queue_depth": 3, "messages_sent_total": 18250, "rtt_ms": None}
        ],
    )


class MetricBatchIn(BaseModel):
    """A metrics batch: all-or-nothing, idempotent on (account, ts, metric)."""

    samples: list[MetricSample]


class IngestResult(BaseModel):
    """What a 2xx ingest answer means: these samples are durably committed."""

    samples: int = Field(description="Samples received in the batch.")
    rows: int = Field(description="(account, ts) rows written (duplicates merged, empty skipped).")
    values: int = Field(description="Non-null metric values written.")
    registered: list[str] = Field(
        default_factory=list, description="Accounts registered by this batch (?register=true)."
    )


class MetricsOut(BaseModel):
    """A page of a range read in the ingest shape; a metric missing from ``values`` was not
    observed. Pass ``next_cursor`` as ``cursor`` for the next page."""

    samples: list[MetricSample]
    count: int
    next_cursor: str | None = Field(
        default=None, description="Opaque cursor of the next page; null on the last page."
    )


MetricKindName = Literal["gauge", "counter"]


class MetricKindsIn(BaseModel):
    """Declare (or change) the kind of metrics: counters are cumulative and may reset."""

    kinds: dict[str, MetricKindName] = Field(
        examples=[{"messages_sent_total": "counter", "cpu_pct": "gauge"}]
    )


class MetricKindsOut(BaseModel):
    kinds: dict[str, MetricKindName]
