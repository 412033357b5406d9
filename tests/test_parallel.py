"""run_parallel gives the same results, in order, in-process, on local processes and on Dask."""

from __future__ import annotations

import pytest

from fleetml.parallel import close_clients, run_parallel


def _square_plus_pid_free(x: int) -> int:
    return x * x + 1


def test_local_processes_keep_order():
    items = list(range(20))
    expected = [x * x + 1 for x in items]
    assert run_parallel(_square_plus_pid_free, items, n_jobs=1) == expected
    assert run_parallel(_square_plus_pid_free, items, n_jobs=2) == expected
    assert run_parallel(_square_plus_pid_free, [], n_jobs=2) == []


def test_unreachable_dask_scheduler_says_what_to_do(monkeypatch):
    monkeypatch.setattr("fleetml.parallel.CONNECT_TIMEOUT", "1s")
    with pytest.raises(RuntimeError, match="dask scheduler"):
        run_parallel(_square_plus_pid_free, [1, 2], dask_address="tcp://127.0.0.1:9")


def test_env_address_is_used(monkeypatch):
    from fleetml.parallel import resolve_dask_address

    monkeypatch.setenv("FLEETML_DASK_SCHEDULER", "tcp://example:8786")
    assert resolve_dask_address() == "tcp://example:8786"
    assert resolve_dask_address("tcp://other:1") == "tcp://other:1"


@pytest.mark.slow
def test_same_forecasts_on_a_local_dask_cluster():
    distributed = pytest.importorskip("distributed")
    import numpy as np
    import pandas as pd

    from fleetml.models.forecast import SeriesJob, forecast_job

    rng = np.random.default_rng(3)
    index = pd.date_range("2026-01-01", periods=24 * 5, freq="h", tz="UTC")
    jobs = [
        SeriesJob(
            f"acc{i}",
            "load",
            pd.Series(
                20
                + 5 * np.sin(2 * np.pi * np.arange(len(index)) / 24)
                + rng.normal(0, 1, len(index)),
                index=index,
            ),
            horizon=12,
            method="ets",
        )
        for i in range(4)
    ]
    local = run_parallel(forecast_job, jobs, n_jobs=2, use_env=False)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        try:
            remote = run_parallel(forecast_job, jobs, dask_address=cluster.scheduler_address)
        finally:
            close_clients()
    assert [r["key"] for r in remote] == [r["key"] for r in local]
    for a, b in zip(local, remote, strict=True):
        pd.testing.assert_frame_equal(a["forecast"], b["forecast"])
