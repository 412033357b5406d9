"""CLI for the store: ``fleetml db``, ``fleetml accounts``, ``fleetml keys``, ``fleetml metrics``,
``fleetml events``."""

from __future__ import annotations

import json

import click

from fleetml.cli_support import TIMESTAMP, ctx_settings, open_engine, write_frame
from fleetml.errors import Conflict, FleetmlError, InvalidInput, NotFound
from fleetml.vocab import AccountState, ApiRole, Role

ACTOR = "cli"


def _fail(exc: FleetmlError) -> None:
    raise click.ClickException(str(exc)) from exc


def _echo_rows(rows: list[dict], columns: list[str], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("(none)")
        return
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    click.echo("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        click.echo("  ".join(_fmt(row.get(c)).ljust(widths[c]) for c in columns))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return json.dumps(value) if value else "-"
    return str(value)


# --- db -----------------------------------------------------------------------------------


@click.group()
def db() -> None:
    """Database schema: migrations and status."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply Alembic migrations (also done on every start)."""
    from fleetml.store.migrate import upgrade

    settings = ctx_settings()
    engine = open_engine(settings, migrate=False)
    reached = upgrade(engine, revision)
    click.echo(f"database {engine.url.render_as_string(hide_password=True)} at revision {reached}")


@db.command("current")
def db_current() -> None:
    """Show the database's revision and whether it is the newest."""
    from fleetml.store.migrate import current_revision, head_revision

    engine = open_engine(ctx_settings(), migrate=False)
    cur, head = current_revision(engine), head_revision()
    click.echo(
        f"current {cur or '(empty)'}; head {head}; "
        f"{'up to date' if cur == head else 'needs upgrade'}"
    )


# --- accounts -----------------------------------------------------------------------------

_ACCOUNT_COLUMNS = ["account_id", "role", "master_id", "group", "state", "capacity"]


@click.group()
def accounts() -> None:
    """The fleet registry: masters, servants, groups and states."""


@accounts.command("create")
@click.argument("account_id")
@click.option(
    "--role", type=click.Choice([r.value for r in Role]), default="master", show_default=True
)
@click.option("--master", "master_id", default=None, help="The master a servant backs up.")
@click.option("--group", default=None)
@click.option("--state", type=click.Choice([s.value for s in AccountState]), default=None)
@click.option("--capacity", type=float, default=None, help="Messages a minute it can carry.")
@click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE", help="Free-form attribute.")
def accounts_create(account_id, role, master_id, group, state, capacity, attrs) -> None:
    """Register a master or a servant."""
    from fleetml.store.accounts import create_account

    attributes = _parse_attrs(attrs)
    engine = open_engine(ctx_settings())
    try:
        with engine.begin() as conn:
            created = create_account(
                conn,
                account_id=account_id,
                role=role,
                master_id=master_id,
                group=group,
                state=state,
                capacity=capacity,
                attributes=attributes,
                actor=ACTOR,
            )
    except (InvalidInput, Conflict) as exc:
        _fail(exc)
    click.echo(json.dumps(created, default=str))


def _parse_attrs(attrs) -> dict:
    out = {}
    for item in attrs:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--attr")
        key, value = item.split("=", 1)
        out[key] = value
    return out


@accounts.command("list")
@click.option("--group", default=None)
@click.option("--role", type=click.Choice([r.value for r in Role]), default=None)
@click.option("--state", type=click.Choice([s.value for s in AccountState]), default=None)
@click.option("--master", "master_id", default=None)
@click.option("--include-retired", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def accounts_list(group, role, state, master_id, include_retired, as_json) -> None:
    """List accounts (retired ones only with --include-retired)."""
    from fleetml.store.accounts import list_accounts

    rows = list_accounts(
        open_engine(ctx_settings()),
        group=group,
        role=role,
        state=state,
        master_id=master_id,
        include_retired=include_retired,
    )
    _echo_rows(rows, _ACCOUNT_COLUMNS, as_json)


@accounts.command("update")
@click.argument("account_id")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=None)
@click.option("--master", "master_id", default=None)
@click.option("--group", default=None)
@click.option("--state", type=click.Choice([s.value for s in AccountState]), default=None)
@click.option("--capacity", type=float, default=None)
@click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE")
def accounts_update(account_id, role, master_id, group, state, capacity, attrs) -> None:
    """Change an account's role, master, group, state, capacity or attributes."""
    from fleetml.store.accounts import get_account, update_account

    engine = open_engine(ctx_settings())
    changes = {
        k: v
        for k, v in {
            "role": role,
            "master_id": master_id,
            "group": group,
            "state": state,
            "capacity": capacity,
        }.items()
        if v is not None
    }
    if attrs:
        current = get_account(engine, account_id) or {"attributes": {}}
        changes["attributes"] = {**current["attributes"], **_parse_attrs(attrs)}
    if not changes:
        raise click.UsageError("nothing to change: give at least one option")
    try:
        with engine.begin() as conn:
            updated = update_account(conn, account_id, changes=changes, actor=ACTOR)
    except (InvalidInput, Conflict, NotFound) as exc:
        _fail(exc)
    click.echo(json.dumps(updated, default=str))


@accounts.command("retire")
@click.argument("account_id")
def accounts_retire(account_id) -> None:
    """Retire an account (state disabled; history is kept)."""
    from fleetml.store.accounts import retire_account

    engine = open_engine(ctx_settings())
    try:
        with engine.begin() as conn:
            retired = retire_account(conn, account_id, actor=ACTOR)
    except (Conflict, NotFound) as exc:
        _fail(exc)
    click.echo(json.dumps(retired, default=str))


# --- keys ---------------------------------------------------------------------------------


@click.group()
def keys() -> None:
    """API keys (roles: runtime, ops, admin)."""


@keys.command("create")
@click.option("--role", type=click.Choice([r.value for r in ApiRole]), required=True)
@click.option("--name", required=True, help="Who or what uses the key.")
def keys_create(role: str, name: str) -> None:
    """Create a key. The key is printed once, alone on the last line; only its hash is stored."""
    from fleetml.store.keys import create_key

    engine = open_engine(ctx_settings())
    try:
        with engine.begin() as conn:
            plaintext, record = create_key(conn, role=role, name=name, actor=ACTOR)
    except InvalidInput as exc:
        _fail(exc)
    click.echo(
        f"created {role} key {record['id']} ({name}); store it now, it is not shown again:",
        err=True,
    )
    click.echo(plaintext)


@keys.command("list")
@click.option("--include-revoked", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def keys_list(include_revoked: bool, as_json: bool) -> None:
    """List keys (never their secrets)."""
    from fleetml.store.keys import list_keys

    rows = list_keys(open_engine(ctx_settings()), include_revoked=include_revoked)
    _echo_rows(rows, ["id", "name", "role", "prefix", "created_at", "revoked_at"], as_json)


@keys.command("revoke")
@click.argument("key_id", type=int)
def keys_revoke(key_id: int) -> None:
    """Revoke a key; API replicas stop accepting it within FLEETML_API_KEY_CACHE_S seconds."""
    from fleetml.store.keys import revoke_key

    engine = open_engine(ctx_settings())
    try:
        with engine.begin() as conn:
            record = revoke_key(conn, key_id, actor=ACTOR)
    except (NotFound, Conflict) as exc:
        _fail(exc)
    click.echo(json.dumps(record))


# --- metrics and events -------------------------------------------------------------------


@click.group()
def metrics() -> None:
    """Metric kinds and quick range reads."""


@metrics.command("kinds")
@click.option("--counter", "counters", multiple=True, help="Declare NAME a counter.")
@click.option("--gauge", "gauges", multiple=True, help="Declare NAME a gauge.")
def metrics_kinds(counters, gauges) -> None:
    """Show metric kinds, or declare some with --counter / --gauge."""
    from fleetml.store.metrics import declare_metric_kinds, metric_kinds

    engine = open_engine(ctx_settings())
    if counters or gauges:
        declared = {**{g: "gauge" for g in gauges}, **{c: "counter" for c in counters}}
        try:
            with engine.begin() as conn:
                declare_metric_kinds(conn, declared, actor=ACTOR)
        except InvalidInput as exc:
            _fail(exc)
    for name, kind in metric_kinds(engine).items():
        click.echo(f"{name}\t{kind}")


@metrics.command("read")
@click.option("--account", "account_ids", multiple=True)
@click.option("--metric", "metric_names", multiple=True)
@click.option("--from", "start", type=TIMESTAMP, default=None)
@click.option("--to", "end", type=TIMESTAMP, default=None)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="CSV or Parquet file.")
def metrics_read(account_ids, metric_names, start, end, out) -> None:
    """Read a range of samples (wide format) to a file or the terminal."""
    from fleetml.store.metrics import read_metrics

    try:
        frame = read_metrics(
            open_engine(ctx_settings()),
            accounts=list(account_ids) or None,
            metrics=list(metric_names) or None,
            start=start,
            end=end,
        )
    except InvalidInput as exc:
        _fail(exc)
    if out:
        write_frame(frame, out)
        click.echo(f"wrote {len(frame)} rows to {out}")
    else:
        click.echo(frame.to_string(index=False, max_rows=50))


@click.group()
def events() -> None:
    """Account events and their vocabulary."""


@events.command("kinds")
def events_kinds() -> None:
    """The documented event vocabulary, by category."""
    from fleetml.vocab import EVENT_DESCRIPTIONS, event_category

    for kind in sorted(EVENT_DESCRIPTIONS, key=lambda k: (event_category(k), k)):
        click.echo(f"{event_category(kind):12s} {kind:18s} {EVENT_DESCRIPTIONS[kind]}")


@events.command("list")
@click.option("--account", "account_ids", multiple=True)
@click.option("--kind", "kinds", multiple=True)
@click.option("--from", "start", type=TIMESTAMP, default=None)
@click.option("--to", "end", type=TIMESTAMP, default=None)
@click.option("--limit", type=int, default=100, show_default=True)
def events_list(account_ids, kinds, start, end, limit) -> None:
    """List events, oldest first."""
    from fleetml.store.events import read_events

    try:
        frame = read_events(
            open_engine(ctx_settings()),
            accounts=list(account_ids) or None,
            kinds=list(kinds) or None,
            start=start,
            end=end,
            limit=limit,
        )
    except InvalidInput as exc:
        _fail(exc)
    click.echo(frame.to_string(index=False) if len(frame) else "(none)")
