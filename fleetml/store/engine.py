"""Engine creation: SQLite in WAL mode by default, PostgreSQL through psycopg 3."""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from fleetml.config import Settings, get_settings

_ENGINES: dict[tuple[str, str], Engine] = {}
_LOCK = threading.Lock()


def _sqlite_pragmas(synchronous: str):
    def on_connect(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA cache_size=-65536")
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.close()

    return on_connect


def make_engine(url: str, *, sqlite_synchronous: str = "FULL") -> Engine:
    """Create an engine for ``url``.

    SQLite gets WAL journaling, a busy timeout (so a second writer waits instead of failing) and
    ``synchronous=FULL`` by default, so a committed transaction survives a crash and power loss.
    A ``postgresql://`` URL is rewritten to use the psycopg 3 driver.
    """
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        path = url.split("sqlite:///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        sa.event.listen(engine, "connect", _sqlite_pragmas(sqlite_synchronous))
        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def get_engine(settings: Settings | None = None) -> Engine:
    """The process-wide engine for the configured store (one per database URL)."""
    settings = settings or get_settings()
    if settings.is_sqlite:
        settings.ensure_home()
    key = (settings.db_url, settings.sqlite_synchronous)
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = make_engine(settings.db_url, sqlite_synchronous=settings.sqlite_synchronous)
            _ENGINES[key] = engine
        return engine


def dispose_engines() -> None:
    """Close every cached engine (tests, and before a process forks)."""
    with _LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()
