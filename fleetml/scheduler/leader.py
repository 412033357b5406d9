"""One active scheduler across processes: a leader lock that a killed process gives up by dying.

- PostgreSQL: a session-level advisory lock held on a dedicated connection for the scheduler's
  life. The server drops it when that session ends (the process died, or the connection broke),
  so a leader that loses its connection also loses the lock and must stop scheduling.
- SQLite: an exclusive ``flock`` on ``scheduler.lock`` beside the database file (by default
  ``<home>/scheduler.lock``). The kernel drops it when the process dies, even by ``kill -9``.
  Do not delete the file while a worker runs: a new file would be a second, free lock.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from fleetml.config import Settings

log = logging.getLogger("fleetml.scheduler")

#: The advisory lock key: fixed, derived from a name so it cannot collide with small integers
#: another application might use. Advisory locks are per database, so two fleetml databases on
#: one server each get their own scheduler.
PG_LOCK_KEY = int.from_bytes(hashlib.sha256(b"fleetml.scheduler").digest()[:8], "big", signed=True)


class LeaderLock(Protocol):
    """A lock at most one process holds; acquisition never blocks."""

    def try_acquire(self) -> bool:
        """Take the lock if free; True when this process now holds it."""

    def still_held(self) -> bool:
        """Whether the lock is still ours (False once the underlying session is gone)."""

    def release(self) -> None:
        """Give the lock up (a no-op when not held)."""

    def describe(self) -> str:
        """What the lock is, for logs."""


class FileLeaderLock:
    """An exclusive lock on a file (``flock`` through the ``filelock`` package)."""

    def __init__(self, path: str | Path) -> None:
        from filelock import FileLock

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Not thread-local: the standby loop acquires and the stopping thread may release.
        self._lock = FileLock(str(self.path), thread_local=False)

    def try_acquire(self) -> bool:
        from filelock import Timeout

        if self._lock.is_locked:
            return True
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        return True

    def still_held(self) -> bool:
        return self._lock.is_locked and self.path.exists()

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release(force=True)

    def describe(self) -> str:
        return f"lock file {self.path}"


class PgAdvisoryLock:
    """A session-level ``pg_try_advisory_lock`` held on its own connection."""

    def __init__(self, engine: Engine, key: int = PG_LOCK_KEY) -> None:
        self.engine = engine
        self.key = key
        self._conn: sa.Connection | None = None

    def try_acquire(self) -> bool:
        if self._conn is not None:
            return self.still_held()
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = bool(
                conn.execute(
                    sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}
                ).scalar_one()
            )
        except Exception:
            conn.invalidate()
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def still_held(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute(sa.text("SELECT 1")).scalar_one()
        except Exception as exc:  # noqa: BLE001 - any failure means the session (and lock) is gone
            log.error("the PostgreSQL session holding the scheduler lock broke: %s", exc)
            self._drop()
            return False
        return True

    def release(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        except Exception as exc:  # noqa: BLE001 - closing the session below releases it anyway
            log.warning(
                "could not unlock the scheduler lock cleanly (%s); closing the session", exc
            )
        self._drop()

    def _drop(self) -> None:
        # Never hand a session that may hold the lock back to the pool: close it for real.
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except Exception:  # noqa: BLE001 - the connection is being thrown away
                log.debug("closing the scheduler lock connection failed", exc_info=True)

    def describe(self) -> str:
        return f"PostgreSQL advisory lock {self.key}"


def lock_file_path(settings: Settings) -> Path:
    """``scheduler.lock`` beside the SQLite database (``<home>/scheduler.lock`` by default)."""
    url = sa.engine.make_url(settings.db_url)
    database = url.database
    if not database or database == ":memory:":
        return settings.home_path / "scheduler.lock"
    return Path(database).expanduser().resolve().parent / "scheduler.lock"


def leader_lock_for(settings: Settings, engine: Engine) -> LeaderLock:
    """The leader lock that fits the store: advisory lock on PostgreSQL, lock file on SQLite."""
    if engine.dialect.name == "postgresql":
        return PgAdvisoryLock(engine)
    if engine.dialect.name == "sqlite":
        return FileLeaderLock(lock_file_path(settings))
    raise ValueError(
        f"no scheduler leader lock for the {engine.dialect.name!r} database; "
        "use SQLite or PostgreSQL"
    )
