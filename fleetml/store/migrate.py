"""Alembic migrations, run programmatically (``fleetml db upgrade``, and on every start)."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

_MIGRATIONS = Path(__file__).with_name("migrations")
_UPGRADED: set[str] = set()
_LOCK = threading.Lock()


def _config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


@functools.cache
def head_revision() -> str:
    """The newest revision this version of fleetml knows."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for an empty database)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Bring the database to ``revision`` (default: the newest). Returns the revision reached.

    Cheap when already current (checked once per process and URL), so every entry point calls it.
    """
    key = engine.url.render_as_string(hide_password=False)
    with _LOCK:
        if revision == "head" and key in _UPGRADED:
            return head_revision()
        if current_revision(engine) != head_revision() or revision != "head":
            cfg = _config(engine)
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # Several API replicas may start at once: one migrates, the others wait.
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
        if revision == "head":
            _UPGRADED.add(key)
    return current_revision(engine)


def forget_upgrades() -> None:
    """Tests: make the next :func:`upgrade` check the database again."""
    with _LOCK:
        _UPGRADED.clear()
