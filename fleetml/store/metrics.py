"""Metric samples and metric kinds.

Layout: one row per (account, ts) whose ``vals`` column is a JSON object ``{metric: value}``.
Writes are upserts that merge objects, so a replayed batch stores nothing twice and a later value
for the same (account, ts, metric) replaces the earlier one. Reads extract the requested metrics
in SQL and build the wide frame from plain numeric tuples (no per-row pandas work).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa

from fleetml.errors import InvalidInput
from fleetml.store import audit
from fleetml.store.accounts import account_pks
from fleetml.store.audit import connect, now_ms
from fleetml.store.tables import metric_kinds as metric_kinds_table
from fleetml.store.tables import samples
from fleetml.timestamps import bound_ms
from fleetml.vocab import METRIC_NAME_RE, MetricKind, default_metric_kind

SampleRow = tuple[int, int, str]  # (account_pk, ts in epoch ms, JSON object of metric values)

_SQLITE_UPSERT = (
    "INSERT INTO samples (account_pk, ts, vals) VALUES (?, ?, ?) "
    "ON CONFLICT(account_pk, ts) DO UPDATE SET vals = json_patch(samples.vals, excluded.vals)"
)
_PG_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS _fleetml_stage_samples "
    "(account_pk integer, ts bigint, vals jsonb) ON COMMIT DELETE ROWS"
)
_PG_MERGE = (
    "INSERT INTO samples (account_pk, ts, vals) "
    "SELECT account_pk, ts, vals FROM _fleetml_stage_samples "
    "ON CONFLICT (account_pk, ts) DO UPDATE SET vals = samples.vals || excluded.vals"
)


def _dedupe(rows: Sequence[SampleRow]) -> list[SampleRow]:
    """Merge rows sharing (account, ts), later values winning (PostgreSQL upserts a key once)."""
    seen: dict[tuple[int, int], int] = {}
    out: list[SampleRow] = []
    for row in rows:
        key = (row[0], row[1])
        pos = seen.get(key)
        if pos is None:
            seen[key] = len(out)
            out.append(row)
        else:
            merged = {**orjson.loads(out[pos][2]), **orjson.loads(row[2])}
            out[pos] = (row[0], row[1], orjson.dumps(merged).decode())
    return out


def write_samples(conn: sa.Connection, rows: Sequence[SampleRow]) -> int:
    """Upsert sample rows inside the caller's transaction. Returns the number of rows written.

    Each row is ``(account_pk, ts_ms, values_json)``; ``values_json`` holds only finite numbers
    (validation happens before, in :mod:`fleetml.ingest`). Metric names must already be known
    (:func:`ensure_metric_kinds`).
    """
    if not rows:
        return 0
    if conn.dialect.name == "postgresql":
        rows = _dedupe(rows)
        dbapi = conn.connection.driver_connection
        with dbapi.cursor() as cur:
            cur.execute(_PG_STAGE)
            with cur.copy("COPY _fleetml_stage_samples (account_pk, ts, vals) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(_PG_MERGE)
            cur.execute("TRUNCATE _fleetml_stage_samples")
        return len(rows)
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.executemany(_SQLITE_UPSERT, rows)
    finally:
        cursor.close()
    return len(rows)


# --- metric kinds -------------------------------------------------------------------------


def metric_kinds(bind, names: Iterable[str] | None = None) -> dict[str, str]:
    """Known metric names and their kind (``gauge`` or ``counter``); all, or only ``names``."""
    query = sa.select(metric_kinds_table.c.name, metric_kinds_table.c.kind).order_by(
        metric_kinds_table.c.name
    )
    if names is not None:
        query = query.where(metric_kinds_table.c.name.in_(list(names)))
    with connect(bind) as conn:
        return dict(conn.execute(query).all())


def _insert_kinds(conn: sa.Connection, kinds: Mapping[str, str]) -> None:
    rows = [{"name": n, "kind": k, "updated_at": now_ms()} for n, k in kinds.items()]
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    conn.execute(insert(metric_kinds_table).on_conflict_do_nothing(), rows)


def ensure_metric_kinds(
    conn: sa.Connection, names: Iterable[str], declared: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Register metric names not yet known, with their declared kind or the default rule.

    Already known names keep their kind (change it with :func:`declare_metric_kinds`).
    Returns the kinds of the given names.
    """
    # No process-wide cache on purpose: a name cached inside a transaction that later rolled back
    # would hide its samples from every read. One indexed lookup per batch is cheap.
    declared = dict(declared or {})
    wanted = list(dict.fromkeys(names))
    known = metric_kinds(conn, wanted)
    missing = [n for n in wanted if n not in known]
    if missing:
        bad = [n for n in missing if not METRIC_NAME_RE.match(n)]
        if bad:
            raise InvalidInput(f"invalid metric names: {', '.join(map(repr, bad[:10]))}")
        new = {n: str(declared.get(n) or default_metric_kind(n)) for n in missing}
        _insert_kinds(conn, new)
        known.update(new)
    return known


def declare_metric_kinds(conn: sa.Connection, kinds: Mapping[str, str], *, actor: str) -> dict:
    """Declare (or change) the kind of metrics; every change is audited. Returns all kinds."""
    allowed = {k.value for k in MetricKind}
    bad_names = [n for n in kinds if not METRIC_NAME_RE.match(str(n))]
    bad_kinds = {n: k for n, k in kinds.items() if k not in allowed}
    if bad_names:
        raise InvalidInput(f"invalid metric names: {', '.join(map(repr, bad_names[:10]))}")
    if bad_kinds:
        raise InvalidInput(
            "metric kind must be 'gauge' or 'counter': "
            + ", ".join(f"{n}={k!r}" for n, k in list(bad_kinds.items())[:10])
        )
    known = metric_kinds(conn)
    _insert_kinds(conn, {n: k for n, k in kinds.items() if n not in known})
    changes = []
    for name, kind in kinds.items():
        before = known.get(name)
        if before == kind:
            continue
        if before is not None:
            conn.execute(
                metric_kinds_table.update()
                .where(metric_kinds_table.c.name == name)
                .values(kind=kind, updated_at=now_ms())
            )
        changes.append(
            {
                "actor": actor,
                "action": "metric.kind",
                "entity_type": "metric",
                "entity_id": name,
                "before": None if before is None else {"kind": before},
                "after": {"kind": kind},
            }
        )
    audit.record_many(conn, changes)
    return metric_kinds(conn)


# --- reads --------------------------------------------------------------------------------


def read_metrics(
    bind,
    *,
    accounts: Iterable[str] | None = None,
    metrics: Iterable[str] | None = None,
    start=None,
    end=None,
    ranges: Sequence[tuple[int, int]] | None = None,
) -> pd.DataFrame:
    """Read samples into the canonical wide frame (``ts``, ``account_id``, one column per metric).

    ``start`` and ``end`` are inclusive; ``accounts`` and ``metrics`` default to all. ``ranges``
    (inclusive epoch-ms pairs) reads several time ranges in one query (the live loop's tail and
    seasonal slices). Rows are sorted by (account_id, ts); a metric the sample did not carry is
    ``NaN``.
    """
    rows, names, pk_map = _read_rows(
        bind, accounts=accounts, metrics=metrics, start=start, end=end, ranges=ranges
    )
    return _rows_frame(rows, names, pk_map)


#: Position of a row in the samples' primary-key order: (ts in epoch ms, account_pk).
SampleKey = tuple[int, int]


def read_metrics_page(
    bind,
    *,
    limit: int,
    after: SampleKey | None = None,
    accounts: Iterable[str] | None = None,
    metrics: Iterable[str] | None = None,
    start=None,
    end=None,
) -> tuple[pd.DataFrame, SampleKey | None]:
    """One page of :func:`read_metrics`: at most ``limit`` rows in (ts, account) order.

    A keyset read: rows strictly after the key ``after`` in the primary-key order (ts, then the
    account's internal key). Returns the frame and the key to pass as ``after`` for the next
    page, or ``None`` when this page is the last. Pages stay stable while ingest appends newer
    samples: every row present when the first page was read is returned exactly once, and rows
    stored later with a newer ts show up in later pages.
    """
    limit = int(limit)
    if limit < 1:
        raise InvalidInput(f"limit must be at least 1, got {limit}")
    rows, names, pk_map = _read_rows(
        bind,
        accounts=accounts,
        metrics=metrics,
        start=start,
        end=end,
        after=after,
        limit=limit + 1,  # one more row says whether another page follows
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_key = (int(rows[-1][1]), int(rows[-1][0])) if more else None
    return _rows_frame(rows, names, pk_map, sort=False), next_key


def _read_rows(
    bind,
    *,
    accounts: Iterable[str] | None,
    metrics: Iterable[str] | None,
    start,
    end,
    after: SampleKey | None = None,
    limit: int | None = None,
    ranges: Sequence[tuple[int, int]] | None = None,
) -> tuple[list, list[str], dict[str, int]]:
    """(account_pk, ts, vals) rows of the selection, the metric names and the account keys.

    With ``limit`` the rows come in (ts, account_pk) order, starting after ``after``.
    """
    with connect(bind) as conn:
        known = metric_kinds(conn)
        names = list(known) if metrics is None else list(dict.fromkeys(metrics))
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InvalidInput(f"unknown metrics: {', '.join(unknown)}")
        pk_map = account_pks(conn, None if accounts is None else list(accounts))
        if accounts is not None:
            missing = [a for a in dict.fromkeys(accounts) if a not in pk_map]
            if missing:
                raise InvalidInput(f"unknown accounts: {', '.join(missing[:20])}")
            if not pk_map:
                return [], names, pk_map
        postgres = conn.dialect.name == "postgresql"
        mark = "%s" if postgres else "?"
        where, params = [], []
        if accounts is not None:
            where.append("account_pk IN (" + ", ".join(str(int(p)) for p in pk_map.values()) + ")")
        if start is not None:
            where.append(f"ts >= {mark}")
            params.append(bound_ms(start))
        if end is not None:
            where.append(f"ts <= {mark}")
            params.append(bound_ms(end))
        if ranges is not None:
            if not ranges:
                return [], names, pk_map
            where.append("(" + " OR ".join(f"ts BETWEEN {mark} AND {mark}" for _ in ranges) + ")")
            for lo, hi in ranges:
                params += [int(lo), int(hi)]
        if after is not None:
            # a row-value comparison walks the (ts, account_pk) primary key on both databases
            where.append(f"(ts, account_pk) > ({mark}, {mark})")
            params += [int(after[0]), int(after[1])]
        sql = "SELECT account_pk, ts, " + ("vals::text" if postgres else "vals") + " FROM samples"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if limit is not None:
            sql += f" ORDER BY ts, account_pk LIMIT {int(limit)}"
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        finally:
            cursor.close()
    return rows, names, pk_map


def _rows_frame(rows: list, names: list[str], pk_map: Mapping[str, int], *, sort: bool = True):
    n = len(rows)
    pks = np.fromiter((r[0] for r in rows), dtype="int64", count=n)
    ts = np.fromiter((r[1] for r in rows), dtype="int64", count=n)
    texts = [r[2] for r in rows]
    del rows
    id_of_pk = {pk: aid for aid, pk in pk_map.items()}
    return _wide_frame(pks, ts, texts, names, id_of_pk, sort=sort)


def _parse_values(texts: list[str], names: list[str]) -> np.ndarray:
    """Parse JSON value objects into an (n, len(names)) float array with Arrow's C JSON reader."""
    if not texts or not names:
        return np.full((len(texts), len(names)), np.nan)
    import io

    import pyarrow as pa
    import pyarrow.json as pa_json

    schema = pa.schema([(name, pa.float64()) for name in names])
    table = pa_json.read_json(
        io.BytesIO("\n".join(texts).encode()),
        read_options=pa_json.ReadOptions(block_size=1 << 24),
        parse_options=pa_json.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore"
        ),
    )
    out = np.empty((len(texts), len(names)), dtype="float64")
    for j, name in enumerate(names):
        out[:, j] = table.column(name).to_numpy(zero_copy_only=False)
    return out


def _wide_frame(
    pks, ts, texts, names: list[str], id_of_pk: Mapping[int, str], *, sort: bool = True
) -> pd.DataFrame:
    """The wide frame of parsed rows, sorted by (account_id, ts) (as given with ``sort=False``)."""
    values = _parse_values(texts, names)
    uniq, inverse = np.unique(pks, return_inverse=True)
    uniq_ids = np.array([id_of_pk.get(int(p), str(p)) for p in uniq], dtype=object)
    if sort:
        # Sort rows by (account_id, ts) without comparing strings per row: rank the distinct ids.
        rank = np.empty(len(uniq_ids), dtype="int64")
        rank[np.argsort(uniq_ids.astype(str), kind="stable")] = np.arange(len(uniq_ids))
        order = np.lexsort((ts, rank[inverse]))
        ts, values, inverse = ts[order], values[order], inverse[order]
    ids = uniq_ids[inverse]
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime(ts, unit="ms", utc=True).astype("datetime64[ms, UTC]"),
            "account_id": pd.array(ids, dtype="str"),
        }
    )
    for i, name in enumerate(names):
        frame[name] = values[:, i]
    return frame


def count_samples(bind) -> int:
    """Number of stored (account, ts) rows."""
    with connect(bind) as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(samples)).scalar())


def time_range(bind) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """The first and last stored sample times."""
    with connect(bind) as conn:
        lo, hi = conn.execute(sa.select(sa.func.min(samples.c.ts), sa.func.max(samples.c.ts))).one()
    conv = lambda v: None if v is None else pd.Timestamp(int(v), unit="ms", tz="UTC")  # noqa: E731
    return conv(lo), conv(hi)


__all__ = [
    "count_samples",
    "declare_metric_kinds",
    "ensure_metric_kinds",
    "metric_kinds",
    "read_metrics",
    "read_metrics_page",
    "time_range",
    "write_samples",
]
