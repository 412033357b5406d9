"""Fake jobs for the scheduler's tests, loadable in a worker process.

Used as ``FLEETML_WORKER_JOBS=_fake_jobs:jobs`` with ``tests/scheduler`` on ``PYTHONPATH``.
Environment knobs (read when a job runs): ``FAKE_SCORE_FAIL=1`` makes ``score`` raise,
``FAKE_FORECAST_SLEEP`` makes ``forecast`` take that many seconds.
"""

from __future__ import annotations

import os
import time


def jobs(settings, engine):
    """The job table: a quick ``score`` and a ``forecast`` that can be made slow."""

    def score() -> dict:
        if os.environ.get("FAKE_SCORE_FAIL") == "1":
            raise RuntimeError("fake score failed on purpose")
        return {"scored": 3, "pid": os.getpid()}

    def forecast() -> dict:
        time.sleep(float(os.environ.get("FAKE_FORECAST_SLEEP", "0")))
        return {"forecasts": 1, "pid": os.getpid()}

    return {"score": score, "forecast": forecast}
