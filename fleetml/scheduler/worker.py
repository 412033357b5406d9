"""The scheduler worker: APScheduler jobs run by whichever process holds the leader lock.

A :class:`Worker` is *standby* until it takes the leader lock (polling every ``poll_s``), then
*active*: it marks runs left ``running`` by dead leaders as interrupted, starts a
``BackgroundScheduler`` (and the alert notification sender, when receivers are configured, so
exactly one process delivers the outbox) and checks every ``poll_s`` that the lock is still its
own. Losing it
(PostgreSQL connection gone) stops the schedule and goes back to standby. Stopping finishes the
jobs that are running, then releases the lock.

Each job has ``max_instances=1`` (a slow run is never doubled; the tick that found it busy is
recorded as ``skipped``) and ``coalesce=True`` (runs missed while busy collapse into one).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobSubmissionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.engine import Engine

from fleetml.config import Settings
from fleetml.scheduler.jobs import Job, resolve_jobs, run_recorded
from fleetml.scheduler.leader import LeaderLock, leader_lock_for
from fleetml.store.jobs import interrupt_stale_runs, record_skipped, this_host

log = logging.getLogger("fleetml.scheduler")

#: Seconds between a standby's attempts to take the lock (and the leader's lock checks).
POLL_ENV = "FLEETML_WORKER_POLL_S"
DEFAULT_POLL_S = 1.0
#: Set to "1" by ``fleetml serve --worker``: the API process then runs an embedded worker.
SERVE_WORKER_ENV = "FLEETML_SERVE_WORKER"
#: A nightly retrain may start this late (worker restarted around its time) and still run.
RETRAIN_GRACE_S = 3600


@dataclass(frozen=True)
class Schedule:
    """When a job runs: its trigger, how late it may still start, and whether to run at once."""

    trigger: BaseTrigger
    misfire_grace_s: int
    run_at_start: bool = False


def default_schedules(settings: Settings) -> dict[str, Schedule]:
    """The live loop's schedule from ``settings`` (all in UTC).

    ``score`` also runs as soon as a worker becomes active, so a new leader does not leave the
    fleet unscored for a whole period. Interval jobs may start up to one period late.
    """
    return {
        "score": Schedule(_every(settings.score_every_s), _grace(settings.score_every_s), True),
        "forecast": Schedule(_every(settings.forecast_every_s), _grace(settings.forecast_every_s)),
        "retrain": Schedule(cron_trigger(settings.retrain_cron), RETRAIN_GRACE_S),
        "retention": Schedule(
            _every(settings.retention_every_s), _grace(settings.retention_every_s)
        ),
        "recommend": Schedule(
            _every(settings.recommend_every_s), _grace(settings.recommend_every_s)
        ),
    }


def cron_trigger(expr: str) -> CronTrigger:
    """A UTC trigger from a crontab line (minute hour day month weekday)."""
    try:
        return CronTrigger.from_crontab(expr, timezone=UTC)
    except ValueError as exc:
        raise ValueError(
            f"retrain_cron {expr!r} is not a crontab line (minute hour day month weekday, "
            f"e.g. '30 3 * * *'): {exc}; fix FLEETML_RETRAIN_CRON"
        ) from exc


def poll_from_env(default: float = DEFAULT_POLL_S) -> float:
    """``$FLEETML_WORKER_POLL_S`` as a positive float, else ``default``."""
    raw = os.environ.get(POLL_ENV)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{POLL_ENV}={raw!r}: expected a positive number of seconds")
    return value


class Worker:
    """Runs the scheduler while holding the leader lock; stands by otherwise.

    Parameters
    ----------
    settings, engine
        The store the jobs work on and the settings they read.
    jobs
        Job name -> callable returning a JSON-able dict of counts. Default: the live loop's jobs
        (:func:`fleetml.scheduler.jobs.default_jobs`). Tests inject fakes here.
    schedules
        Job name -> :class:`Schedule`; default :func:`default_schedules`. Every job needs one.
    lock
        The leader lock; default :func:`fleetml.scheduler.leader.leader_lock_for`.
    poll_s
        Seconds between lock attempts while standby and lock checks while active.
    notifier_factory
        Builds the outbox sender run while active (an object with ``start()``, ``stop()`` and
        ``wake()``), a new one per leadership term; default a
        :class:`fleetml.services.notify.Notifier` when ``alert_webhooks`` or
        ``alertmanager_url`` are set, else no sender.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        jobs: Mapping[str, Job] | None = None,
        *,
        schedules: Mapping[str, Schedule] | None = None,
        lock: LeaderLock | None = None,
        poll_s: float = DEFAULT_POLL_S,
        notifier_factory: Callable[[], object] | None = None,
    ) -> None:
        if not poll_s > 0:
            raise ValueError(f"poll_s must be positive, got {poll_s}")
        self.settings = settings
        self.engine = engine
        factory = notifier_factory or _default_notifier_factory(settings, engine)
        self.notifier = _Sender(factory) if factory is not None else None
        self.jobs: dict[str, Job] = dict(
            jobs if jobs is not None else resolve_jobs(settings, engine, notifier=self.notifier)
        )
        schedules = dict(schedules if schedules is not None else default_schedules(settings))
        unscheduled = sorted(set(self.jobs) - set(schedules))
        if unscheduled:
            raise ValueError(
                f"no schedule for job(s) {', '.join(unscheduled)}; "
                f"schedules exist for {', '.join(sorted(schedules))}"
            )
        self.schedules = {name: schedules[name] for name in self.jobs}
        self.lock = lock if lock is not None else leader_lock_for(settings, engine)
        self.poll_s = poll_s
        self.is_active = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- one job, now

    def run_once(self, job: str) -> dict:
        """Run ``job`` now in this thread, recorded like a scheduled run (no leader lock)."""
        if job not in self.jobs:
            raise ValueError(f"unknown job {job!r}; jobs: {', '.join(self.jobs)}")
        return run_recorded(self.engine, job, self.jobs[job])

    # ---- the scheduler's life

    def run(self) -> None:
        """Stand by or lead until :meth:`request_stop`; returns with the lock released."""
        announced_standby = False
        while not self._stop.is_set():
            try:
                acquired = self.lock.try_acquire()
            except Exception as exc:  # noqa: BLE001 - the database may come back: keep polling
                log.warning("standby: cannot reach %s (%s)", self.lock.describe(), exc)
                acquired = False
            if not acquired:
                if not announced_standby:
                    log.info(
                        "standby: %s is held by another scheduler; trying every %.1f s",
                        self.lock.describe(),
                        self.poll_s,
                    )
                    announced_standby = True
                self._stop.wait(self.poll_s)
                continue
            announced_standby = False
            self._lead()
        log.info("scheduler stopped")

    def request_stop(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler); running jobs finish first."""
        self._stop.set()

    def start(self) -> None:
        """Run :meth:`run` in a background thread (the API's embedded worker)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="fleetml-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the background thread: finish running jobs, release the lock, then return."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning(
                    "the scheduler did not stop within %s s (a job is still running)", timeout
                )

    def _lead(self) -> None:
        log.info(
            "active: this process (host %s, pid %d) holds %s and runs the schedule: %s",
            this_host(),
            os.getpid(),
            self.lock.describe(),
            ", ".join(self.jobs),
        )
        scheduler: BackgroundScheduler | None = None
        lost = False
        try:
            for job in self.jobs.values():
                # a job that keeps state between runs drops it: while this process stood by,
                # another leader may have acted (its state is in the store, read back anew)
                fresh_start = getattr(job, "on_leadership", None)
                if callable(fresh_start):
                    fresh_start()
            interrupted = interrupt_stale_runs(self.engine)
            if interrupted:
                log.warning("marked %d run(s) of dead schedulers as interrupted", interrupted)
            scheduler = self._scheduler()
            scheduler.start()
            if self.notifier is not None:
                self.notifier.start()
            self.is_active = True
            while not self._stop.wait(self.poll_s):
                if not self.lock.still_held():
                    lost = True
                    log.error(
                        "lost %s: stopping the schedule and going back to standby",
                        self.lock.describe(),
                    )
                    break
        except Exception:  # noqa: BLE001 - e.g. the database went away: back to standby
            log.exception("the active scheduler failed; releasing the lock and standing by")
            self._stop.wait(self.poll_s)
        finally:
            self.is_active = False
            if scheduler is not None and scheduler.running:
                # Lost the lock: another leader may already run; do not wait on our jobs.
                scheduler.shutdown(wait=not lost)
            if self.notifier is not None:
                self.notifier.stop()
            self.lock.release()
            log.info("released %s", self.lock.describe())

    def _scheduler(self) -> BackgroundScheduler:
        scheduler = BackgroundScheduler(
            timezone=UTC,
            # One thread per job: a long retrain never delays a score tick.
            executors={"default": ThreadPoolExecutor(max_workers=max(1, len(self.jobs)))},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        for name, schedule in self.schedules.items():
            extra = {"next_run_time": datetime.now(UTC)} if schedule.run_at_start else {}
            scheduler.add_job(
                self._run_scheduled,
                schedule.trigger,
                args=(name,),
                id=name,
                name=name,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=schedule.misfire_grace_s,
                **extra,
            )
        scheduler.add_listener(self._on_not_run, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        return scheduler

    def _run_scheduled(self, name: str) -> None:
        try:
            run_recorded(self.engine, name, self.jobs[name])
        except Exception:  # noqa: BLE001 - only recording failed (database down); keep going
            log.exception("job %s: could not record its run (is the database reachable?)", name)

    def _on_not_run(self, event: JobSubmissionEvent) -> None:
        if event.code == EVENT_JOB_MAX_INSTANCES:
            reason = "skipped: the previous run was still running"
        else:
            grace = self.schedules[event.job_id].misfire_grace_s
            reason = (
                f"missed: due at {event.scheduled_run_time.isoformat()} but could not start "
                f"within {grace} s"
            )
        log.warning("job %s %s", event.job_id, reason)
        try:
            record_skipped(self.engine, job=event.job_id, reason=reason)
        except Exception:  # noqa: BLE001 - a log line already says it
            log.exception("job %s: could not record the skipped run", event.job_id)


def start_embedded_worker(settings: Settings, engine: Engine) -> Worker:
    """Start a worker in a background thread of this process (``fleetml serve --worker``).

    Jobs come from ``$FLEETML_WORKER_JOBS`` when set, else the defaults; the poll interval from
    ``$FLEETML_WORKER_POLL_S``. Call ``.stop()`` on the result at shutdown.
    """
    if not log.handlers and not logging.getLogger().handlers:
        # uvicorn configures only its own loggers: make "active"/"standby" visible anyway.
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    worker = Worker(settings, engine, poll_s=poll_from_env())
    worker.start()
    return worker


class _Sender:
    """The outbox sender of the current leadership term (a stopped Notifier cannot restart).

    The score tick holds this object and calls :meth:`wake`; while standby that is a no-op.
    """

    def __init__(self, factory: Callable[[], object]) -> None:
        self.factory = factory
        self.current = None

    def start(self) -> None:
        self.current = self.factory()
        self.current.start()

    def stop(self) -> None:
        current, self.current = self.current, None
        if current is not None:
            current.stop()

    def wake(self) -> None:
        current = self.current
        if current is not None:
            current.wake()


def _default_notifier_factory(settings: Settings, engine: Engine) -> Callable[[], object] | None:
    from fleetml.services.action_hooks import with_action_hooks
    from fleetml.services.notify import Notifier, targets

    if not targets(settings):
        return with_action_hooks(None, settings, engine)
    return with_action_hooks(lambda: Notifier(engine, settings), settings, engine)


def _every(seconds: float) -> IntervalTrigger:
    return IntervalTrigger(seconds=seconds, timezone=UTC)


def _grace(period_s: float) -> int:
    return max(1, round(period_s))
