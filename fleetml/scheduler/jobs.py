"""The scheduler's jobs and how a run is recorded.

A job is a callable taking no arguments and returning a JSON-able dict of counts (or None). It
raises :class:`JobSkipped` when there was nothing to do, :class:`JobFailed` to fail while still
reporting counts, or any exception to fail. The jobs call the library and hold no logic:

- ``score``: one cycle of :class:`fleetml.services.tick.LiveLoop` (one loop per worker, so
  per-account state survives between ticks);
- ``forecast``: :func:`fleetml.services.forecasting.refresh_forecasts`;
- ``retrain``: ``fleetml train anomaly`` then ``fleetml train risk`` in subprocesses on the last
  ``retrain_history_s`` of history (the scheduler never imports :mod:`fleetml.training`; the
  training CLI applies the promotion gate);
- ``retention``: :func:`fleetml.services.retention.apply_retention`;
- ``recommend``: :func:`fleetml.services.recommend.refresh_recommendations` (a failed generator
  fails the run, with the counts of the others).

:class:`JobSkipped` and :class:`JobFailed` are re-exported from :mod:`fleetml.store.jobs`.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

from fleetml.config import Settings
from fleetml.store.jobs import JobFailed, JobSkipped, execute_run

__all__ = [
    "JOB_NAMES",
    "JOBS_ENV",
    "JobFailed",
    "JobSkipped",
    "ScoreJob",
    "default_jobs",
    "last_json_line",
    "resolve_jobs",
    "retrain",
    "run_recorded",
    "train_command",
]

log = logging.getLogger("fleetml.scheduler")

Job = Callable[[], dict | None]

#: Job names in the order the worker schedules them.
JOB_NAMES: tuple[str, ...] = ("score", "forecast", "retrain", "retention", "recommend")
#: Model families the nightly retrain trains, in order.
RETRAIN_FAMILIES: tuple[str, ...] = ("anomaly", "risk")
#: ``module:attribute`` of a job table (a mapping of name -> job, or a factory
#: ``(settings, engine) -> mapping``) that replaces the default jobs; for tests and scripts.
JOBS_ENV = "FLEETML_WORKER_JOBS"


def run_recorded(engine: Engine, job: str, func: Job) -> dict:
    """Run ``func`` as job ``job``, recorded in ``job_runs``; never raises what ``func`` raises.

    Returns ``{"id", "job", "outcome", "error", "counts", "seconds"}``. The row is inserted as
    ``running`` first, so a kill mid-run leaves a visible trace.
    """
    return execute_run(engine, job, func).as_dict()


# ---- the default jobs ------------------------------------------------------------------------


class ScoreJob:
    """The ``score`` job: one :class:`~fleetml.services.tick.LiveLoop`, built on first use."""

    def __init__(self, engine: Engine, settings: Settings, notifier=None) -> None:
        self.engine = engine
        self.settings = settings
        self.notifier = notifier  # woken by the tick when it wrote notifications
        self._loop = None
        self._lock = threading.Lock()

    def on_leadership(self) -> None:
        """This process (again) holds the leader lock: the next run builds a new loop, which
        restores the decision state the last leader saved instead of continuing from what this
        process knew before it stood by (another leader may have failed masters over since)."""
        with self._lock:
            self._loop = None

    def __call__(self) -> dict:
        with self._lock:
            if self._loop is None:
                from fleetml.services.tick import LiveLoop

                self._loop = LiveLoop(self.engine, self.settings, notifier=self.notifier)
            loop = self._loop
        return loop.run(now_ms=None)


def forecast_job(engine: Engine, settings: Settings) -> dict:
    """The ``forecast`` job: refresh the forecast cache."""
    from fleetml.services.forecasting import refresh_forecasts

    return refresh_forecasts(engine, settings)


def retention_job(engine: Engine, settings: Settings) -> dict:
    """The ``retention`` job: delete what is older than the retention period."""
    from fleetml.services.retention import apply_retention

    return apply_retention(engine, settings)


def recommend_job(engine: Engine, settings: Settings) -> dict:
    """The ``recommend`` job: refresh the recommendations for ops."""
    from fleetml.services.recommend import raise_for_errors, refresh_recommendations

    return raise_for_errors(refresh_recommendations(engine, settings))


def train_command(settings: Settings, family: str, since_ms: int | None = None) -> list[str]:
    """The command line that trains ``family`` for the store of ``settings`` (on samples from
    ``since_ms`` on, when given)."""
    argv = [
        sys.executable,
        "-m",
        "fleetml.cli",
        "--home",
        str(settings.home_path),
        "train",
        family,
    ]
    if since_ms is not None:
        argv += ["--from", datetime.fromtimestamp(since_ms / 1000, tz=UTC).isoformat()]
    return argv


def retrain_job(engine: Engine, settings: Settings) -> dict:
    """The ``retrain`` job: retrain every family on the last ``retrain_history_s`` of the
    fleet's time, so a store that grows for months does not make the nightly run grow with it."""
    from fleetml.services.clock import fleet_now

    since = fleet_now(engine, settings) - int(settings.retrain_history_s * 1000)
    return retrain(settings, since_ms=since)


def retrain(
    settings: Settings,
    *,
    families: Sequence[str] = RETRAIN_FAMILIES,
    command: Callable[[Settings, str, int | None], list[str]] = train_command,
    timeout_s: float | None = None,
    since_ms: int | None = None,
) -> dict:
    """Train each family in its own process, one after the other, on samples from ``since_ms``
    on (all of them when None); return what each printed.

    The counts hold, per family, the exit code and the last JSON line the command printed (the
    training CLI's result, including whether the promotion gate promoted the new version). A
    family that fails does not stop the next; the job then fails naming every failure.
    """
    env = _train_env(settings)
    counts: dict[str, dict] = {}
    failures: list[str] = []
    for family in families:
        argv = command(settings, family, since_ms)
        log.info("retrain: running %s", " ".join(argv))
        started = time.monotonic()
        try:
            proc = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            counts[family] = {"exit_code": None, "result": None}
            failures.append(f"train {family} timed out after {timeout_s:.0f} s")
            continue
        counts[family] = {
            "exit_code": proc.returncode,
            "seconds": round(time.monotonic() - started, 1),
            "result": last_json_line(proc.stdout),
        }
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout or "").strip()[-1500:]
            failures.append(f"train {family} exited with {proc.returncode}: {tail}")
    if failures:
        raise JobFailed("; ".join(failures), counts)
    return counts


def _train_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    # Two cores shared with the API and the score job: keep OpenMP training to one thread.
    env["OMP_NUM_THREADS"] = "1"
    # The child reads its settings from the environment (and --home): hand over what the
    # parent may have been given otherwise.
    if settings.database_url:
        env["FLEETML_DATABASE_URL"] = settings.database_url
    if settings.mlflow_tracking_uri:
        env["FLEETML_MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    env.pop(JOBS_ENV, None)
    return env


def last_json_line(text: str | None) -> Any:
    """The last line of ``text`` that parses as a JSON object, or None."""
    for line in reversed((text or "").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def default_jobs(settings: Settings, engine: Engine, *, notifier=None) -> dict[str, Job]:
    """The jobs of the live loop, bound to one store (``notifier``: the outbox sender the
    score tick wakes when it wrote notifications)."""
    return {
        "score": ScoreJob(engine, settings, notifier),
        "forecast": lambda: forecast_job(engine, settings),
        "retrain": lambda: retrain_job(engine, settings),
        "retention": lambda: retention_job(engine, settings),
        "recommend": lambda: recommend_job(engine, settings),
    }


def resolve_jobs(
    settings: Settings, engine: Engine, spec: str | None = None, *, notifier=None
) -> dict[str, Job]:
    """The job table: ``spec`` (or ``$FLEETML_WORKER_JOBS``) when given, else the defaults.

    ``spec`` is ``package.module:attribute`` naming a mapping of job name -> callable, or a
    factory ``(settings, engine) -> mapping``.
    """
    spec = spec if spec is not None else os.environ.get(JOBS_ENV)
    if not spec:
        return default_jobs(settings, engine, notifier=notifier)
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{JOBS_ENV}={spec!r}: expected 'package.module:attribute'")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{JOBS_ENV}={spec!r} cannot be loaded: {exc}") from exc
    table = target if isinstance(target, Mapping) else target(settings, engine)
    return dict(table)
