"""Query-parameter helpers shared by the read endpoints."""

from __future__ import annotations

import pandas as pd

from fleetml.errors import InvalidInput
from fleetml.timestamps import to_timestamp


def ts_param(name: str, value: str | None) -> pd.Timestamp | None:
    """A ``from``/``to`` query value (ISO-8601, naive = UTC, or epoch seconds) as a Timestamp."""
    try:
        return to_timestamp(value)
    except ValueError as exc:
        raise InvalidInput(f"query parameter {name!r}: {exc}", field=f"query.{name}") from None


def iso_ms(ts: pd.Series) -> list[str]:
    """UTC timestamps as ISO-8601 strings with milliseconds and a Z (vectorised)."""
    if len(ts) == 0:
        return []
    return list(ts.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str.slice(0, 23) + "Z")
