"""The worker in one process: schedules, recorded runs, failures, overlap, leadership."""

from __future__ import annotations

import threading
import time

import pytest
from _scheduler_helpers import read_runs, wait_for

from fleetml.scheduler.leader import FileLeaderLock, lock_file_path
from fleetml.scheduler.worker import Schedule, Worker, cron_trigger, default_schedules

FAST = {"score_every_s": 0.1, "forecast_every_s": 0.1, "retention_every_s": 0.1}


@pytest.fixture
def sqlite_engine(sqlite_settings):
    from fleetml.store.engine import dispose_engines, get_engine
    from fleetml.store.migrate import upgrade

    engine = get_engine(sqlite_settings)
    upgrade(engine)
    yield engine
    dispose_engines()


@pytest.fixture
def fast(sqlite_settings):
    return sqlite_settings.model_copy(update=FAST)


def _worker(settings, engine, jobs, **kw) -> Worker:
    kw.setdefault("lock", FileLeaderLock(lock_file_path(settings)))
    kw.setdefault("poll_s", 0.05)
    return Worker(settings, engine, jobs, **kw)


def test_default_schedule_follows_settings(sqlite_settings):
    settings = sqlite_settings.model_copy(
        update={"score_every_s": 30.0, "forecast_every_s": 900.0, "retrain_cron": "15 2 * * 1"}
    )
    schedules = default_schedules(settings)

    assert list(schedules) == ["score", "forecast", "retrain", "retention", "recommend"]
    assert schedules["score"].trigger.interval.total_seconds() == 30
    assert schedules["score"].run_at_start
    assert schedules["forecast"].trigger.interval.total_seconds() == 900
    assert schedules["retention"].trigger.interval.total_seconds() == 3600
    retrain = str(schedules["retrain"].trigger)
    assert "minute='15'" in retrain and "hour='2'" in retrain and "day_of_week='1'" in retrain
    assert str(schedules["retrain"].trigger.timezone) == "UTC"


def test_a_bad_crontab_names_the_setting():
    with pytest.raises(ValueError, match="FLEETML_RETRAIN_CRON"):
        cron_trigger("every night")


def test_a_job_without_a_schedule_is_refused(fast, sqlite_engine):
    with pytest.raises(ValueError, match="no schedule for job.*backup"):
        _worker(fast, sqlite_engine, {"backup": dict})


def test_scheduled_runs_are_recorded_with_counts(fast, sqlite_engine):
    worker = _worker(fast, sqlite_engine, {"score": lambda: {"scored": 5}})
    worker.start()
    try:
        wait_for(lambda: len(read_runs(sqlite_engine, outcome="ok")) >= 3, 10, "three score runs")
        assert worker.is_active
    finally:
        worker.stop(timeout=10)

    runs = read_runs(sqlite_engine)
    assert {r["job"] for r in runs} == {"score"}
    assert all(r["counts"] == {"scored": 5} for r in runs if r["outcome"] == "ok")
    assert not worker.is_active
    assert all(r["outcome"] != "running" for r in runs)  # stop waited for the running job


def test_a_failing_job_is_recorded_and_the_schedule_goes_on(fast, sqlite_engine):
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RuntimeError(f"tick {calls['n']} failed")
        return {"scored": 1}

    worker = _worker(fast, sqlite_engine, {"score": flaky, "forecast": lambda: {"ok": 1}})
    worker.start()
    try:
        wait_for(
            lambda: len(read_runs(sqlite_engine, job="score", outcome="ok")) >= 2,
            10,
            "score to recover after two failures",
        )
    finally:
        worker.stop(timeout=10)

    score = read_runs(sqlite_engine, job="score")
    assert [r["outcome"] for r in score[:3]] == ["error", "error", "ok"]
    assert score[0]["error"].startswith("RuntimeError: tick 1 failed")
    assert read_runs(sqlite_engine, job="forecast", outcome="ok")  # other jobs unaffected


def test_a_busy_job_is_not_doubled_and_the_skip_is_recorded(fast, sqlite_engine):
    running = {"now": 0, "max": 0}
    guard = threading.Lock()

    def slow():
        with guard:
            running["now"] += 1
            running["max"] = max(running["max"], running["now"])
        time.sleep(0.6)
        with guard:
            running["now"] -= 1
        return {}

    schedules = {"score": Schedule(default_schedules(fast)["score"].trigger, 1, True)}
    worker = _worker(fast, sqlite_engine, {"score": slow}, schedules=schedules)
    worker.start()
    try:
        wait_for(lambda: read_runs(sqlite_engine, outcome="skipped"), 10, "a skipped score tick")
    finally:
        worker.stop(timeout=10)

    assert running["max"] == 1
    skipped = read_runs(sqlite_engine, outcome="skipped")[0]
    assert "previous run was still running" in skipped["error"]


def test_standby_takes_over_when_the_active_worker_stops(fast, sqlite_engine):
    jobs_a = {"score": lambda: {"by": "a"}}
    jobs_b = {"score": lambda: {"by": "b"}}
    a = _worker(fast, sqlite_engine, jobs_a)
    b = _worker(fast, sqlite_engine, jobs_b)  # its own lock object on the same file
    a.start()
    try:
        wait_for(lambda: a.is_active, 10, "worker a to become active")
        b.start()
        wait_for(lambda: len(read_runs(sqlite_engine)) >= 3, 10, "runs by worker a")
        time.sleep(0.3)
        assert not b.is_active
        # a run still in progress has no counts yet: judge the finished ones
        finished = [r for r in read_runs(sqlite_engine) if r["counts"]]
        assert len(finished) >= 2 and {r["counts"]["by"] for r in finished} == {"a"}

        a.stop(timeout=10)
        wait_for(lambda: b.is_active, 10, "worker b to take over")
        wait_for(
            lambda: [r for r in read_runs(sqlite_engine) if r["counts"] == {"by": "b"}],
            10,
            "runs by worker b",
        )
    finally:
        a.stop(timeout=10)
        b.stop(timeout=10)


def test_run_once_records_one_run_without_the_lock(fast, sqlite_engine):
    holder = FileLeaderLock(lock_file_path(fast))
    assert holder.try_acquire()
    try:
        worker = _worker(fast, sqlite_engine, {"score": lambda: {"scored": 2}})
        result = worker.run_once("score")
    finally:
        holder.release()

    assert result["outcome"] == "ok" and result["counts"] == {"scored": 2}
    assert len(read_runs(sqlite_engine)) == 1
    with pytest.raises(ValueError, match="unknown job 'nope'"):
        worker.run_once("nope")


class _FakeSender:
    def __init__(self, log):
        self.log = log

    def start(self):
        self.log.append(("start", self))
        return self

    def stop(self):
        self.log.append(("stop", self))

    def wake(self):
        self.log.append(("wake", self))


def test_the_notification_sender_runs_only_while_active(fast, sqlite_engine):
    events = []
    holder = FileLeaderLock(lock_file_path(fast))
    assert holder.try_acquire()
    worker = _worker(
        fast, sqlite_engine, {"score": dict}, notifier_factory=lambda: _FakeSender(events)
    )
    worker.start()
    try:
        time.sleep(0.3)
        assert events == []  # standby: another process delivers the outbox
        holder.release()
        wait_for(lambda: worker.is_active, 10, "the worker to become active")
        worker.notifier.wake()
    finally:
        worker.stop(timeout=10)
        holder.release()

    assert [e[0] for e in events] == ["start", "wake", "stop"]
    assert len({id(e[1]) for e in events}) == 1
    worker.notifier.wake()  # stopped: waking is a no-op
    assert len(events) == 3


def test_no_sender_without_receivers(fast, sqlite_engine):
    assert _worker(fast, sqlite_engine, {"score": dict}).notifier is None
    with_hook = fast.model_copy(update={"alert_webhooks": ["http://127.0.0.1:9/hook"]})
    assert _worker(with_hook, sqlite_engine, {"score": dict}).notifier is not None


def test_a_job_with_state_starts_fresh_each_time_its_worker_leads(fast, sqlite_engine):
    """Jobs with ``on_leadership`` (the score tick's loop) drop their in-memory state each time
    the worker takes the lock: another leader may have acted while it stood by."""
    from fleetml.scheduler.jobs import ScoreJob

    led = []

    class Stateful:
        def on_leadership(self):
            led.append(time.monotonic())

        def __call__(self):
            return {"n": len(led)}

    w = _worker(fast, sqlite_engine, {"score": Stateful()})
    for _ in range(2):
        w.start()
        wait_for(lambda: w.is_active, 10, "the worker to lead")
        w.stop(timeout=10)
    assert len(led) == 2
    job = ScoreJob(sqlite_engine, fast)
    job._loop = object()  # as after a run
    job.on_leadership()
    assert job._loop is None
