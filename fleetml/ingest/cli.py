"""``fleetml import`` and ``fleetml export``."""

from __future__ import annotations

import csv
import json
import sys

import click

from fleetml.cli_support import TIMESTAMP, ctx_settings, open_engine
from fleetml.errors import InvalidBatch, InvalidInput
from fleetml.ingest import files

_SHOWN_ERRORS = 20


def _show_errors(errors, total: int, rejects: str | None) -> None:
    """Print the first rejected rows; write all of them to ``rejects`` (CSV) when asked."""
    for err in errors[:_SHOWN_ERRORS]:
        click.echo(f"rejected line {err.index}, {err.field}: {err.reason}", err=True)
    if total > _SHOWN_ERRORS:
        click.echo(f"... and {total - _SHOWN_ERRORS} more rejected rows", err=True)
    if rejects and errors:
        with open(rejects, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["line", "field", "reason"])
            writer.writerows((err.index, err.field, err.reason) for err in errors)


def _report(report: files.ImportReport, rejects: str | None) -> None:
    _show_errors(report.errors, report.rejected, rejects)
    d = report.as_dict()
    click.echo(
        f"{report.kind}: read {d['rows_read']}, stored {d['rows_stored']}, "
        f"duplicated {d['duplicates']}, rejected {d['rejected']}"
        + (f", empty {d['empty']}" if d.get("empty") else "")
        + (
            f", registered {d['accounts_registered']} new accounts"
            if d["accounts_registered"]
            else ""
        )
    )
    click.echo(json.dumps(d))


def _abort(exc: InvalidBatch, rejects: str | None) -> None:
    _show_errors(exc.errors, len(exc.errors), rejects)
    raise click.ClickException(exc.message)


@click.group("import")
def import_group() -> None:
    """Import CSV or Parquet files into the store."""


_files_arg = click.argument(
    "paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False)
)
_progress_opt = click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar on stderr (default: only when stderr is a terminal).",
)


def _progress(flag: bool | None) -> bool | None:
    """The import's ``progress`` argument: ``--progress`` forces the bar (even off a terminal),
    ``--no-progress`` hides it, neither shows it on a terminal only (and skips counting rows
    when stderr is not one)."""
    if flag is None:
        return None if sys.stderr.isatty() else False
    return flag


_rejects_opt = click.option(
    "--rejects",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write every rejected row (line, field, reason) to this CSV file.",
)


@import_group.command("metrics")
@_files_arg
@click.option("--counters", default="", help="Comma-separated metric names that are counters.")
@click.option(
    "--no-register",
    is_flag=True,
    help="Reject rows of unknown accounts instead of registering them.",
)
@click.option("--strict", is_flag=True, help="Store nothing if any row is rejected.")
@_rejects_opt
@_progress_opt
def import_metrics_cmd(paths, counters, no_register, strict, rejects, progress) -> None:
    """Import wide metrics files: ts, account_id and one numeric column per metric.

    ts is ISO-8601 (naive means UTC) or epoch seconds. Rows may come in any order; a later
    duplicate of the same account and ts wins. Everything is stored in one transaction. A
    progress bar on stderr counts the rows read (on a terminal, or always with --progress).
    """
    settings = ctx_settings()
    engine = open_engine(settings)
    names = [c.strip() for c in counters.split(",") if c.strip()]
    try:
        report = files.import_metrics(
            engine,
            list(paths),
            counters=names,
            register=not no_register,
            strict=strict,
            progress=_progress(progress),
            max_future_s=settings.max_future_skew_s,
        )
    except InvalidBatch as exc:
        _abort(exc, rejects)
    except InvalidInput as exc:
        raise click.ClickException(str(exc)) from exc
    _report(report, rejects)


@import_group.command("events")
@_files_arg
@click.option("--no-register", is_flag=True)
@click.option("--strict", is_flag=True, help="Store nothing if any row is rejected.")
@_rejects_opt
@_progress_opt
def import_events_cmd(paths, no_register, strict, rejects, progress) -> None:
    """Import events files: ts, account_id, kind and optional detail.

    A progress bar on stderr counts the rows read (on a terminal, or always with --progress).
    """
    engine = open_engine(ctx_settings())
    try:
        report = files.import_events(
            engine,
            list(paths),
            register=not no_register,
            strict=strict,
            progress=_progress(progress),
        )
    except InvalidBatch as exc:
        _abort(exc, rejects)
    except InvalidInput as exc:
        raise click.ClickException(str(exc)) from exc
    _report(report, rejects)


@import_group.command("accounts")
@_files_arg
@_rejects_opt
def import_accounts_cmd(paths, rejects) -> None:
    """Load or update the registry: account_id, role, master_id, group, optional capacity, state.

    All-or-nothing: any invalid row leaves the registry unchanged.
    """
    engine = open_engine(ctx_settings())
    try:
        report = files.import_accounts(engine, list(paths))
    except InvalidBatch as exc:
        _abort(exc, rejects)
    except InvalidInput as exc:
        raise click.ClickException(str(exc)) from exc
    _report(report, rejects)


@click.group("export")
def export_group() -> None:
    """Export stored data in the import formats."""


@export_group.command("metrics")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="CSV or Parquet file.")
@click.option("--account", "account_ids", multiple=True)
@click.option("--metric", "metric_names", multiple=True)
@click.option("--from", "start", type=TIMESTAMP, default=None)
@click.option("--to", "end", type=TIMESTAMP, default=None)
def export_metrics_cmd(out, account_ids, metric_names, start, end) -> None:
    """Write samples in the wide import format."""
    engine = open_engine(ctx_settings())
    try:
        n = files.export_metrics(
            engine,
            out,
            accounts=list(account_ids) or None,
            metrics=list(metric_names) or None,
            start=start,
            end=end,
        )
    except InvalidInput as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {n} rows to {out}")


@export_group.command("events")
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def export_events_cmd(out) -> None:
    """Write events in the import format."""
    n = files.export_events(open_engine(ctx_settings()), out)
    click.echo(f"wrote {n} events to {out}")
