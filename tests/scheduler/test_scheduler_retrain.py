"""The nightly retrain: the training CLI in subprocesses, one thread each, outcome recorded."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fleetml.scheduler.jobs import JobFailed, last_json_line, retrain, train_command

# Prints the env var the job must set, then a JSON line, then exits with the given code.
_FAKE = (
    "import json, os, sys; print('training...'); "
    "print(json.dumps({'family': sys.argv[1], 'omp': os.environ.get('OMP_NUM_THREADS'), "
    "'promoted': True})); sys.exit(int(sys.argv[2]))"
)


def _fake(codes: dict[str, int]):
    def command(settings, family, since_ms=None):
        return [sys.executable, "-c", _FAKE, family, str(codes[family])]

    return command


def test_retrain_trains_each_family_with_one_thread_and_keeps_its_result(sqlite_settings):
    counts = retrain(sqlite_settings, command=_fake({"anomaly": 0, "risk": 0}))

    assert list(counts) == ["anomaly", "risk"]
    for family, outcome in counts.items():
        assert outcome["exit_code"] == 0
        assert outcome["result"] == {"family": family, "omp": "1", "promoted": True}


def test_a_failed_family_fails_the_job_but_the_next_one_still_trains(sqlite_settings):
    with pytest.raises(JobFailed, match="train anomaly exited with 3") as info:
        retrain(sqlite_settings, command=_fake({"anomaly": 3, "risk": 0}))

    assert info.value.counts["anomaly"]["exit_code"] == 3
    assert info.value.counts["risk"]["result"]["family"] == "risk"


def test_train_command_runs_the_fleetml_cli_for_this_home(sqlite_settings):
    argv = train_command(sqlite_settings, "risk")

    assert argv[:3] == [sys.executable, "-m", "fleetml.cli"]
    assert argv[3:] == ["--home", str(sqlite_settings.home_path), "train", "risk"]
    # The module entry point exists and knows the train command.
    out = subprocess.run(
        [*argv[:3], "train", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "anomaly" in out.stdout and "risk" in out.stdout


def test_last_json_line_skips_noise():
    text = 'progress 10%\n{"not json\n{"version": 4}\ndone\n'
    assert last_json_line(text) == {"version": 4}
    assert last_json_line("") is None


def test_the_nightly_retrain_reads_only_the_recent_history(sqlite_settings):
    argv = train_command(sqlite_settings, "anomaly", 1_800_000_000_000)
    assert argv[-4:] == ["train", "anomaly", "--from", "2027-01-15T08:00:00+00:00"]


def test_the_retrain_job_starts_retrain_history_before_the_fleets_clock(
    sqlite_settings, monkeypatch
):
    from fleetml.scheduler import jobs
    from fleetml.services import clock

    seen = {}
    monkeypatch.setattr(clock, "fleet_now", lambda engine, settings: 1_800_000_000_000)
    monkeypatch.setattr(jobs, "retrain", lambda settings, since_ms: seen.setdefault("s", since_ms))
    settings = sqlite_settings.model_copy(update={"retrain_history_s": 86400.0})

    jobs.retrain_job(None, settings)

    assert seen["s"] == 1_800_000_000_000 - 86_400_000


def test_retrain_history_longer_than_retention_is_refused():
    from fleetml.config import Settings

    with pytest.raises(ValueError, match="history_retention_s"):
        Settings(retrain_history_s=100 * 86400.0, history_retention_s=90 * 86400.0)
