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

    # a restart with no new sample re-scores each account's newest one (over the stored
    # calibration context: test_a_restarted_loop_calibrates_over_the_stored_context); that row
    # is judged against the maximum *before* it, which the old worker stored, not against one
    # that already holds it
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
    # a backlog longer than a tick scores (max_rows; here 1): only the newest sample is scored
    restarted.scorer.max_rows = 1
    store(engine, frame[frame["ts"] > ts[-4]])
    assert restarted.run(now_ms=ms(ts[-1]))["scored"] == 3  # each account's newest sample
    # ts[-3] and ts[-2] arrived while no worker scored them and were left out: the maximum
    # fades over them too, as a batch score (which counts rows) fades it, then over ts[-1]
    faded = decay**3
    carried = 0
    for account, detail in latest_details(engine).items():
        c, m = detail["calibrated_score"], detail["habituation_max"]
        assert m == pytest.approx(max(c, faded * maxima[account]), rel=1e-6)
        carried += faded * maxima[account] > c  # the stored maximum, not this row, sets it
    assert carried  # the check is not vacuous


def test_a_restarted_loop_calibrates_over_the_stored_context(engine, settings):
    """A row's calibrated score averages it with the account's earlier raw scores; those are
    stored with each prediction, so a new worker scores the stored row again, and the next
    sample, exactly as the old worker does (without them its first scores had no context)."""
    from fleetml.store.predictions import anomaly_contexts

    frame = small_fleet(n_accounts=3, hours=20)
    ts = pd.DatetimeIndex(frame["ts"].unique()).sort_values()
    bundle = fit_anomaly(frame[frame["ts"] <= ts[-13]])
    context_rows = ServedAnomaly(bundle, 1).context_rows
    assert context_rows > 0  # the shipped calibration has a context
    store(engine, frame[frame["ts"] <= ts[-4]])
    loop = LiveLoop(engine, settings, models=injected(settings, bundle))
    for t in ts[-12:-3]:
        loop.run(now_ms=ms(t))
    stored = anomaly_contexts(engine).set_index("account_id")
    assert sorted(stored.index) == ["acc-0", "acc-1", "acc-2"]
    assert (stored["until"] == ms(ts[-4])).all() and (stored["version"] == 1).all()
    assert stored["raw"].map(len).eq(context_rows + 1).all()
    old = latest_details(engine)

    again = LiveLoop(engine, settings, models=injected(settings, bundle))
    assert again.run(now_ms=ms(ts[-4]) + 1000)["scored"] == 3
    for account, detail in latest_details(engine).items():
        assert detail["calibrated_score"] == pytest.approx(old[account]["calibrated_score"])
        assert detail["context_raw"] == pytest.approx(old[account]["context_raw"])

    store(engine, frame[frame["ts"] == ts[-3]])
    fresh = LiveLoop(engine, settings, models=injected(settings, bundle))
    assert fresh.run(now_ms=ms(ts[-3]))["scored"] == 3
    restarted = latest_details(engine)
    loop.run(now_ms=ms(ts[-3]))  # the worker that never stopped, over the same new sample
    kept_on = latest_details(engine)
    for account, detail in restarted.items():
        ref = kept_on[account]
        assert detail["calibrated_score"] == pytest.approx(ref["calibrated_score"], rel=1e-9)
        assert detail["habituation_max"] == pytest.approx(ref["habituation_max"], rel=1e-9)
    moved = [
        abs(kept_on[a]["calibrated_score"] - old[a]["calibrated_score"]) > 1e-6 for a in kept_on
    ]
    assert any(moved)  # the new sample changed the scores: the comparison is not of copies


def test_a_stored_context_is_read_only_when_well_formed_and_of_the_served_model(engine):
    """Malformed contexts are skipped, never raised on; a context of another model version or
    of the wrong length does not seed the scorer (another forest's raw scores mean nothing)."""
    from fleetml.serving.live import LiveScorer
    from fleetml.store.predictions import anomaly_contexts, write_predictions

    bundle = fit_anomaly(small_fleet(n_accounts=2, hours=20))
    C = ServedAnomaly(bundle, 1).context_rows
    good = [None] * 2 + [0.5] * (C - 1)
    details = {
        "ok": {"context_raw": good},
        "other-version": {"context_raw": good},
        "short": {"context_raw": good[1:]},
        "text": {"context_raw": ["x"] * (C + 1)},
        "not-a-list": {"context_raw": 0.5},
        "none": {"calibrated_score": 0.5},
        "fallback": {"context_raw": good},
    }
    frame = pd.DataFrame(
        {
            "account_id": list(details),
            "family": "anomaly",
            "horizon": "",
            "data_until": 1_000,
            "score": 0.1,
            "flag": False,
            "model_version": [2 if a == "other-version" else 1 for a in details],
            "fallback": [a == "fallback" for a in details],
            "top_metrics": "",
            "detail": list(details.values()),
        }
    )
    with engine.begin() as conn:
        write_predictions(conn, frame, computed_at=2_000)
        # a number no float holds (orjson cannot write one; another writer could)
        huge = '{"context_raw": [' + ", ".join(["1" + "0" * 400] * (C + 1)) + "]}"
        value = "CAST(:d AS JSON)" if conn.dialect.name == "postgresql" else ":d"
        conn.execute(
            sa.text(f"UPDATE predictions_latest SET detail = {value} WHERE account_id = 'none'"),
            {"d": huge},
        )
    got = anomaly_contexts(engine).set_index("account_id")
    assert sorted(got.index) == ["ok", "other-version", "short"]
    assert got.loc["ok", "raw"] == good and got.loc["ok", "until"] == 1_000

    scorer = LiveScorer(injected(None, bundle))
    scorer.models.get = lambda family: ServedAnomaly(bundle, 1)
    scorer.restore_context(got.reset_index())
    codes = {a: scorer.window.code(a) for a in ("ok", "other-version", "short")}
    seeded = {a for a, c in codes.items() if c is not None and scorer.ctx_until[c] >= 0}
    assert seeded == {"ok"}
    code = scorer.window.code("ok")
    assert scorer.ctx_n[code] == C - 1  # right-aligned: the two missing scores are the oldest
    assert scorer.ctx_raw[code].tolist()[-(C - 1) :] == [0.5] * (C - 1)


def test_a_one_shot_tick_scores_the_samples_since_the_last_tick_as_a_worker_does(engine, settings):
    """A new process (a restart, or each run of a cron of one-shot ``fleetml tick``) scores
    every sample since the account's last scored one, continuing the stored rule, habituation
    and calibration context: what a worker that never stopped stores for the same samples."""
    frame = small_fleet(n_accounts=3, hours=20)
    ts = pd.DatetimeIndex(frame["ts"].unique()).sort_values()
    bundle = fit_anomaly(frame[frame["ts"] <= ts[-13]])
    store(engine, frame[frame["ts"] <= ts[-5]])
    worker = LiveLoop(engine, settings, models=injected(settings, bundle))
    for t in ts[-12:-4]:
        worker.run(now_ms=ms(t))
    store(engine, frame[frame["ts"] > ts[-5]])  # four samples each, none scored yet
    one_shot = LiveLoop(engine, settings, models=injected(settings, bundle))
    one_shot.run(now_ms=ms(ts[-1]))
    got, got_rows = latest_details(engine), latest_rows(engine)
    worker.run(now_ms=ms(ts[-1]))  # the same four samples in one tick of the running worker
    want, want_rows = latest_details(engine), latest_rows(engine)
    for account, (score, flag, _) in want_rows.items():
        assert got_rows[account][0] == pytest.approx(score, rel=1e-9)
        assert got_rows[account][1] == flag
    for account, ref in want.items():
        for key in ("calibrated_score", "habituation_max", "habituation_prev"):
            assert got[account][key] == pytest.approx(ref[key], rel=1e-9), (account, key)
        assert got[account]["context_raw"] == pytest.approx(ref["context_raw"], rel=1e-9)


def latest_rows(engine) -> dict:
    """Every account's latest anomaly prediction: (score, flag, detail)."""
    t = predictions_latest
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.account_id, t.c.score, t.c.flag, t.c.detail).where(
                t.c.family == "anomaly"
            )
        )
        return {a: (score, bool(flag), detail) for a, score, flag, detail in rows}


def test_a_cron_of_one_shot_ticks_pages_as_a_worker_does_across_an_incident(engine, settings):
    """Each one-shot tick restores the alert rule's state (the run below the minimum
    duration, the rows since the last episode, whether it was kept) with the scores', so a
    cron of ``fleetml tick`` flags the incident when and as a worker does; before, only a run
    of flagged rows came back, and the cron never paged."""
    frame = small_fleet(n_accounts=3, hours=20)
    ts = pd.DatetimeIndex(frame["ts"].unique()).sort_values()
    incident = int(len(ts) * 0.85)  # acc-1's incident starts here (small_fleet)
    bundle = fit_anomaly(frame[frame["ts"] < ts[incident - 12]])
    assert bundle.rule.min_duration > 1  # a run below it must come back too
    store(engine, frame[frame["ts"] <= ts[incident - 8]])
    worker = LiveLoop(engine, settings, models=injected(settings, bundle))
    for t in ts[incident - 12 : incident - 7]:
        worker.run(now_ms=ms(t))
    flags = {"cron": [], "worker": []}
    for t in ts[incident - 7 : incident + 14]:
        store(engine, frame[frame["ts"] == t])
        LiveLoop(engine, settings, models=injected(settings, bundle)).run(now_ms=ms(t))
        cron = latest_rows(engine)
        worker.run(now_ms=ms(t))
        kept_on = latest_rows(engine)
        for account, (score, flag, detail) in kept_on.items():
            got = cron[account]
            assert got[0] == pytest.approx(score, rel=1e-9), (t, account)
            assert got[1] == flag, (t, account)
            assert got[2]["rule_after"] == detail["rule_after"], (t, account)
        flags["cron"].append(cron["acc-1"][1])
        flags["worker"].append(kept_on["acc-1"][1])
    assert any(flags["worker"])  # the incident is flagged: the comparison covers flags
