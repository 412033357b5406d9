"""Query-parameter helpers shared by the read endpoints."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
from fastapi import Path

from fleetml.errors import InvalidInput
from fleetml.timestamps import to_timestamp

#: Row ids are PostgreSQL ``integer`` columns (SQLite's are wider): past this a client sent
#: garbage (422); at or below it an unknown id is a 404. The same on both stores.
ROW_ID_MAX = 2**31 - 1


def row_id(what: str):
    """A path parameter naming a stored row by its id: 1 to :data:`ROW_ID_MAX`."""
    return Annotated[int, Path(ge=1, le=ROW_ID_MAX, description=f"The {what}'s id.")]


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
