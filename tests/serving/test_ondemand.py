"""On-demand scoring keeps its answer while nothing it depends on changed, and no longer."""

from __future__ import annotations

import pandas as pd

from fleetml.serving.live import LiveScorer
from fleetml.serving.ondemand import OnDemandScorer

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

    # the tick scores a new sample: the stored state changed, so the answer is computed again
    # (the window itself is refreshed only every refresh_s, here an hour)
    store(engine, frame[frame["ts"] == ts[-2]])
    loop.run(now_ms=ms(ts[-2]))  # (the tick's own scorer counts one call)
    again = scorer.score("acc-1")
    assert len(calls) == 4 and again["anomaly"] != first["anomaly"]

    expired = OnDemandScorer(engine, models, refresh_s=0.0)
    expired.score("acc-1")
    expired.score("acc-1")
    assert len(calls) == 6  # with no time to keep it, every call scores
