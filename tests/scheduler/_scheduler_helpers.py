"""Helpers for the scheduler's tests: read job runs, wait for a condition with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from fleetml.store.tables import job_runs


def read_runs(engine, **where) -> list[dict]:
    """Every job run (oldest first), optionally filtered by column values."""
    query = sa.select(job_runs).order_by(job_runs.c.id)
    for column, value in where.items():
        query = query.where(job_runs.c[column] == value)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def wait_for(predicate: Callable[[], object], timeout: float, what: str):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
