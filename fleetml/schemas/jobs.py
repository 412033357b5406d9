"""Scheduler job runs on the wire (``GET /v1/jobs``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class JobOutcome(StrEnum):
    """How a job run ended. ``running`` stays visible when the process running it was killed."""

    RUNNING = "running"
    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"


class JobRunOut(BaseModel):
    """One run of a scheduler job (score, forecast, retrain, retention) or of ``fleetml tick``."""

    id: int
    job: str = Field(examples=["score"])
    started_at: str = Field(examples=["2026-01-31T12:00:00.000Z"])
    ended_at: str | None = Field(default=None, description="Null while the run is running.")
    duration_s: float | None = None
    outcome: JobOutcome
    error: str | None = Field(default=None, description="Why it failed or was skipped.")
    counts: Any = Field(default=None, description="What the run counted (job specific JSON).")
    host: str | None = None
    pid: int | None = None


class JobRunsOut(BaseModel):
    """A page of job runs, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    runs: list[JobRunOut]
    count: int
    next_cursor: str | None = Field(
        default=None, description="Opaque; null when this page is the last one."
    )
