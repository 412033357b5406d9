"""Helpers shared by every ``fleetml`` sub-command: settings, engine, timestamps, output files."""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import pandas as pd

from fleetml.config import Settings, get_settings
from fleetml.timestamps import to_timestamp


def ctx_settings(ctx: click.Context | None = None) -> Settings:
    """Settings for the running command, honouring the root group's ``--home``."""
    ctx = ctx or click.get_current_context(silent=True)
    home = None
    while ctx is not None:
        if isinstance(ctx.obj, dict) and ctx.obj.get("home"):
            home = ctx.obj["home"]
            break
        ctx = ctx.parent
    settings = get_settings(home)
    settings.ensure_home()
    return settings


def open_engine(settings: Settings, *, migrate: bool = True):
    """Engine for the configured store, migrated to the latest schema (the CLI always upgrades)."""
    from fleetml.store.engine import get_engine
    from fleetml.store.migrate import upgrade

    engine = get_engine(settings)
    if migrate:
        upgrade(engine)
    return engine


def parse_ts(value: str | float | int | None) -> pd.Timestamp | None:
    """Parse a CLI timestamp: ISO-8601 (naive means UTC) or epoch seconds; None passes."""
    try:
        return to_timestamp(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


class TimestampParam(click.ParamType):
    name = "TS"

    def convert(self, value, param, ctx):
        if isinstance(value, pd.Timestamp):
            return value
        try:
            return parse_ts(value)
        except click.BadParameter as exc:
            self.fail(str(exc.message), param, ctx)


TIMESTAMP = TimestampParam()


def write_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a frame as Parquet (``.parquet``/``.pq``) or CSV (anything else)."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in {".parquet", ".pq"}:
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def _json_default(obj: Any):
    if isinstance(obj, pd.Timestamp | datetime):
        return obj.isoformat()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities as null: the result line is standard JSON, which
    ``JSON.parse`` and other strict readers accept."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def print_result(obj: dict) -> None:
    """Print the machine-readable result of a command: one JSON object alone on the last line
    (standard JSON: a NaN measurement is null)."""
    sys.stdout.flush()
    text = json.dumps(obj, default=_json_default, sort_keys=True)
    if "NaN" in text or "Infinity" in text:  # rare: re-encode with the non-finite numbers nulled
        text = json.dumps(_finite(json.loads(text)), sort_keys=True)
    click.echo(text)
