"""Shared fixtures: an isolated home folder, and stores on SQLite and (when configured) PostgreSQL.

PostgreSQL tests run when ``FLEETML_TEST_DATABASE_URL`` points at a server (``.ci/run`` sets it):
the session creates a scratch database there, migrates it once, and truncates it between tests.
"""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from fleetml.config import Settings, reset_settings
from fleetml.store.tables import metadata

PG_ENV = "FLEETML_TEST_DATABASE_URL"
#: Every table of the store (truncated between PostgreSQL tests): from the metadata, so a new
#: table cannot carry one test's rows into the next.
_TABLES = tuple(t.name for t in metadata.sorted_tables)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """Every test gets its own home folder and a clean settings cache; MLflow never phones home."""
    for name in list(os.environ):
        if name.startswith("FLEETML_") and name != PG_ENV:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("FLEETML_HOME", str(tmp_path / "home"))
    reset_settings()
    yield
    reset_settings()


@pytest.fixture
def home(tmp_path):
    """The test's home folder (also exported as FLEETML_HOME)."""
    path = tmp_path / "home"
    path.mkdir(exist_ok=True)
    return path


def _pg_url(base: str, dbname: str) -> str:
    url = sa.engine.make_url(base)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.set(database=dbname).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_database_url():
    """A scratch PostgreSQL database for this test session, migrated; dropped at the end."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set; PostgreSQL tests need a server")
    from fleetml.store.engine import make_engine
    from fleetml.store.migrate import upgrade

    name = f"fleetml_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(
        _pg_url(base, sa.engine.make_url(base).database or "postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = _pg_url(base, name)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    from fleetml.store.engine import dispose_engines

    dispose_engines()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE " + ", ".join(_TABLES) + " RESTART IDENTITY"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request) -> str:
    """Parametrises a test over both store engines."""
    return request.param


@pytest.fixture
def settings(backend, home, request, monkeypatch) -> Settings:
    """Settings for the test's store: SQLite under the home folder, or the PostgreSQL scratch DB."""
    from fleetml.store.migrate import forget_upgrades

    forget_upgrades()
    if backend == "postgres":
        url = request.getfixturevalue("pg_database_url")
        _truncate(url)
        monkeypatch.setenv("FLEETML_DATABASE_URL", url)
    reset_settings()
    from fleetml.config import get_settings

    return get_settings()


@pytest.fixture
def sqlite_settings(home) -> Settings:
    """Settings on the embedded SQLite store only (for tests that need files or processes)."""
    from fleetml.config import get_settings
    from fleetml.store.migrate import forget_upgrades

    forget_upgrades()
    return get_settings()


@pytest.fixture
def engine(settings):
    """A migrated engine for the parametrised store."""
    from fleetml.store.engine import get_engine
    from fleetml.store.migrate import upgrade

    eng = get_engine(settings)
    upgrade(eng)
    yield eng
    from fleetml.store.engine import dispose_engines

    dispose_engines()
