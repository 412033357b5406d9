"""``fleetml worker``: the scheduler in its own process (or one job, now, with ``--once``)."""

from __future__ import annotations

import logging
import signal
import sys

import click

from fleetml.cli_support import ctx_settings, open_engine, print_result

log = logging.getLogger("fleetml.scheduler")


@click.command("worker")
@click.option(
    "--once",
    "once",
    metavar="JOB",
    default=None,
    help="Run one job now (score, forecast, retrain, retention or recommend), print its result "
    "as JSON "
    "and exit: 1 when it failed. Takes no leader lock.",
)
@click.option(
    "--poll",
    "poll_s",
    type=click.FloatRange(min=0.05),
    envvar="FLEETML_WORKER_POLL_S",
    default=1.0,
    show_default=True,
    help="Seconds between a standby worker's attempts to take over (env FLEETML_WORKER_POLL_S).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@click.pass_context
def worker(ctx: click.Context, once: str | None, poll_s: float, log_level: str) -> None:
    """Run the scheduler: score, forecast, nightly retrain and retention, each run recorded.

    Several workers may run: one is active (it holds the leader lock: a PostgreSQL advisory lock,
    or <home>/scheduler.lock on SQLite), the others stand by and take over when it dies. SIGTERM
    or Ctrl-C finishes the running jobs, releases the lock and exits; a second one exits at once.
    """
    from fleetml.scheduler.worker import Worker

    _configure_logging(log_level)
    settings = ctx_settings(ctx)
    engine = open_engine(settings, migrate=True)
    try:
        runner = Worker(settings, engine, poll_s=poll_s)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc

    if once is not None:
        if once not in runner.jobs:
            raise click.BadParameter(
                f"unknown job {once!r}; jobs: {', '.join(runner.jobs)}", param_hint="--once"
            )
        result = runner.run_once(once)
        print_result(result)
        if result["outcome"] == "error":
            sys.exit(1)
        return

    def _stop(signum, _frame) -> None:
        log.info(
            "%s: finishing running jobs, then releasing the lock (send it again to exit now)",
            signal.Signals(signum).name,
        )
        runner.request_stop()
        signal.signal(signum, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    runner.run()
    engine.dispose()


def _configure_logging(level: str) -> None:
    # Our own lines at ``level``; libraries (alembic's migration chatter, APScheduler's line per
    # job start and end, which the run records say better) only from WARNING, unless debugging.
    logging.basicConfig(
        level=logging.DEBUG if level == "debug" else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s",
    )
    logging.getLogger("fleetml").setLevel(level.upper())
