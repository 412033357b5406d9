"""Scheduler fixtures: a client for ``GET /v1/jobs`` with one key per role."""

from __future__ import annotations

import pytest


@pytest.fixture
def jobs_api(settings, engine):
    """(TestClient, {role: key}) over the parametrised store."""
    from fastapi.testclient import TestClient

    from fleetml.api import create_app
    from fleetml.store.keys import create_key

    keys = {}
    with engine.begin() as conn:
        for role in ("runtime", "ops", "admin"):
            keys[role], _ = create_key(conn, role=role, name=f"test-{role}", actor="pytest")
    with TestClient(create_app(settings, engine=engine)) as client:
        yield client, keys
