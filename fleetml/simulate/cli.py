"""``fleetml simulate``: write a simulated fleet to files, load it into the store, or stream it."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from fleetml.cli_support import TIMESTAMP, ctx_settings, open_engine, print_result
from fleetml.simulate.config import SimConfig, parse_step


def _policy(name: str):
    from fleetml.simulate.policy import ReactiveBaselinePolicy, StaticPolicy

    return {"reactive": ReactiveBaselinePolicy, "static": StaticPolicy}[name]()


def _load_into_home(paths: dict[str, Path]) -> dict:
    from fleetml.simulate.output import load_run

    engine = open_engine(ctx_settings())
    try:
        reports = load_run(engine, paths, actor="simulate")
    finally:
        engine.dispose()
    return {name: report.as_dict() for name, report in reports.items()}


@click.command("simulate")
@click.option(
    "--masters",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Master accounts (one group each).",
)
@click.option(
    "--servants",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Servant (backup) accounts per master.",
)
@click.option("--days", type=click.FloatRange(min=0, min_open=True), default=7.0, show_default=True)
@click.option(
    "--step", "step", default="1m", show_default=True, help="Sampling step: 30s, 1m, 5m, 1h ..."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same fleet.")
@click.option(
    "--start",
    type=TIMESTAMP,
    default=None,
    help="Simulated start (default 2026-01-05T00:00Z; with --live, so the run ends now).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for accounts.csv, metrics.parquet, events.csv and ground_truth.json.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "csv"]),
    default="parquet",
    show_default=True,
    help="Format of the metrics file.",
)
@click.option("--into-home", is_flag=True, help="Also load the run into the store under --home.")
@click.option("--live", is_flag=True, help="Stream samples to a running server instead.")
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="With --live: simulated seconds per wall-clock second.",
)
@click.option(
    "--url",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="With --live: base URL of `fleetml serve`.",
)
@click.option(
    "--api-key",
    envvar="FLEETML_API_KEY",
    default=None,
    help="With --live: API key (runtime role); default $FLEETML_API_KEY.",
)
@click.option(
    "--policy",
    "policy_name",
    type=click.Choice(["reactive", "static"]),
    default="reactive",
    show_default=True,
    help="Routing policy that drives the fleet (reactive = least-load + failover).",
)
@click.option(
    "--no-nuisance",
    is_flag=True,
    help="Leave out missing/duplicated/late rows and clock jitter from the files.",
)
def simulate(
    masters,
    servants,
    days,
    step,
    seed,
    start,
    out_dir,
    fmt,
    into_home,
    live,
    speed,
    url,
    api_key,
    policy_name,
    no_nuisance,
) -> None:
    """Simulate a fleet of bot accounts with faults, precursors and ground truth.

    Writes the import formats (accounts.csv, metrics.parquet or metrics.csv, events.csv) and
    ground_truth.json into --out; --into-home loads them into the store; --live streams the
    fleet to a running server as it evolves.
    """
    if not (out_dir or into_home or live):
        raise click.UsageError("say where the run goes: --out DIR, --into-home or --live")
    if live and (out_dir or into_home):
        raise click.UsageError(
            "--live streams to a server; run files (--out/--into-home) separately"
        )
    try:
        step_s = parse_step(step)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--step") from None

    if live:
        from fleetml.simulate.live import LiveStreamError, live_start, stream_live

        begin = start if start is not None else live_start(days, speed)
        config = SimConfig(
            masters=masters,
            servants=servants,
            days=days,
            step_s=step_s,
            start=begin.isoformat(),
            nuisance=not no_nuisance,
        )
        click.echo(
            f"streaming {config.n_accounts} accounts to {url} from {begin.isoformat()} "
            f"at {speed:g}x (Ctrl-C stops)",
            err=True,
        )
        try:
            stats = stream_live(
                config, seed, url=url, api_key=api_key, speed=speed, policy=_policy(policy_name)
            )
        except LiveStreamError as exc:
            raise click.ClickException(str(exc)) from None
        print_result({"live": stats.as_dict(), "url": url, "seed": seed})
        return

    from fleetml.simulate.output import simulate_fleet, write_run

    config = SimConfig(
        masters=masters,
        servants=servants,
        days=days,
        step_s=step_s,
        nuisance=not no_nuisance,
        **({"start": start.isoformat()} if start is not None else {}),
    )
    started = time.perf_counter()
    run = simulate_fleet(config, seed, policy=_policy(policy_name))
    elapsed = time.perf_counter() - started
    result = {
        "seed": seed,
        "accounts": config.n_accounts,
        "steps": config.n_steps,
        "metric_rows": len(run.metrics),
        "events": len(run.events),
        "faults": run.ground_truth["summary"]["faults"],
        "simulate_s": round(elapsed, 2),
    }
    with tempfile.TemporaryDirectory(prefix="fleetml-sim-") as tmp:
        target = Path(out_dir) if out_dir else Path(tmp)
        paths = write_run(run, target, fmt=fmt)
        if out_dir:
            result["out"] = str(Path(out_dir).resolve())
            result["files"] = {k: p.name for k, p in paths.items()}
        if into_home:
            result["imported"] = _load_into_home(paths)
    print_result(result)
