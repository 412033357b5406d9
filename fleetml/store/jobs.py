"""Job runs: one row per scheduler job run, inserted as ``running`` and updated when it ends.

A run is written twice on purpose: a process killed mid-run leaves its row ``running``, so the
kill stays visible until the next leader marks it interrupted (:func:`interrupt_stale_runs`).
:func:`execute_run` and :func:`recorded_run` wrap a callable in that bookkeeping: the scheduler's
jobs and ``fleetml tick`` are recorded the same way.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from fleetml.schemas.jobs import JobOutcome
from fleetml.store.audit import connect, now_ms
from fleetml.store.tables import job_runs

log = logging.getLogger("fleetml.jobs")

#: The text recorded on runs whose process died before they ended.
INTERRUPTED = "interrupted: the process running this job died before it ended"
#: Longest error text kept per run (a traceback tail, a subprocess's stderr tail).
MAX_ERROR_CHARS = 4000


class JobSkipped(Exception):
    """The job had nothing to do; the message says why (recorded as ``skipped``)."""


class JobFailed(Exception):
    """The job failed but still has counts worth recording (e.g. one of two trainings)."""

    def __init__(self, message: str, counts: dict | None = None) -> None:
        super().__init__(message)
        self.counts = counts


@dataclass
class RunResult:
    """How one recorded run ended; ``value`` is what the callable returned (None on failure)."""

    id: int
    job: str
    outcome: JobOutcome
    error: str | None
    counts: Any
    seconds: float
    value: Any = None
    exception: BaseException | None = None

    def as_dict(self) -> dict:
        """The JSON-able summary (what ``fleetml worker --once`` prints)."""
        return {
            "id": self.id,
            "job": self.job,
            "outcome": self.outcome.value,
            "error": self.error,
            "counts": self.counts,
            "seconds": self.seconds,
        }


def execute_run(bind, job: str, func: Callable[[], Any]) -> RunResult:
    """Run ``func`` as job ``job``, recorded in ``job_runs``; an Exception it raises is recorded
    and returned in the result, not raised.

    ``func`` returns a JSON-able dict of counts (or None); raises :class:`JobSkipped` when there
    was nothing to do, :class:`JobFailed` to fail with counts, anything else to fail. A
    KeyboardInterrupt or SystemExit is recorded as an error, then raised.
    """
    run_id = start_run(bind, job=job)
    started = time.monotonic()
    value: Any = None
    counts: Any = None
    error: str | None = None
    caught: BaseException | None = None
    try:
        value = counts = func()
        outcome = JobOutcome.OK
    except JobSkipped as exc:
        outcome, error, caught = JobOutcome.SKIPPED, str(exc) or "skipped", exc
    except JobFailed as exc:
        outcome, error, counts, caught = JobOutcome.ERROR, str(exc), exc.counts, exc
        log.error("job %s failed: %s", job, exc)
    except BaseException as exc:  # noqa: BLE001 - recorded; non-Exceptions raised again below
        outcome, error, caught = JobOutcome.ERROR, _describe(exc), exc
        log.error("job %s failed", job, exc_info=exc)
    counts = _jsonable(counts)
    if error is not None and len(error) > MAX_ERROR_CHARS:
        error = error[: MAX_ERROR_CHARS - 3] + "..."
    finish_run(bind, run_id=run_id, outcome=outcome, error=error, counts=counts)
    seconds = round(time.monotonic() - started, 3)
    log.info("job %s: %s in %.1f s", job, outcome.value, seconds)
    if caught is not None and not isinstance(caught, Exception):
        raise caught
    return RunResult(run_id, job, outcome, error, counts, seconds, value, caught)


def recorded_run(bind, job: str, func: Callable[[], Any]) -> Any:
    """Run ``func`` recorded as job ``job``; return what it returned, or raise what it raised
    (after recording it). For one-shot commands such as ``fleetml tick``."""
    result = execute_run(bind, job, func)
    if result.exception is not None:
        raise result.exception
    return result.value


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


def _describe(exc: BaseException) -> str:
    """The error text of a run: type and message, then the traceback's last frames."""
    head = f"{type(exc).__name__}: {exc}"
    frames = "".join(traceback.format_tb(exc.__traceback__)[-3:])
    return f"{head}\n{frames}".strip()


def _jsonable(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        value = {"result": value}
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return str(obj)
