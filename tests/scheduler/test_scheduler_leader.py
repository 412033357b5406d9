"""Leader locks: one holder at a time, released by release() or by the holder's session ending."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fleetml.scheduler.leader import (
    FileLeaderLock,
    PgAdvisoryLock,
    leader_lock_for,
    lock_file_path,
)


def test_lock_file_sits_beside_the_sqlite_database(sqlite_settings, tmp_path):
    assert lock_file_path(sqlite_settings) == sqlite_settings.home_path / "scheduler.lock"
    other = sqlite_settings.model_copy(update={"database_url": f"sqlite:///{tmp_path}/x/f.db"})
    assert lock_file_path(other) == tmp_path / "x" / "scheduler.lock"


def test_file_lock_has_one_holder_at_a_time(tmp_path):
    a, b = FileLeaderLock(tmp_path / "s.lock"), FileLeaderLock(tmp_path / "s.lock")
    assert a.try_acquire()
    assert a.try_acquire()  # taking it again is a no-op
    assert not b.try_acquire()
    assert a.still_held() and not b.still_held()
    a.release()
    assert not a.still_held()
    assert b.try_acquire()
    b.release()


@pytest.mark.postgres
def test_advisory_lock_is_exclusive_and_lost_with_its_session(pg_database_url):
    from fleetml.store.engine import make_engine

    engine_a, engine_b = make_engine(pg_database_url), make_engine(pg_database_url)
    a, b = PgAdvisoryLock(engine_a, key=4242), PgAdvisoryLock(engine_b, key=4242)
    try:
        assert a.try_acquire()
        assert not b.try_acquire()
        assert a.still_held()
        a.release()
        assert b.try_acquire()

        # The holder's session dies (server restart, network): the lock goes with it.
        with engine_a.connect() as conn:
            pid = b._conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        assert not b.still_held()
        assert a.try_acquire()
        a.release()
    finally:
        a.release()
        b.release()
        engine_a.dispose()
        engine_b.dispose()


def test_leader_lock_fits_the_store(settings, engine):
    lock = leader_lock_for(settings, engine)
    expected = PgAdvisoryLock if engine.dialect.name == "postgresql" else FileLeaderLock
    assert isinstance(lock, expected)
