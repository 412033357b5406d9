"""On-demand scoring keeps its answer while nothing it depends on changed, and no longer."""

from __future__ import annotations

import pandas as pd
import pytest

from fleetml.serving.live import LiveScorer
from fleetml.serving.ondemand import OnDemandScorer
from fleetml.store.predictions import read_latest

from .conftest import fit_anomaly, small_fleet
from .test_tick import injected, ms, store


def test_an_answer_is_reused_only_while_window_models_and_stored_state_are_unchanged(
    engine, settings, monkeypatch
):
    from fleetml.services.tick import LiveLoop

    frame = small_fleet(n_accounts=2, hours=20)
    ts = pd.DatetimeIndex(frame["ts"].unique()).sort_values()
    bundle = fit_anomaly(frame[frame["ts"] <= ts[-13]])
    models = injected(settings, bundle)
    store(engine, frame[frame["ts"] <= ts[-3]])
    loop = LiveLoop(engine, settings, models=models)
    for t in ts[-6:-2]:
        loop.run(now_ms=ms(t))

    calls = []
    real = LiveScorer.score

    def counting(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LiveScorer, "score", counting)
    scorer = OnDemandScorer(engine, models, refresh_s=3600.0)
    first = scorer.score("acc-1")
    assert scorer.score("acc-1") == first and len(calls) == 1  # nothing changed: reused
    posted = frame[(frame["account_id"] == "acc-1") & (frame["ts"] == ts[-2])]
    scorer.score("acc-1", posted)
    assert len(calls) == 2  # posted samples are always scored
    assert scorer.score("acc-1") == first and len(calls) == 2  # and never kept

    # the tick scores a new sample: the stored state changed, so the answer is computed again,
    # over a window brought up to the stored row at once (it refreshes every refresh_s, here an
    # hour, otherwise), and it is the tick's answer
    store(engine, frame[frame["ts"] == ts[-2]])
    loop.run(now_ms=ms(ts[-2]))  # (the tick's own scorer counts one call)
    again = scorer.score("acc-1")
    assert len(calls) == 4 and again["anomaly"] != first["anomaly"]
    assert again["data_until"] == pd.Timestamp(ts[-2]).isoformat().replace("+00:00", "Z")
    tick = read_latest(engine, accounts=["acc-1"], families=["anomaly"]).iloc[0]
    assert again["anomaly"]["score"] == pytest.approx(tick["score"], rel=1e-9)
    assert again["anomaly"]["calibrated_score"] == pytest.approx(
        tick["detail"]["calibrated_score"], rel=1e-9
    )

    expired = OnDemandScorer(engine, models, refresh_s=0.0)
    expired.score("acc-1")
    expired.score("acc-1")
    assert len(calls) == 6  # with no time to keep it, every call scores


def test_risk_is_scored_with_its_own_feature_config_not_anomalys(engine):
    """A risk model trained with a settings file (here a slow trend anomaly does not use) gets
    its own columns on demand; before, on-demand risk was built with the anomaly model's
    config, so those columns were missing and the trees took their missing-value branch."""
    import numpy as np

    from fleetml.features import FeatureConfig, build_features
    from fleetml.training.risk import RiskTrainConfig, fit_risk

    from .conftest import crash_faults
    from .test_live import model_set

    frame = small_fleet(n_accounts=3, hours=30)
    faults = crash_faults(frame, seed=3)
    risk_config = FeatureConfig(seasonal=False, trend_pairs=(("1h", "6h"),))
    cfg = RiskTrainConfig(horizons=("1h", "6h"), feature_config=risk_config)
    risk = fit_risk(frame, faults=faults, config=cfg).model
    anomaly = fit_anomaly(frame)  # FeatureConfig(seasonal=False): no trend
    assert anomaly.feature_config != risk.feature_config
    store(engine, frame)
    models = model_set(anomaly, risk)
    served = models.get("risk")
    trend = [j for j, c in enumerate(served.feature_columns) if "__trend_1h_6h" in c]
    assert trend
    seen = []
    risk_of = served.risk_of
    served.risk_of = lambda ids, ts_ms, X: seen.append(X) or risk_of(ids, ts_ms, X)
    OnDemandScorer(engine, models).score("acc-1")
    got = seen[-1][0, trend]
    batch = build_features(frame, config=risk_config)
    last = batch[batch["account_id"] == "acc-1"].iloc[-1]
    want = last[[served.feature_columns[j] for j in trend]].to_numpy(dtype=float)
    assert np.isfinite(want).all()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def test_a_backlog_longer_than_ten_samples_is_scored_as_the_tick_scores_it(engine, settings):
    """On demand scores as many unscored samples as the tick does (FLEETML_SCORE_MAX_ROWS), so
    over a long backlog it still answers what the next tick stores."""
    from fleetml.services.tick import LiveLoop

    frame = small_fleet(n_accounts=2, hours=20)
    ts = pd.DatetimeIndex(frame["ts"].unique()).sort_values()
    bundle = fit_anomaly(frame[frame["ts"] <= ts[-40]])
    models = injected(settings, bundle)
    store(engine, frame[frame["ts"] <= ts[-30]])
    loop = LiveLoop(engine, settings, models=models)
    for t in ts[-34:-29]:
        loop.run(now_ms=ms(t))
    store(engine, frame[frame["ts"] > ts[-30]])  # 29 samples each, none scored
    scorer = OnDemandScorer(engine, models, refresh_s=0.0, max_rows=settings.score_max_rows)
    ahead = {a: scorer.score(a)["anomaly"] for a in ("acc-0", "acc-1")}
    loop.run(now_ms=ms(ts[-1]))
    for account, got in ahead.items():
        tick = read_latest(engine, accounts=[account], families=["anomaly"]).iloc[0]
        assert got["score"] == pytest.approx(tick["score"], rel=1e-9)
        assert got["is_anomaly"] == bool(tick["flag"])


def test_a_model_that_raises_on_demand_answers_with_the_heuristic_for_that_request_only(
    engine, settings, monkeypatch
):
    """One failed on-demand request does not switch the process to the heuristic (the tick
    and other requests keep the champion), and its answer says it came from the heuristic."""
    frame = small_fleet(n_accounts=2, hours=20)
    bundle = fit_anomaly(frame)
    models = injected(settings, bundle)
    store(engine, frame)
    served = models.get("anomaly")
    monkeypatch.setattr(served, "calibrate", lambda *a, **k: 1 / 0)
    got = OnDemandScorer(engine, models).score("acc-1")
    assert got["anomaly"]["model_version"] is None and got["models"]["anomaly"] is None
    assert "anomaly" not in models.degraded() and models.get("anomaly") is served
    monkeypatch.undo()
    fine = OnDemandScorer(engine, models).score("acc-1")
    assert fine["anomaly"]["model_version"] == 1 and fine["models"]["anomaly"] == 1


def test_requests_scoring_an_account_while_its_window_refreshes_never_fail(engine, settings):
    """The cached window is shared by the request threads: a refresh builds a new one instead
    of inserting into the one others are reading (which raised IndexError and ValueError, so
    500s, while samples arrived)."""
    import threading

    import numpy as np

    frame = small_fleet(n_accounts=2, hours=30, step="1min")
    ts = pd.DatetimeIndex(frame["ts"].unique()).sort_values()
    bundle = fit_anomaly(frame[frame["ts"] <= ts[-600]])
    models = injected(settings, bundle)
    start = len(ts) - 300
    store(engine, frame[frame["ts"] <= ts[start]])
    scorer = OnDemandScorer(engine, models, refresh_s=0.0)
    scorer.score("acc-1")
    errors, done, answers = [], threading.Event(), []

    def requests():
        while not done.is_set():
            try:
                answers.append(scorer.score("acc-1")["data_until"])
            except Exception as exc:  # noqa: BLE001 - what the test looks for
                errors.append(repr(exc)[:200])

    threads = [threading.Thread(target=requests) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for i in range(start + 1, start + 60):
            store(engine, frame[frame["ts"] == ts[i]])
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert not errors, sorted(set(errors))[:3]
    assert len(set(answers)) > 1  # the windows did refresh while requests ran
    window = scorer._windows["acc-1"][0]
    assert np.all(np.diff(window.key) > 0)
