"""The global gradient-boosting member: causal for validation, weighed per series, switchable,
and the CLI's native-step output keeps its shape with it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fleetml.models.forecasting.fleet import SeriesJob, add_global_member, forecast_job
from fleetml.models.forecasting.global_gbm import (
    GLOBAL_MEMBER,
    global_member_forecasts,
)
from fleetml.models.forecasting.selection import LoadForecaster
from tests.models.test_forecast_native_step import _forecast as run_forecast_cli


def _series(n_series: int = 6, days: int = 18, seed: int = 0) -> list[pd.Series]:
    rng = np.random.default_rng(seed)
    index = pd.date_range("2026-02-02", periods=days * 24, freq="h", tz="UTC")
    t = np.arange(len(index))
    out = []
    for _ in range(n_series):
        level = rng.uniform(20, 200)
        shape = 1 + rng.uniform(0.1, 0.4) * np.sin(2 * np.pi * t / 24 + rng.uniform(0, 6.28))
        noise = rng.normal(0, 0.03, len(t))
        out.append(pd.Series(level * (shape + noise), index=index))
    return out


def _origins(series: list[pd.Series], horizon: int = 48) -> list[list[int]]:
    return [LoadForecaster(validation_horizon=horizon).validation_origins(s) for s in series]


def _run(values, origins):
    return global_member_forecasts(
        values, origins=origins, horizon=48, period=24, long_period=168, max_rows=3_000
    )


def test_validation_forecasts_ignore_values_after_the_earliest_origin():
    series = _series()
    origins = _origins(series)
    assert all(len(o) == 3 for o in origins)
    values = [s.to_numpy() for s in series]
    before = _run(values, origins)
    # every series changes from its earliest validation origin on (stays positive)
    changed = [v.copy() for v in values]
    for v, o in zip(changed, origins, strict=True):
        v[o[0] :] *= 3.0
    after = _run(changed, origins)
    for b, a, o in zip(before, after, origins, strict=True):
        first = o[0]
        np.testing.assert_array_equal(b["validation"][first].mean, a["validation"][first].mean)
        np.testing.assert_array_equal(b["validation"][first].sd, a["validation"][first].sd)
        # the final forecast does see the change (so the comparison above could fail)
        assert not np.allclose(b["final"].mean, a["final"].mean)


def test_validation_forecasts_ignore_the_last_validation_window():
    series = _series()
    origins = _origins(series)
    values = [s.to_numpy() for s in series]
    before = _run(values, origins)
    changed = [v.copy() for v in values]
    for v, o in zip(changed, origins, strict=True):
        v[o[-1] :] += 50.0
    after = _run(changed, origins)
    for b, a in zip(before, after, strict=True):
        assert b["validation"].keys() == a["validation"].keys()
        for origin in b["validation"]:
            np.testing.assert_array_equal(
                b["validation"][origin].mean, a["validation"][origin].mean
            )


def test_series_with_zeros_are_modelled_on_their_own_scale():
    series = _series()
    values = [np.where(np.arange(len(s)) % 24 < 3, 0.0, s.to_numpy()) for s in series]
    out = _run(values, _origins(series))
    for fc in out:
        assert fc["final"].log is False and np.all(np.isfinite(fc["final"].mean))
        assert len(fc["final"].mean) == 48 and np.all(np.diff(fc["final"].sd) >= 0)


def test_the_global_member_is_weighed_in_each_series_combination():
    series = _series()
    jobs = [SeriesJob(f"a{i}", "load", s, 48) for i, s in enumerate(series)]
    report = add_global_member(jobs, max_rows=3_000)
    assert report["used"] and report["series"] == len(jobs)
    results = [forecast_job(job) for job in jobs]
    for res in results:
        assert res["error"] is None
        assert len(res["forecast"]) == 48
        scores = res["summary"]["validation"][GLOBAL_MEMBER]
        assert scores["origins"] == 3 and np.isfinite(scores["smape"])
    # clean, shared daily shapes: the pooled model earns weight in some series
    assert any(GLOBAL_MEMBER in r["summary"]["weights"] for r in results)


def test_too_few_series_or_a_champion_choice_leave_jobs_alone():
    series = _series(n_series=3)
    jobs = [SeriesJob(f"a{i}", "load", s, 48) for i, s in enumerate(series)]
    report = add_global_member(jobs)
    assert report["used"] is False and all(j.global_member is None for j in jobs)
    named = [SeriesJob(f"a{i}", "load", s, 48, method="ets") for i, s in enumerate(_series())]
    assert add_global_member(named)["used"] is False


# --- through the CLI -----------------------------------------------------------------------


@pytest.fixture
def fleet_store(sqlite_settings):
    from fleetml.cli_support import open_engine
    from fleetml.ingest.files import import_metrics_frame
    from fleetml.store.accounts import create_account
    from fleetml.store.engine import dispose_engines
    from fleetml.training import registry

    parts = []
    for i, s in enumerate(_series()):
        parts.append(pd.DataFrame({"ts": s.index, "account_id": f"m{i}", "load": s.to_numpy()}))
    frame = pd.concat(parts, ignore_index=True)
    frame["ts"] = frame["ts"].astype("datetime64[ms, UTC]")
    registry.clear_cache()
    engine = open_engine(sqlite_settings)
    with engine.begin() as conn:
        for i in range(6):
            create_account(conn, account_id=f"m{i}", group="g1", actor="test")
        import_metrics_frame(conn, frame, register=True, actor="test")
    yield sqlite_settings
    registry.clear_cache()
    dispose_engines()


def _forecast(tmp_path, *extra):
    summary, frame, _ = run_forecast_cli(tmp_path, *extra)
    return summary, frame


@pytest.mark.slow
def test_cli_uses_the_global_model_and_keeps_48_hourly_points(fleet_store, tmp_path):
    res, table = _forecast(tmp_path, "--horizon", "48", "--no-champion")
    assert res["global_model"]["used"] is True and res["global_model"]["series"] == 6
    assert res["step"] == "1h" and res["horizon_steps"] == 48
    for (account, level), part in table.groupby(["account_id", "level"]):
        ts = pd.to_datetime(part["ts"])
        assert len(part) == 48, (account, level)
        assert (ts.diff().dropna() == pd.Timedelta("1h")).all()
        assert (part["yhat_lower"] <= part["yhat"]).all()
        assert (part["yhat"] <= part["yhat_upper"]).all()


@pytest.mark.slow
def test_cli_can_turn_the_global_model_off(fleet_store, tmp_path):
    res, table = _forecast(tmp_path, "--horizon", "48", "--no-champion", "--no-global-model")
    assert res["global_model"] is None
    assert "gbm" not in res["methods"]
    assert len(table) == 6 * 2 * 48
