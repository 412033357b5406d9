"""Served forecasts: the ServedModel shape, the data's own step, the fallback, and the cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fleetml.serving.base import RESULT_COLUMNS, ServedModel
from fleetml.serving.forecast import MODEL_NAME, ServedForecast

DAY_STEPS = {"1h": 24, "5min": 288}


def load_frame(
    step: str = "1h", days: float = 4, accounts=("a0", "a1"), *, ends=None, seed: int = 0
) -> pd.DataFrame:
    """A wide frame of a daily-cycle gauge ``cpu`` and a counter ``msgs_sent`` per account.

    ``msgs_sent`` grows by 60 per hour per account (a rate of 1 per minute), reset once.
    ``ends`` cuts account i's history ``ends[i]`` steps early.
    """
    rng = np.random.default_rng(seed)
    n = int(pd.Timedelta(f"{days}D") / pd.Timedelta(step))
    ts = pd.date_range("2026-02-01", periods=n, freq=step, tz="UTC")
    per_step = 60 * pd.Timedelta(step) / pd.Timedelta("1h")
    phase = 2 * np.pi * np.arange(n) / DAY_STEPS[step]
    parts = []
    for i, account in enumerate(accounts):
        sent = np.cumsum(np.full(n, per_step))
        sent[n // 2 :] -= sent[n // 2 - 1]  # a restart: the counter drops to a small value
        part = pd.DataFrame(
            {
                "ts": ts,
                "account_id": account,
                "cpu": 40 + 10 * i + 10 * np.sin(phase) + rng.normal(0, 0.5, n),
                "msgs_sent": sent,
            }
        )
        cut = 0 if ends is None else ends[i]
        parts.append(part.iloc[: n - cut])
    frame = pd.concat(parts, ignore_index=True)
    frame["ts"] = frame["ts"].astype("datetime64[ms, UTC]")
    return frame


def store(engine, frame: pd.DataFrame, groups: dict[str, str]) -> None:
    from fleetml.ingest.files import import_metrics_frame
    from fleetml.store.accounts import create_account
    from fleetml.store.metrics import declare_metric_kinds, ensure_metric_kinds

    with engine.begin() as conn:
        for account, group in groups.items():
            create_account(conn, account_id=account, group=group, actor="test")
        ensure_metric_kinds(conn, ["msgs_sent"], {"msgs_sent": "counter"})
        declare_metric_kinds(conn, {"msgs_sent": "counter"}, actor="test")
        import_metrics_frame(conn, frame, register=False, actor="test")


# ------------------------------------------------------------------ the served model


def test_fallback_answers_in_the_common_result_shape():
    model = ServedForecast(None, metric="cpu", horizon=6)
    assert isinstance(model, ServedModel)
    assert (model.family, model.version, model.fallback) == ("forecast", None, True)
    assert MODEL_NAME == "fleetml-forecast"
    out = model.predict_latest(load_frame())
    assert list(out.columns) == [*RESULT_COLUMNS, "lo80", "hi80", "lo95", "hi95"]
    assert str(out["ts"].dtype) == "datetime64[ms, UTC]"
    assert len(out) == 2 * 6
    assert (
        out.groupby("account_id")["horizon"].apply(list).tolist()
        == [[f"+{k}" for k in range(1, 7)]] * 2
    )
    assert (out["lo95"] <= out["lo80"]).all() and (out["lo80"] <= out["score"]).all()
    assert (out["score"] <= out["hi80"]).all() and (out["hi80"] <= out["hi95"]).all()


def test_forecasts_start_at_each_accounts_newest_row_at_the_data_step():
    frame = load_frame("5min", days=2, ends=(0, 7))
    out = ServedForecast(None, metric="cpu", horizon=4).predict_latest(frame)
    newest = frame.groupby("account_id")["ts"].max()
    first = out[out["horizon"] == "+1"].set_index("account_id")["ts"]
    step = pd.Timedelta("5min")
    assert (first == newest + step).all()
    gaps = out.groupby("account_id")["ts"].diff().dropna().unique()
    assert list(gaps) == [step]


def test_flag_marks_the_predicted_peak():
    out = ServedForecast(None, metric="cpu", horizon=24).predict_latest(load_frame())
    for _, part in out.groupby("account_id"):
        assert part["flag"].any()
        assert part.loc[part["score"].idxmax(), "flag"]


def test_a_counter_is_forecast_as_its_rate_per_minute():
    model = ServedForecast(None, metric="msgs_sent", kind="counter", horizon=3)
    out = model.predict_latest(load_frame())
    assert np.allclose(out["score"], 1.0)  # 60 an hour, restart and all


def test_a_long_history_is_cut_not_coarsened():
    frame = load_frame("5min", days=2)
    (result, *_) = ServedForecast(None, metric="cpu", max_points=100).forecast_frame(frame)
    assert result.step == pd.Timedelta("5min")
    assert result.history_points == 100 and result.history_cut
    (whole, *_) = ServedForecast(None, metric="cpu").forecast_frame(frame)
    assert whole.history_points == 2 * 288 and not whole.history_cut


def test_group_forecast_sums_its_accounts():
    frame = load_frame(accounts=("a0", "a1", "b0"))
    model = ServedForecast(None, metric="msgs_sent", kind="counter", horizon=2)
    results = model.forecast_frame(frame, scope="group", groups={"a0": "a", "a1": "a", "b0": "b"})
    by_group = {r.key: r for r in results}
    assert sorted(by_group) == ["a", "b"]
    assert np.allclose(by_group["a"].forecast["yhat"], 2.0)
    assert np.allclose(by_group["b"].forecast["yhat"], 1.0)


def test_the_champions_choice_is_used_per_series():
    from fleetml.models.forecast import ForecastBundle

    bundle = ForecastBundle(
        {"account:a0:cpu": {"method": "theta", "weights": None, "interval_scales": None}},
        metric_kinds={"cpu": "gauge"},
    )
    bundle.registered_version = 7
    model = ServedForecast(bundle, metric="cpu", horizon=3)
    assert (model.version, model.fallback, model.reason) == (7, False, None)
    methods = {r.key: r.method for r in model.forecast_frame(load_frame(days=6))}
    assert methods["a0"] == "theta"


def test_no_registry_means_the_fallback_without_creating_one(sqlite_settings):
    model = ServedForecast.load(sqlite_settings, metric="cpu")
    assert model.fallback and model.version is None
    assert "no model registry" in model.reason
    assert not (sqlite_settings.home_path / "mlflow.db").exists()


def test_a_champion_that_does_not_load_falls_back(sqlite_settings, monkeypatch, caplog):
    from fleetml.serving import forecast, registry

    def broken(*args, **kwargs):
        raise EOFError("truncated pickle")

    monkeypatch.setattr(forecast, "registry_missing", lambda settings: None)
    monkeypatch.setattr(registry, "load_bundle", broken)
    model = ServedForecast.load(sqlite_settings, metric="cpu")
    assert model.fallback and model.version is None
    assert "EOFError" in model.reason and "truncated pickle" in model.reason
    assert "could not be loaded" in caplog.text

    monkeypatch.setattr(registry, "load_bundle", lambda *a, **k: object())
    model = ServedForecast.load(sqlite_settings, metric="cpu")
    assert model.fallback and "not a forecast bundle" in model.reason


# ------------------------------------------------------------------ the cache (both stores)


def test_cache_rows_upsert_and_read(engine):
    from fleetml.store.forecasts import read_forecast, write_forecasts

    row = {
        "scope": "group",
        "target": "eu",
        "metric": "cpu",
        "horizon": 3,
        "computed_at": 1,
        "model_version": None,
        "payload": {"points": [], "peaks": [], "step_seconds": 60.0},
    }
    with engine.begin() as conn:
        assert write_forecasts(conn, [row]) == 1
        write_forecasts(conn, [{**row, "computed_at": 2, "model_version": 4}])
    got = read_forecast(engine, scope="group", target="eu", metric="cpu", horizon=3)
    assert got["computed_at"] == 2 and got["model_version"] == 4
    assert got["payload"]["step_seconds"] == 60.0
    assert read_forecast(engine, scope="group", target="eu", metric="cpu", horizon=4) is None
    with pytest.raises(ValueError, match="scope"), engine.begin() as conn:
        write_forecasts(conn, [{**row, "scope": "fleet"}])


@pytest.mark.parametrize("step", ["1h", "5min"])
def test_refresh_stores_every_group_at_the_data_step(engine, settings, step):
    from fleetml.services.forecasting import refresh_forecasts
    from fleetml.store.forecasts import list_forecasts, read_forecast

    # two days of 5-minute samples (576) are more than the CLI's 400 points: never coarsened
    frame = load_frame(step, days=3 if step == "1h" else 2, accounts=("a0", "a1", "b0"))
    store(engine, frame, {"a0": "eu", "a1": "eu", "b0": "us"})
    counts = refresh_forecasts(engine, settings, now_ms=1_900_000_000_000)
    assert counts["groups"] == 2 and counts["series"] == 2 and counts["accounts"] == 3
    assert counts["model_version"] is None and counts["fallback"] is True
    assert counts["step_seconds"] == pd.Timedelta(step).total_seconds()
    rows = list_forecasts(engine)
    assert [(r["target"], r["metric"], r["horizon"]) for r in rows] == [
        ("eu", settings.forecast_metric, settings.forecast_horizon),
        ("us", settings.forecast_metric, settings.forecast_horizon),
    ]
    assert {r["computed_at"] for r in rows} == {1_900_000_000_000}
    eu = read_forecast(
        engine, scope="group", target="eu", metric="msgs_sent", horizon=settings.forecast_horizon
    )["payload"]
    assert eu["step_seconds"] == pd.Timedelta(step).total_seconds()
    assert len(eu["points"]) == settings.forecast_horizon
    assert eu["values"] == "rate_per_minute"
    assert np.allclose([p["yhat"] for p in eu["points"]], 2.0)  # two accounts at 1 a minute
    assert not eu["history_cut"] and eu["peaks"]


def test_refresh_without_groups_or_metric_says_why(engine, settings):
    from fleetml.services.forecasting import refresh_forecasts

    counts = refresh_forecasts(engine, settings)
    assert counts["series"] == 0 and "msgs_sent" in counts["reason"]
    store(engine, load_frame(), {"a0": "", "a1": ""})
    counts = refresh_forecasts(engine, settings)
    assert counts["series"] == 0 and "group" in counts["reason"]


def test_a_stale_cache_entry_is_recomputed(engine, settings):
    from fleetml.services.forecasting import cached_forecast

    store(engine, load_frame(), {"a0": "eu", "a1": "eu"})
    args = dict(scope="account", target="a0", metric="cpu", horizon=5)
    t0 = 1_900_000_000_000
    first = cached_forecast(engine, settings, now_ms=t0, **args)
    assert not first["cached"] and first["computed_at"] == t0
    again = cached_forecast(engine, settings, now_ms=t0 + 1000, **args)
    assert again["cached"] and again["payload"] == first["payload"]
    later = t0 + int(3 * settings.forecast_every_s * 1000)
    stale = cached_forecast(engine, settings, now_ms=later, **args)
    assert not stale["cached"] and stale["computed_at"] == later
