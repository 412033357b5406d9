"""Shapes shared by every endpoint: the error answer."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorItem(BaseModel):
    """One bad item: its position in the batch (null for request-level problems), field, reason."""

    index: int | None = Field(default=None, examples=[3])
    field: str = Field(examples=["values.cpu_pct"])
    reason: str = Field(examples=["NaN is not a finite number"])


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer: a sentence saying what went wrong and, for batches, every bad item."""

    detail: str
    error_count: int | None = None
    errors: list[ErrorItem] = Field(default_factory=list)
