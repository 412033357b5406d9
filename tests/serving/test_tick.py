"""The live loop over a real store: predictions written, idempotent re-runs, tail reads, stale
accounts; SQLite and PostgreSQL."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from fleetml.services.tick import LiveLoop
from fleetml.serving.models import ModelSet, ServedAnomaly
from fleetml.store.tables import predictions_latest

from .conftest import fit_anomaly, small_fleet


def store(engine, frame: pd.DataFrame) -> None:
    from fleetml.ingest.files import import_metrics_frame

    with engine.begin() as conn:
        import_metrics_frame(conn, frame, register=True, actor="test")


def injected(settings, anomaly_bundle=None) -> ModelSet:
    def champion(family):
        return 1 if (family == "anomaly" and anomaly_bundle is not None) else None

    return ModelSet(
        settings,
        champion_version=champion,
        load=lambda family, version: ServedAnomaly(anomaly_bundle, version),
    )


def ms(ts) -> int:
    return int(pd.Timestamp(ts).value // 1_000_000)


def count(engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar())


def test_a_tick_scores_every_account_and_a_rerun_adds_nothing(engine, settings):
    frame = small_fleet(n_accounts=3, hours=20)
    cut = frame["ts"].max() - pd.Timedelta("1h")
    store(engine, frame[frame["ts"] <= cut])
    loop = LiveLoop(engine, settings, models=injected(settings, fit_anomaly(frame)))
    first = loop.run(now_ms=ms(cut))
    assert first["scored"] == 3 and first["accounts"] == 3
    assert first["models"] == {"anomaly": 1, "risk": None}
    assert first["degraded"].keys() == {"risk"}  # no risk champion: the heuristic answers
    assert count(engine, "predictions_latest") == 3 * (1 + 3)
    history = count(engine, "prediction_history")
    again = LiveLoop(engine, settings, models=injected(settings, fit_anomaly(frame)))
    again.run(now_ms=ms(cut))  # a restarted worker re-running the same tick
    assert count(engine, "prediction_history") == history
    assert count(engine, "predictions_latest") == 3 * 4

    # one new sample per account: only the tail is read, every account is scored again
    nxt = frame[(frame["ts"] > cut) & (frame["ts"] <= cut + pd.Timedelta("5min"))]
    store(engine, nxt)
    second = loop.run(now_ms=ms(cut + pd.Timedelta("5min")))
    assert second["scored"] == 3
    assert count(engine, "prediction_history") == history + 3 * 4
    with engine.connect() as conn:
        until = (
            conn.execute(sa.text("SELECT DISTINCT data_until FROM predictions_latest"))
            .scalars()
            .all()
        )
    assert until == [ms(cut + pd.Timedelta("5min"))]
    # nothing new: nothing scored, nothing written
    third = loop.run(now_ms=ms(cut + pd.Timedelta("6min")))
    assert third["scored"] == 0 and third["predictions"] == 0


def test_the_tick_reads_only_the_tail(engine, settings, monkeypatch):
    frame = small_fleet(n_accounts=2, hours=30)
    store(engine, frame)
    loop = LiveLoop(engine, settings, models=injected(settings))
    end = frame["ts"].max()
    loop.run(now_ms=ms(end - pd.Timedelta("10min")))
    reads = []
    real = loop._read
    monkeypatch.setattr(loop, "_read", lambda ranges: reads.extend(ranges) or real(ranges))
    loop.run(now_ms=ms(end))
    tail = [b - a for a, b in reads]
    assert max(tail) <= 15 * 60_000, tail  # minutes, not the day the first tick read


def test_stale_accounts_are_flagged_against_the_tick_clock(engine, settings):
    frame = small_fleet(n_accounts=2, hours=6)
    frame = frame[
        ~((frame["account_id"] == "acc-1") & (frame["ts"] > frame["ts"].min() + pd.Timedelta("2h")))
    ]
    store(engine, frame)
    loop = LiveLoop(engine, settings, models=injected(settings))
    summary = loop.run(now_ms=ms(frame["ts"].max()))
    assert summary["stale"] == 1
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT account_id, data_until FROM predictions_latest WHERE family='anomaly'")
        ).all()
    newest = dict(rows)
    assert newest["acc-0"] - newest["acc-1"] > settings.stale_after_s * 1000


def test_predictions_name_versions_and_fallbacks(engine, settings):
    frame = small_fleet(n_accounts=2, hours=20)
    store(engine, frame)
    LiveLoop(engine, settings, models=injected(settings, fit_anomaly(frame))).run(
        now_ms=ms(frame["ts"].max())
    )
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT family, model_version, fallback FROM predictions_latest")
        ).all()
    by_family = {(f, v, bool(fb)) for f, v, fb in rows}
    assert by_family == {("anomaly", 1, False), ("risk", None, True)}


def latest_details(engine) -> dict:
    """The detail of every account's latest anomaly prediction."""
    t = predictions_latest
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.account_id, t.c.detail).where(t.c.family == "anomaly"))
        return {a: d for a, d in rows}


def test_a_restarted_loop_keeps_each_accounts_habituation(engine, settings):
    """The decaying maximum behind the reported anomaly score is stored with each prediction
    and read back by a new worker, which then reports what the old one would have."""
    from fleetml.store.predictions import habituation_maxima

    frame = small_fleet(n_accounts=3, hours=20)
    ts = pd.DatetimeIndex(frame["ts"].unique()).sort_values()
    bundle = fit_anomaly(frame[frame["ts"] <= ts[-13]])
    store(engine, frame[frame["ts"] <= ts[-4]])
    loop = LiveLoop(engine, settings, models=injected(settings, bundle))
    for t in ts[-12:-3]:
        loop.run(now_ms=ms(t))
    stored = habituation_maxima(engine).set_index("account_id")
    assert sorted(stored.index) == ["acc-0", "acc-1", "acc-2"]
    assert (stored["until"] == ms(ts[-4])).all()
    live = loop.scorer
    codes = live.window.codes_of(pd.Series(stored.index, dtype=object))
    assert stored["max"].tolist() == live.hab_max[codes].tolist()
    assert stored["prev"].tolist() == live.hab_prev[codes].tolist()
    maxima = stored["max"].to_dict()
    decay = 2.0 ** (-1.0 / bundle.habituation.half_life)

    # a restart with no new sample re-scores each account's newest one (its calibrated score
    # may differ: the new process has no short-window context); that row is judged against the
    # maximum *before* it, which the old worker stored, not against one that already holds it
    again = LiveLoop(engine, settings, models=injected(settings, bundle))
    assert again.run(now_ms=ms(ts[-4]) + 1000)["scored"] == 3
    for account, detail in latest_details(engine).items():
        prev = stored.loc[account, "prev"]
        c = detail["calibrated_score"]
        assert detail["habituation_prev"] == pytest.approx(prev, rel=1e-9)
        assert detail["habituation_max"] == pytest.approx(max(c, decay * prev), rel=1e-6)
    assert (stored["prev"] != stored["max"]).all()  # the check tells the two apart
    maxima = habituation_maxima(engine).set_index("account_id")["max"].to_dict()

    restarted = LiveLoop(engine, settings, models=injected(settings, bundle))
    store(engine, frame[frame["ts"] > ts[-4]])
    assert restarted.run(now_ms=ms(ts[-1]))["scored"] == 3  # each account's newest sample
    # ts[-3] and ts[-2] arrived while no worker scored them: the maximum fades over them too,
    # as a batch score (which counts rows) fades it, then over the scored row ts[-1]
    faded = decay**3
    carried = 0
    for account, detail in latest_details(engine).items():
        c, m = detail["calibrated_score"], detail["habituation_max"]
        assert m == pytest.approx(max(c, faded * maxima[account]), rel=1e-6)
        carried += faded * maxima[account] > c  # the stored maximum, not this row, sets it
    assert carried  # the check is not vacuous
