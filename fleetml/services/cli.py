"""``fleetml tick``: one scoring cycle of the live loop, now or as of a given time."""

from __future__ import annotations

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
    the predictions, open and resolve alerts. Prints one JSON line last (accounts, scored,
    stale, alerts_opened, alerts_resolved, seconds, models). The scheduler worker runs the same
    cycle every FLEETML_SCORE_EVERY seconds."""
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
