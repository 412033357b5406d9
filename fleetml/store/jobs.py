"""Job runs: one row per scheduler job run, inserted as ``running`` and updated when it ends.

A run is written twice on purpose: a process killed mid-run leaves its row ``running``, so the
kill stays visible until the next leader marks it interrupted (:func:`interrupt_stale_runs`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import sqlalchemy as sa

from fleetml.schemas.jobs import JobOutcome
from fleetml.store.audit import connect, now_ms
from fleetml.store.tables import job_runs

#: The text recorded on runs whose process died before they ended.
INTERRUPTED = "interrupted: the process running this job died before it ended"


def this_host() -> str:
    """The host name recorded with every run (truncated to the column's width)."""
    return socket.gethostname()[:128]


def start_run(
    bind,
    *,
    job: str,
    started_at: int | None = None,
    host: str | None = None,
    pid: int | None = None,
) -> int:
    """Insert a ``running`` row for ``job`` and return its id (commits at once)."""
    values = {
        "job": job,
        "started_at": now_ms() if started_at is None else started_at,
        "outcome": JobOutcome.RUNNING.value,
        "host": this_host() if host is None else host,
        "pid": os.getpid() if pid is None else pid,
    }
    with _begin(bind) as conn:
        return int(conn.execute(job_runs.insert().values(values)).inserted_primary_key[0])


def finish_run(
    bind,
    *,
    run_id: int,
    outcome: JobOutcome | str,
    error: str | None = None,
    counts: dict | None = None,
    ended_at: int | None = None,
) -> None:
    """Record how run ``run_id`` ended (whatever it was marked meanwhile: the runner knows best)."""
    outcome = JobOutcome(outcome)
    if outcome is JobOutcome.RUNNING:
        raise ValueError("a finished run needs an outcome other than 'running'")
    with _begin(bind) as conn:
        conn.execute(
            job_runs.update()
            .where(job_runs.c.id == run_id)
            .values(
                ended_at=now_ms() if ended_at is None else ended_at,
                outcome=outcome.value,
                error=error,
                counts=counts,
            )
        )


def record_skipped(bind, *, job: str, reason: str) -> int:
    """Record a run that never started (previous run still busy, or too late to start)."""
    ts = now_ms()
    values = {
        "job": job,
        "started_at": ts,
        "ended_at": ts,
        "outcome": JobOutcome.SKIPPED.value,
        "error": reason,
        "host": this_host(),
        "pid": os.getpid(),
    }
    with _begin(bind) as conn:
        return int(conn.execute(job_runs.insert().values(values)).inserted_primary_key[0])


def interrupt_stale_runs(bind, *, host: str | None = None, pid: int | None = None) -> int:
    """Mark ``running`` rows of dead processes as ``error: interrupted``; return how many.

    Called by a scheduler that just became leader. On this host a row's process is checked
    directly; a row from another host is taken as dead, since its leader gave up the lock. A run
    wrongly marked that way (``fleetml worker --once`` on another host at that very moment)
    corrects itself: :func:`finish_run` overwrites the outcome when the run ends.
    """
    host = this_host() if host is None else host
    pid = os.getpid() if pid is None else pid
    with _begin(bind) as conn:
        rows = conn.execute(
            sa.select(job_runs.c.id, job_runs.c.host, job_runs.c.pid).where(
                job_runs.c.outcome == JobOutcome.RUNNING.value
            )
        ).all()
        dead = [r.id for r in rows if r.host != host or (r.pid != pid and not _pid_alive(r.pid))]
        if dead:
            conn.execute(
                job_runs.update()
                .where(job_runs.c.id.in_(dead), job_runs.c.outcome == JobOutcome.RUNNING.value)
                .values(ended_at=now_ms(), outcome=JobOutcome.ERROR.value, error=INTERRUPTED)
            )
    return len(dead)


def list_runs(
    bind,
    *,
    job: str | None = None,
    outcome: JobOutcome | str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[dict]:
    """Job runs, newest first (by id); ``before_id`` pages past rows already seen."""
    query = sa.select(job_runs).order_by(job_runs.c.id.desc()).limit(limit)
    if job:
        query = query.where(job_runs.c.job == job)
    if outcome:
        query = query.where(job_runs.c.outcome == JobOutcome(outcome).value)
    if before_id is not None:
        query = query.where(job_runs.c.id < before_id)
    with connect(bind) as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def _pid_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except OSError:
        return False
    # A killed process stays a zombie until its parent reaps it, but it holds no lock and runs
    # nothing: count it dead (Linux shows the state in /proc; elsewhere assume alive).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


class _begin:
    """A transaction on an Engine, or the caller's Connection as is (the caller commits)."""

    def __init__(self, bind):
        self.bind = bind
        self.ctx = None

    def __enter__(self) -> sa.Connection:
        if isinstance(self.bind, sa.Connection):
            return self.bind
        self.ctx = self.bind.begin()
        return self.ctx.__enter__()

    def __exit__(self, *exc):
        if self.ctx is not None:
            return self.ctx.__exit__(*exc)
        return False
