"""API fixtures: an app over a fresh store, a client, and one key per role.

Built on tests/conftest.py: ``api`` follows its ``settings``/``engine`` fixtures (SQLite, and
PostgreSQL when FLEETML_TEST_DATABASE_URL is set); ``sqlite_api`` is SQLite only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fleetml.config import Settings


def _make_keys(settings: Settings) -> dict[str, str]:
    from fleetml.store.engine import get_engine
    from fleetml.store.keys import create_key

    out = {}
    with get_engine(settings).begin() as conn:
        for role in ("runtime", "ops", "admin"):
            out[role], _ = create_key(conn, role=role, name=f"test-{role}", actor="pytest")
    return out


class Api:
    """A TestClient plus one key per role: ``api.post(url, as_="runtime", json=...)``."""

    def __init__(self, client: TestClient, keys: dict[str, str], settings: Settings):
        self.client = client
        self.keys = keys
        self.settings = settings

    def headers(self, role: str | None) -> dict[str, str]:
        return {} if role is None else {"Authorization": f"Bearer {self.keys[role]}"}

    def request(self, method: str, url: str, *, as_: str | None = "admin", headers=None, **kw):
        merged = {**self.headers(as_), **(headers or {})}
        return self.client.request(method, url, headers=merged, **kw)

    def get(self, url, **kw):
        return self.request("GET", url, **kw)

    def post(self, url, **kw):
        return self.request("POST", url, **kw)

    def put(self, url, **kw):
        return self.request("PUT", url, **kw)

    def patch(self, url, **kw):
        return self.request("PATCH", url, **kw)

    def delete(self, url, **kw):
        return self.request("DELETE", url, **kw)

    def register(self, *account_ids: str, **fields) -> None:
        """Register accounts as the admin (masters unless ``fields`` say otherwise)."""
        for aid in account_ids:
            resp = self.post("/v1/accounts", json={"account_id": aid, **fields})
            assert resp.status_code == 201, resp.text


def _api(settings: Settings) -> Iterator[Api]:
    from fleetml.api import create_app

    keys = _make_keys(settings)
    with TestClient(create_app(settings)) as client:
        yield Api(client, keys, settings)


@pytest.fixture
def api(settings, engine) -> Iterator[Api]:
    """The API over every configured backend (migrated by the ``engine`` fixture)."""
    yield from _api(settings)


@pytest.fixture
def sqlite_api(sqlite_settings) -> Iterator[Api]:
    """The API over SQLite only."""
    from fleetml.store.engine import dispose_engines, get_engine
    from fleetml.store.migrate import upgrade

    upgrade(get_engine(sqlite_settings))
    yield from _api(sqlite_settings)
    dispose_engines()
