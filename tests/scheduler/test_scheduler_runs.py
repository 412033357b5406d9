"""Recording job runs: outcomes, counts, errors, and runs left 'running' by dead processes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from _scheduler_helpers import read_runs

from fleetml.scheduler.jobs import JobFailed, JobSkipped, run_recorded
from fleetml.store.jobs import (
    INTERRUPTED,
    finish_run,
    interrupt_stale_runs,
    recorded_run,
    start_run,
    this_host,
)


def test_ok_run_records_outcome_counts_host_and_pid(engine):
    result = run_recorded(engine, "score", lambda: {"scored": np.int64(12), "stale": 1})

    [run] = read_runs(engine)
    assert run["id"] == result["id"]
    assert (run["job"], run["outcome"], run["error"]) == ("score", "ok", None)
    assert run["counts"] == {"scored": 12, "stale": 1}
    assert run["host"] == this_host() and run["pid"] == os.getpid()
    assert run["ended_at"] >= run["started_at"]


def test_failing_job_records_error_with_message_and_does_not_raise(engine):
    def boom():
        raise ValueError("the champion bundle is missing")

    result = run_recorded(engine, "score", boom)

    [run] = read_runs(engine)
    assert result["outcome"] == run["outcome"] == "error"
    assert run["error"].startswith("ValueError: the champion bundle is missing")
    assert run["ended_at"] is not None


def test_failed_job_keeps_its_counts_and_skipped_job_says_why(engine):
    def half():
        raise JobFailed("train risk exited with 1", {"anomaly": {"exit_code": 0}})

    def idle():
        raise JobSkipped("no champion registered yet")

    run_recorded(engine, "retrain", half)
    run_recorded(engine, "score", idle)

    failed, skipped = read_runs(engine)
    assert (failed["outcome"], failed["error"]) == ("error", "train risk exited with 1")
    assert failed["counts"] == {"anomaly": {"exit_code": 0}}
    assert (skipped["outcome"], skipped["error"]) == ("skipped", "no champion registered yet")


def test_a_run_is_visible_as_running_while_it_runs(engine):
    seen = {}

    def look():
        seen["runs"] = read_runs(engine)
        return {}

    run_recorded(engine, "forecast", look)

    assert [r["outcome"] for r in seen["runs"]] == ["running"]
    assert read_runs(engine)[0]["outcome"] == "ok"


def test_new_leader_marks_runs_of_dead_processes_interrupted(engine):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(dead.stdout)
    mine = start_run(engine, job="score")
    alive_elsewhere = start_run(engine, job="score", pid=os.getppid())  # alive, this host
    dead_here = start_run(engine, job="retrain", pid=dead_pid)
    other_host = start_run(engine, job="forecast", host="another-host", pid=os.getpid())

    assert interrupt_stale_runs(engine) == 2

    by_id = {r["id"]: r for r in read_runs(engine)}
    assert by_id[mine]["outcome"] == "running"
    assert by_id[alive_elsewhere]["outcome"] == "running"
    for run_id in (dead_here, other_host):
        assert by_id[run_id]["outcome"] == "error"
        assert by_id[run_id]["error"] == INTERRUPTED
        assert by_id[run_id]["ended_at"] is not None


def test_a_run_wrongly_marked_interrupted_is_corrected_when_it_ends(engine):
    run_id = start_run(engine, job="score", host="another-host")
    interrupt_stale_runs(engine)

    finish_run(engine, run_id=run_id, outcome="ok", counts={"scored": 1})

    [run] = read_runs(engine)
    assert (run["outcome"], run["error"], run["counts"]) == ("ok", None, {"scored": 1})


def test_finishing_a_run_as_running_is_refused(engine):
    run_id = start_run(engine, job="score")
    with pytest.raises(ValueError, match="other than 'running'"):
        finish_run(engine, run_id=run_id, outcome="running")


def test_recorded_run_returns_the_value_and_records_it(engine):
    summary = recorded_run(engine, "tick", lambda: {"accounts": 4, "scored": 4})

    assert summary == {"accounts": 4, "scored": 4}
    [run] = read_runs(engine)
    assert (run["job"], run["outcome"], run["counts"]) == ("tick", "ok", summary)


@pytest.mark.parametrize("exc", [RuntimeError("no samples"), KeyboardInterrupt()])
def test_recorded_run_records_then_raises(engine, exc):
    def fail():
        raise exc

    with pytest.raises(type(exc)):
        recorded_run(engine, "tick", fail)

    [run] = read_runs(engine)
    assert run["outcome"] == "error"
    assert run["error"].startswith(type(exc).__name__)
