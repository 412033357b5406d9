"""Account events on the wire."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from fleetml.schemas.metrics import Timestamp


class EventIn(BaseModel):
    account_id: str = Field(max_length=128, examples=["wa-0001"])
    ts: Timestamp = Field(description="ISO-8601 (naive means UTC) or epoch seconds.")
    kind: str = Field(description="One of GET /v1/event-kinds.", examples=["disconnect"])
    detail: str | dict[str, Any] | None = Field(
        default=None, description="Free text or a JSON object (stored as its JSON text)."
    )


class EventBatchIn(BaseModel):
    """An events batch: all-or-nothing; (account, ts, kind) is unique, a replay updates detail."""

    events: list[EventIn]


class EventOut(BaseModel):
    account_id: str
    ts: str
    kind: str
    detail: str | None = None
    source: str | None = None


class EventsOut(BaseModel):
    events: list[EventOut]
    count: int


class EventIngestResult(BaseModel):
    events: int
    registered: list[str] = Field(default_factory=list)


class EventKind(BaseModel):
    kind: str
    category: Literal["fault", "enforcement", "operation"]
    description: str


class EventKindsOut(BaseModel):
    kinds: list[EventKind]
