"""``fleetml demo``: the quickstart's main job on the embedded default store.

1. migrate the store under the home folder;
2. on the first run, simulate a small fleet's recent history (ending where the live stream will
   start) and load accounts, metrics and events into the store;
3. train the anomaly and failure-risk models on that history when no champion exists yet
   (``fleetml train anomaly`` / ``fleetml train risk``, the same commands a user runs);
4. create an admin and a runtime key once (kept in ``<home>/demo-keys.json``, mode 600);
5. serve the API on 127.0.0.1:8000 with the scheduler inside (``fleetml serve --worker``):
   every minute a tick scores the fleet, stores predictions and opens or resolves alerts, while
   a background thread streams the fleet live through the public HTTP API, exactly as a bot
   runtime would. The simulated clock runs ahead of the wall clock (``--speed``), so the demo's
   ticks judge freshness against the newest sample (``FLEETML_TICK_CLOCK=data``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import click
import pandas as pd

from fleetml.cli_support import ctx_settings, open_engine

ACTOR = "demo"


def _load_or_create_keys(engine, home: Path) -> dict[str, str]:
    """Reuse the demo's keys if they still work, else create an admin and a runtime key."""
    from fleetml.store.keys import create_key, lookup_key

    path = home / "demo-keys.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if all(lookup_key(engine, saved.get(role, "")) for role in ("admin", "runtime")):
            return saved
    with engine.begin() as conn:
        admin, _ = create_key(conn, role="admin", name="demo-admin", actor=ACTOR)
        runtime, _ = create_key(conn, role="runtime", name="demo-runtime", actor=ACTOR)
    keys = {"admin": admin, "runtime": runtime}
    path.write_text(json.dumps(keys, indent=2))
    os.chmod(path, 0o600)
    return keys


def load_history(
    engine, *, masters: int, servants: int, days: float, end: pd.Timestamp, seed: int, workdir: Path
) -> dict:
    """Simulate ``days`` of history ending at ``end`` and import it into the store."""
    from fleetml.simulate.config import SimConfig
    from fleetml.simulate.output import load_run, simulate_fleet, write_run

    start = (end - pd.Timedelta(days=days)).floor("min")
    config = SimConfig(
        masters=masters, servants=servants, days=days, step_s=60, start=start.isoformat()
    )
    reports = load_run(engine, write_run(simulate_fleet(config, seed), workdir), actor=ACTOR)
    return {
        "accounts": reports["accounts"].rows_stored,
        "samples": reports["metrics"].rows_stored,
        "events": reports["events"].rows_stored,
        "files": str(workdir),
    }


def train_models(home: Path) -> dict:
    """Train and register the anomaly and risk models, each only when it has no champion yet.

    Runs the ``fleetml train`` commands in child processes, as a user would (their progress and
    summaries go to this terminal), so the memory they use is returned when they end.
    """
    import subprocess
    import sys

    from fleetml.config import get_settings
    from fleetml.serving import registry
    from fleetml.serving.models import FAMILIES

    settings = get_settings(home)
    outcome = {}
    for family, name in FAMILIES.items():
        registry.configure_mlflow(settings)
        if registry.get_champion_version(name) is not None:
            outcome[family] = "champion exists"
            continue
        click.echo(f"demo: training the {family} model on the stored history ...", err=True)
        env = {**os.environ, "FLEETML_HOME": str(home)}
        done = subprocess.run(
            [sys.executable, "-m", "fleetml.cli", "train", family],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        summary = json.loads(lines[-1]) if lines else {}
        outcome[family] = (
            f"version {summary.get('version')}, champion {summary.get('champion')}"
            if done.returncode == 0
            else f"training failed (exit {done.returncode}); a heuristic answers instead"
        )
        click.echo(f"demo: {family}: {outcome[family]}", err=True)
    return outcome


def _wait_ready(url: str, timeout_s: float = 60.0) -> bool:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def _stream(
    url: str,
    key: str,
    *,
    masters: int,
    servants: int,
    days: float,
    speed: float,
    start: pd.Timestamp,
    seed: int,
) -> None:
    from fleetml.simulate.config import SimConfig
    from fleetml.simulate.live import LiveStreamError, stream_live

    if not _wait_ready(url):
        click.echo(f"demo: the API at {url} did not become ready; not streaming", err=True)
        return
    config = SimConfig(
        masters=masters, servants=servants, days=days, step_s=60, start=start.isoformat()
    )
    try:
        stats = stream_live(config, seed, url=url, api_key=key, speed=speed)
        click.echo(f"demo: live stream finished: {stats.as_dict()}", err=True)
    except LiveStreamError as exc:
        click.echo(f"demo: live stream stopped: {exc}", err=True)


@click.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--masters", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--servants", default=3, show_default=True, type=click.IntRange(min=0))
@click.option(
    "--history-days",
    default=3.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Simulated history loaded on the first run.",
)
@click.option(
    "--live-days",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Simulated time streamed live after the history.",
)
@click.option(
    "--speed",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Simulated seconds per wall-clock second of the live stream.",
)
@click.option("--seed", default=7, show_default=True, type=int)
@click.option("--no-live", is_flag=True, help="Serve the stored history only.")
@click.option("--no-serve", is_flag=True, help="Prepare the store and keys, then exit.")
@click.option("--no-train", is_flag=True, help="Do not train models at start (heuristics answer).")
def demo(
    host,
    port,
    masters,
    servants,
    history_days,
    live_days,
    speed,
    seed,
    no_live,
    no_serve,
    no_train,
) -> None:
    """Run the quickstart: a simulated demo fleet in the embedded store, served on HTTP."""
    from fleetml.simulate.live import live_start
    from fleetml.store.metrics import count_samples

    settings = ctx_settings()
    home = settings.ensure_home()
    engine = open_engine(settings)
    # The live stream's clock ends at "now"; the history ends where the stream begins.
    stream_start = live_start(live_days, speed)
    if count_samples(engine) == 0:
        click.echo(
            f"demo: simulating {history_days:g} days of a {masters}x{servants} fleet ...", err=True
        )
        summary = load_history(
            engine,
            masters=masters,
            servants=servants,
            days=history_days,
            end=stream_start,
            seed=seed,
            workdir=home / "cache" / "demo",
        )
        click.echo(
            f"demo: loaded {summary['accounts']} accounts, {summary['samples']} samples, "
            f"{summary['events']} events",
            err=True,
        )
    else:
        click.echo(
            f"demo: store already holds {count_samples(engine)} samples; reusing it", err=True
        )
    keys = _load_or_create_keys(engine, home)
    engine.dispose()
    if not no_train:
        train_models(home)
    url = f"http://{host}:{port}"
    click.echo(
        f"\nfleetml demo\n  home        {home}\n  API         {url}  (docs: {url}/docs)\n"
        f"  dashboard   {url}/ui  (log in with the admin key)\n"
        f"  admin key   {keys['admin']}\n  runtime key {keys['runtime']}\n"
        f"  try: curl -H 'Authorization: Bearer {keys['runtime']}' {url}/v1/predictions\n"
        f"       curl -H 'Authorization: Bearer {keys['admin']}' {url}/v1/alerts\n"
        f"  predictions and alerts refresh every minute (the scheduler runs inside the API)\n"
    )
    if no_serve:
        return
    if not no_live:
        # A later history would overlap the stored one; stream a fresh stretch after it instead.
        threading.Thread(
            target=_stream,
            name="fleetml-demo-live",
            daemon=True,
            kwargs={
                "url": url,
                "key": keys["runtime"],
                "masters": masters,
                "servants": servants,
                "days": live_days,
                "speed": speed,
                "start": stream_start,
                "seed": seed + 1,
            },
        ).start()
    from fleetml.api.cli import serve

    # The simulated clock is not the wall clock: judge freshness against the newest sample.
    os.environ.setdefault("FLEETML_TICK_CLOCK", "data")
    click.get_current_context().invoke(serve, host=host, port=port, run_worker=True)
