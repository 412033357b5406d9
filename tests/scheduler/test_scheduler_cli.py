"""``fleetml worker --once`` and the scheduler embedded in the API (``fleetml serve --worker``)."""

from __future__ import annotations

import json

import pytest
from _scheduler_helpers import read_runs, wait_for
from click.testing import CliRunner

from fleetml.cli import cli
from fleetml.scheduler.leader import FileLeaderLock, lock_file_path

FAKE_JOBS = "_fake_jobs:jobs"  # tests/scheduler is on sys.path under pytest


@pytest.fixture
def migrated(sqlite_settings):
    from fleetml.store.engine import dispose_engines, get_engine
    from fleetml.store.migrate import upgrade

    engine = get_engine(sqlite_settings)
    upgrade(engine)
    yield engine
    dispose_engines()


def test_once_runs_one_job_and_prints_its_result(migrated, monkeypatch):
    monkeypatch.setenv("FLEETML_WORKER_JOBS", FAKE_JOBS)
    result = CliRunner().invoke(cli, ["worker", "--once", "score"])

    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["outcome"] == "ok" and printed["counts"]["scored"] == 3
    assert [r["outcome"] for r in read_runs(migrated, job="score")] == ["ok"]


def test_once_exits_1_when_the_job_fails(migrated, monkeypatch):
    monkeypatch.setenv("FLEETML_WORKER_JOBS", FAKE_JOBS)
    monkeypatch.setenv("FAKE_SCORE_FAIL", "1")
    result = CliRunner().invoke(cli, ["worker", "--once", "score"])

    assert result.exit_code == 1
    [run] = read_runs(migrated)
    assert run["outcome"] == "error" and "fake score failed on purpose" in run["error"]


def test_once_names_the_known_jobs_for_an_unknown_one(migrated, monkeypatch):
    monkeypatch.setenv("FLEETML_WORKER_JOBS", FAKE_JOBS)
    result = CliRunner().invoke(cli, ["worker", "--once", "backup"])

    assert result.exit_code == 2
    assert "unknown job 'backup'; jobs: score, forecast" in result.output


def test_a_bad_jobs_spec_is_a_usage_error(migrated, monkeypatch):
    monkeypatch.setenv("FLEETML_WORKER_JOBS", "no_such_module:jobs")
    result = CliRunner().invoke(cli, ["worker", "--once", "score"])

    assert result.exit_code == 2
    assert "FLEETML_WORKER_JOBS='no_such_module:jobs' cannot be loaded" in result.output


def test_once_retention_runs_the_real_job(migrated):
    result = CliRunner().invoke(cli, ["worker", "--once", "retention"])

    assert result.exit_code == 0, result.output
    [run] = read_runs(migrated)
    assert run["job"] == "retention" and run["outcome"] == "ok"
    assert set(run["counts"]) == {
        "cutoff_ms",
        "history_cutoff_ms",
        "decision_cutoff_ms",
        "prediction_history",
        "forecast_history",
        "job_runs",
        "notifications",
        "samples",
        "events",
        "decisions",
        "recommendations",
    }


def test_serve_worker_runs_the_scheduler_in_the_api_process(sqlite_settings, migrated, monkeypatch):
    from fastapi.testclient import TestClient

    from fleetml.api import create_app

    monkeypatch.setenv("FLEETML_SERVE_WORKER", "1")
    monkeypatch.setenv("FLEETML_WORKER_JOBS", FAKE_JOBS)
    monkeypatch.setenv("FLEETML_WORKER_POLL_S", "0.05")
    settings = sqlite_settings.model_copy(update={"score_every_s": 0.1})
    other = FileLeaderLock(lock_file_path(settings))

    with TestClient(create_app(settings, engine=migrated)):
        wait_for(lambda: read_runs(migrated, job="score"), 10, "a score run by the API process")
        assert not other.try_acquire()  # the API's scheduler is the leader
    # Shutdown stopped the scheduler and gave the lock up.
    assert other.try_acquire()
    other.release()
    assert all(r["outcome"] != "running" for r in read_runs(migrated))


def test_serve_without_worker_runs_no_scheduler(sqlite_settings, migrated, monkeypatch):
    from fastapi.testclient import TestClient

    from fleetml.api import create_app

    monkeypatch.setenv("FLEETML_WORKER_JOBS", FAKE_JOBS)
    settings = sqlite_settings.model_copy(update={"score_every_s": 0.05})
    other = FileLeaderLock(lock_file_path(settings))
    with TestClient(create_app(settings, engine=migrated)):
        assert other.try_acquire()
        other.release()
    assert read_runs(migrated) == []


def test_serve_has_the_worker_flag():
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert "--worker / --no-worker" in result.output
