"""``fleetml tick`` (one scoring cycle of the live loop) and ``fleetml recommend`` (refresh the
recommendations), now or as of a given time."""

from __future__ import annotations

import sys

import click

from fleetml.cli_support import TIMESTAMP, ctx_settings, open_engine, print_result


@click.command("tick")
@click.option(
    "--now",
    "now",
    type=TIMESTAMP,
    default=None,
    help="Score as of this time (ISO-8601 or epoch seconds) instead of the wall clock: for "
    "replays and simulations whose clock is not the wall clock. Staleness is judged against it.",
)
def tick(now) -> None:
    """Run one scoring cycle now: read new samples, score every account with fresh data, store
    the predictions, open and resolve alerts, then decide (weights, actions, recommendations).
    Prints one JSON line last (accounts, scored, stale, alerts_opened, alerts_resolved,
    decisions, actions, seconds, models). The scheduler worker runs the same cycle every
    FLEETML_SCORE_EVERY seconds.

    Rules that need several ticks in a row (a probe failing FLEETML_DECISION_FAIL_AFTER_TICKS
    ticks, risk sustained for a group's trigger_ticks) keep their counts, with cooldowns and
    the safety envelope, in the store after every tick; a tick within 3 tick intervals (at
    least 10 min) of the previous one continues them, a later one starts counting again. The
    live loop is `fleetml worker` (or `fleetml serve --worker`); a cron of this command
    decides the same failovers, at the cost of a process per tick, and judges the outcome of
    earlier ticks' failovers from the stored fault events."""
    from fleetml.services.tick import LiveLoop

    settings = ctx_settings()
    engine = open_engine(settings)
    now_ms = None if now is None else int(now.value // 1_000_000)
    loop = LiveLoop(engine, settings)
    summary = _recorded(engine, "tick", lambda: loop.run(now_ms=now_ms))
    print_result(summary)


def _recorded(engine, job: str, run):
    """Run ``run`` as a recorded job run when the job-run store is available."""
    try:
        from fleetml.store.jobs import recorded_run
    except ImportError:  # pragma: no cover - the scheduler's store arrives separately
        return run()
    return recorded_run(engine, job, run)


@click.command("recommend")
@click.option(
    "--now",
    "now",
    type=TIMESTAMP,
    default=None,
    help="Recommend as of this time (ISO-8601 or epoch seconds) instead of the tick's clock: "
    "for replays and simulations whose clock is not the wall clock.",
)
def recommend(now) -> None:
    """Refresh the recommendations for ops now: failover threshold, autonomy ladder, balancing
    algorithm, servants ahead of forecast peaks, send-rate caps, retraining on drift, lasting
    anomalies. Prints one JSON line last (counts per kind, opened, updated, errors, skipped,
    drift, seconds); exits 1 when a generator failed (the others' recommendations are still
    written). The scheduler worker runs the same refresh every FLEETML_RECOMMEND_EVERY_S
    seconds."""
    from fleetml.services.recommend import raise_for_errors, refresh_recommendations
    from fleetml.store.jobs import JobFailed

    settings = ctx_settings()
    engine = open_engine(settings)
    now_ms = None if now is None else int(now.value // 1_000_000)
    try:
        summary = _recorded(
            engine,
            "recommend",
            lambda: raise_for_errors(refresh_recommendations(engine, settings, now_ms=now_ms)),
        )
    except JobFailed as exc:
        print_result(exc.counts or {"error": str(exc)})
        sys.exit(1)
    print_result(summary)
