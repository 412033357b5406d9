"""``fleetml serve``: migrate the store, then run the API under uvicorn."""

from __future__ import annotations

import os

import click

from fleetml.cli_support import ctx_settings, open_engine


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="TCP port.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=int,
    help="Worker processes (each keeps its own key cache and Prometheus numbers).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@click.option(
    "--access-log/--no-access-log",
    default=False,
    show_default=True,
    help="Log every request (costly at high ingest rates).",
)
@click.option(
    "--worker/--no-worker",
    "run_worker",
    default=False,
    show_default=True,
    help="Also run the scheduler inside the API process (one is active across all processes; "
    "the others stand by). Without it, run 'fleetml worker' separately.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    access_log: bool,
    run_worker: bool,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs). Runs database migrations first."""
    import uvicorn

    settings = ctx_settings(ctx)
    engine = open_engine(settings, migrate=True)
    engine.dispose()  # the server process opens its own connections
    # The factory reads settings from the environment: hand it this command's home.
    os.environ["FLEETML_HOME"] = str(settings.home_path)
    # The app's lifespan starts an embedded scheduler worker when this says so.
    os.environ["FLEETML_SERVE_WORKER"] = "1" if run_worker else "0"
    from fleetml.config import reset_settings

    reset_settings()
    click.echo(
        f"fleetml API on http://{host}:{port} (docs at /docs), store {_safe(settings.db_url)}",
        err=True,
    )
    uvicorn.run(
        "fleetml.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=access_log,
        proxy_headers=True,
    )


def _safe(url: str) -> str:
    """A database URL without its password, for logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only cosmetics of a log line
        return url.split("@")[-1]
