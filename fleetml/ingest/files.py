"""File import and export: wide metrics files, events files and registry files (CSV or Parquet).

Imports stream large files in chunks with a progress bar and write everything of one import in
one transaction, so a crash or a strict-mode rejection stores nothing. Rows that cannot be stored
are rejected one by one with their line, field and reason; the report counts rows read, stored,
duplicated and rejected.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa
from tqdm.auto import tqdm

from fleetml.errors import Conflict, InvalidBatch, InvalidInput, ItemError, NotFound
from fleetml.store import accounts as accounts_store
from fleetml.store import metrics as metrics_store
from fleetml.store.events import write_events
from fleetml.timestamps import RANGE_TEXT, now_ms, parse_ts_column
from fleetml.vocab import (
    ACCOUNT_ID_RE,
    EVENT_KINDS,
    METRIC_NAME_RE,
    RESERVED_COLUMNS,
    text_problem,
)

CHUNK_ROWS = 200_000
MAX_REPORTED_ERRORS = 1000
_KEY_SHIFT = 42  # (account_pk << 42) | ts_ms identifies a sample for duplicate counting


@dataclass
class ImportReport:
    """What an import did. ``errors`` holds up to 1,000 rejected rows (``rejected`` counts all)."""

    kind: str
    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    empty: int = 0
    accounts_registered: int = 0
    errors: list[ItemError] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "files": self.files,
            "rows_read": self.rows_read,
            "rows_stored": self.rows_stored,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "empty": self.empty,
            "accounts_registered": self.accounts_registered,
            **self.extra,
        }

    def add_errors(self, errors: Iterable[ItemError]) -> None:
        """Record one chunk's errors; ``rejected`` counts rows, however many errors each has."""
        rows = set()
        for err in errors:
            rows.add(err.index)
            if len(self.errors) < MAX_REPORTED_ERRORS:
                self.errors.append(err)
        self.rejected += len(rows)


# --- reading files ------------------------------------------------------------------------


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in {".parquet", ".pq"}


def iter_chunks(
    path: str | Path, chunk_rows: int = CHUNK_ROWS
) -> Iterator[tuple[int, pd.DataFrame]]:
    """Yield ``(first_line, frame)`` chunks of a CSV or Parquet file.

    ``first_line`` is the 1-based line of the chunk's first row in a CSV (the header is line 1)
    or its 1-based row number in a Parquet file, so errors can point at the input.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"{path}: no such file")
    if _is_parquet(path):
        import pyarrow.parquet as pq

        row = 1
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            frame = batch.to_pandas()
            yield row, frame
            row += len(frame)
        return
    if path.suffix.lower() not in {".csv", ".txt", ".gz", ".tsv"} and path.suffix:
        raise InvalidInput(f"{path}: unsupported file type {path.suffix!r}; use .csv or .parquet")
    line = 2
    try:
        reader = pd.read_csv(
            path,
            chunksize=chunk_rows,
            dtype={"account_id": "str", "master_id": "str", "group": "str", "kind": "str"},
            # Only an empty cell is missing: a written "NaN" is a value, and not a finite one.
            keep_default_na=False,
            na_values=[""],
            encoding="utf-8",
            sep="\t" if path.suffix.lower() == ".tsv" else ",",
        )
        for frame in reader:
            yield line, frame
            line += len(frame)
    except pd.errors.EmptyDataError as exc:
        raise InvalidInput(f"{path}: the file is empty (expected a header row)") from exc
    except pd.errors.ParserError as exc:
        raise InvalidInput(f"{path}: not a readable CSV file: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{path}: line {_first_non_utf8_line(path)} is not UTF-8 text ({exc.reason}); save "
            "the file as UTF-8"
        ) from None


def _first_non_utf8_line(path: Path) -> int | None:
    """The 1-based line of ``path`` that first fails to decode as UTF-8 (the error path only)."""
    import gzip

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


def _progress_bar(paths: Sequence[str | Path], progress: bool | None, desc: str) -> tqdm:
    """A bar on stderr counting the rows read: always with ``progress=True``, never with
    ``False``, on a terminal only with ``None``. It stays on screen when done."""
    # Counting rows reads each CSV once more: only worth it when a bar may be shown.
    total = sum(count_rows(p) or 0 for p in paths) if progress is not False else 0
    return tqdm(
        total=total or None,
        unit="row",
        unit_scale=True,
        disable=None if progress is None else not progress,
        desc=desc,
        file=sys.stderr,
        leave=True,
    )


def count_rows(path: str | Path) -> int | None:
    """Rows in a file, cheaply where possible (for the progress bar)."""
    path = Path(path)
    if _is_parquet(path):
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if path.stat().st_size > 2_000_000_000:
        return None
    with open(path, "rb") as fh:
        return max(sum(buf.count(b"\n") for buf in iter(lambda: fh.read(1 << 20), b"")) - 1, 0)


# --- metrics ------------------------------------------------------------------------------


def _metric_columns(frame: pd.DataFrame, where: str) -> list[str]:
    missing = [c for c in ("ts", "account_id") if c not in frame.columns]
    if missing:
        raise InvalidInput(
            f"{where}: missing column(s) {', '.join(missing)}; a metrics file has ts, account_id "
            "and one numeric column per metric"
        )
    names = [str(c) for c in frame.columns if c not in RESERVED_COLUMNS]
    bad = [n for n in names if not METRIC_NAME_RE.match(n)]
    if bad:
        raise InvalidInput(
            f"{where}: invalid metric column name(s) {', '.join(map(repr, bad))}: use letters, "
            "digits and underscores, starting with a letter or underscore (at most 64)"
        )
    if not names:
        raise InvalidInput(f"{where}: no metric columns besides ts and account_id")
    return names


def _account_errors(ids: np.ndarray, first_line: int) -> tuple[np.ndarray, list[ItemError]]:
    ok = np.fromiter(
        (isinstance(a, str) and bool(ACCOUNT_ID_RE.match(a)) for a in ids),
        dtype=bool,
        count=len(ids),
    )
    errors = [
        ItemError(first_line + int(i), "account_id", f"invalid account id {ids[i]!r}")
        for i in np.flatnonzero(~ok)
    ]
    return ok, errors


def _ts_errors(
    ts_ms: np.ndarray, ok: np.ndarray, raw: pd.Series, first_line: int, max_future_ms: int
) -> tuple[np.ndarray, list[ItemError]]:
    errors = [
        ItemError(
            first_line + int(i),
            "ts",
            f"{raw.iloc[i]!r} is not a timestamp in the supported range ({RANGE_TEXT}); use "
            "ISO-8601 or epoch seconds",
        )
        for i in np.flatnonzero(~ok)
    ]
    future = ok & (ts_ms > max_future_ms)
    errors += [
        ItemError(
            first_line + int(i),
            "ts",
            f"timestamp {pd.Timestamp(int(ts_ms[i]), unit='ms', tz='UTC').isoformat()} "
            "is in the future",
        )
        for i in np.flatnonzero(future)
    ]
    return ok & ~future, errors


def _value_errors(
    frame: pd.DataFrame, names: Sequence[str], first_line: int
) -> tuple[np.ndarray, np.ndarray, list[ItemError]]:
    """Numeric values (NaN = missing) and errors for non-numeric text and infinities."""
    n = len(frame)
    values = np.empty((n, len(names)), dtype="float64")
    ok = np.ones(n, dtype=bool)
    errors: list[ItemError] = []
    for j, name in enumerate(names):
        col = frame[name]
        if pd.api.types.is_bool_dtype(col.dtype):  # true/false cells are not measurements
            vals = np.full(n, np.nan)
            bad_text = col.notna().to_numpy()
        elif pd.api.types.is_numeric_dtype(col.dtype):
            vals = col.to_numpy(dtype="float64", na_value=np.nan)
            bad_text = np.zeros(n, dtype=bool)
        else:
            vals = pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            bad_text = np.isnan(vals) & col.notna().to_numpy()
            if bad_text.any():  # blank cells and "null" are missing values, not errors
                stripped = col[bad_text].astype("str").str.strip()
                blank = stripped.eq("").to_numpy() | stripped.str.lower().eq("null").to_numpy()
                idx = np.flatnonzero(bad_text)
                bad_text[idx[blank]] = False
        bad_inf = np.isinf(vals)
        for i in np.flatnonzero(bad_text):
            shown = col.iloc[i]
            shown = str(bool(shown)).lower() if isinstance(shown, bool | np.bool_) else repr(shown)
            errors.append(ItemError(first_line + int(i), name, f"not a number: {shown}"))
        for i in np.flatnonzero(bad_inf):
            errors.append(ItemError(first_line + int(i), name, "not a finite number"))
        ok &= ~(bad_text | bad_inf)
        values[:, j] = vals
    return values, ok, errors


def _values_json(values: np.ndarray, names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """One JSON object per row with its non-missing values; also which rows had any value."""
    present = ~np.isnan(values)
    has_any = present.any(axis=1)
    if present.all():
        rows = [dict(zip(names, r, strict=True)) for r in values.tolist()]
    else:
        rows = [
            {k: v for k, v, p in zip(names, r, m, strict=True) if p}
            for r, m in zip(values.tolist(), present.tolist(), strict=True)
        ]
    return [orjson.dumps(r).decode() for r in rows], has_any


def import_metrics_frame(
    conn: sa.Connection,
    frame: pd.DataFrame,
    *,
    counters: Iterable[str] = (),
    register: bool = True,
    actor: str,
    report: ImportReport | None = None,
    first_line: int = 1,
    where: str = "frame",
    max_future_s: float = 300.0,
    seen_keys: list[np.ndarray] | None = None,
) -> ImportReport:
    """Validate one wide chunk and write its good rows inside the caller's transaction.

    Duplicates of (account, ts) keep the later row's values (metric by metric). Rows with bad
    values are rejected whole and listed in ``report.errors``; the caller decides whether any
    rejection aborts the transaction (strict mode).
    """
    report = report or ImportReport(kind="metrics")
    names = _metric_columns(frame, where)
    n = len(frame)
    report.rows_read += n
    if n == 0:
        return report
    raw_ts = frame["ts"]
    ts_ms, ts_ok = parse_ts_column(raw_ts)
    ts_ok, errors = _ts_errors(
        ts_ms, ts_ok, raw_ts, first_line, now_ms() + int(max_future_s * 1000)
    )
    ids = frame["account_id"].to_numpy(dtype=object, na_value=None)
    id_ok, id_errors = _account_errors(ids, first_line)
    values, val_ok, val_errors = _value_errors(frame, names, first_line)
    errors += id_errors + val_errors
    ok = ts_ok & id_ok & val_ok

    kinds = {n: "counter" for n in counters}
    metrics_store.ensure_metric_kinds(conn, names, kinds)
    good_ids = ids[ok]
    known = accounts_store.account_pks(conn, dict.fromkeys(good_ids.tolist()))
    unknown = [a for a in dict.fromkeys(good_ids.tolist()) if a not in known]
    if unknown and register:
        known.update(accounts_store.register_unknown(conn, unknown, actor=actor, source="import"))
        report.accounts_registered += len(unknown)
    elif unknown:
        unknown_set = set(unknown)
        for i in np.flatnonzero(ok):
            if ids[i] in unknown_set:
                errors.append(
                    ItemError(first_line + int(i), "account_id", f"unknown account {ids[i]!r}")
                )
                ok[i] = False
    report.add_errors(sorted(errors, key=lambda e: e.index))

    idx = np.flatnonzero(ok)
    pks = np.fromiter((known[a] for a in ids[idx]), dtype="int64", count=len(idx))
    sub = pd.DataFrame(values[idx], columns=names)
    sub.insert(0, "_pk", pks)
    sub.insert(1, "_ts", ts_ms[idx])
    # Later duplicates win metric by metric: GroupBy.last takes each column's last non-missing.
    dedup = sub.groupby(["_pk", "_ts"], sort=True).last()
    report.duplicates += len(sub) - len(dedup)
    json_rows, has_any = _values_json(dedup.to_numpy(dtype="float64"), names)
    key_pk = dedup.index.get_level_values(0).to_numpy()
    key_ts = dedup.index.get_level_values(1).to_numpy()
    if seen_keys is not None:
        seen_keys.append((key_pk[has_any] << _KEY_SHIFT) | key_ts[has_any])
    rows = [
        (int(p), int(t), j)
        for p, t, j, keep in zip(
            key_pk.tolist(), key_ts.tolist(), json_rows, has_any.tolist(), strict=True
        )
        if keep
    ]
    report.empty += int((~has_any).sum())
    report.rows_stored += metrics_store.write_samples(conn, rows)
    return report


def import_metrics(
    engine: sa.Engine,
    paths: Sequence[str | Path],
    *,
    counters: Iterable[str] = (),
    register: bool = True,
    strict: bool = False,
    actor: str = "cli",
    progress: bool | None = None,
    max_future_s: float = 300.0,
    chunk_rows: int = CHUNK_ROWS,
) -> ImportReport:
    """Import wide metrics files (CSV or Parquet) in one transaction.

    With ``strict``, any rejected row aborts the import and nothing is stored
    (:class:`InvalidBatch` lists the rejected rows). ``progress``: a bar on stderr counting rows
    (``None``: only on a terminal).
    """
    report = ImportReport(kind="metrics", files=[str(p) for p in paths])
    seen: list[np.ndarray] = []
    counters = list(counters)
    with engine.begin() as conn, _progress_bar(paths, progress, "import metrics") as bar:
        if counters:
            declared = {n: "counter" for n in counters}
            metrics_store.ensure_metric_kinds(conn, counters, declared)
            metrics_store.declare_metric_kinds(conn, declared, actor=actor)
        for path in paths:
            for first_line, chunk in iter_chunks(path, chunk_rows):
                import_metrics_frame(
                    conn,
                    chunk,
                    counters=counters,
                    register=register,
                    actor=actor,
                    report=report,
                    first_line=first_line,
                    where=str(path),
                    max_future_s=max_future_s,
                    seen_keys=seen,
                )
                bar.update(len(chunk))
        # Duplicates across chunks: samples written twice within this import.
        if len(seen) > 1:
            keys = np.concatenate(seen)
            cross = len(keys) - len(np.unique(keys))
            report.duplicates += cross
            report.rows_stored -= cross
        if strict and report.rejected:
            raise InvalidBatch(
                f"{report.rejected} row(s) rejected; strict mode stored nothing", report.errors
            )
    return report


# --- events -------------------------------------------------------------------------------


def import_events_frame(
    conn: sa.Connection,
    frame: pd.DataFrame,
    *,
    register: bool = True,
    actor: str,
    source: str = "import",
    report: ImportReport | None = None,
    first_line: int = 1,
    where: str = "frame",
    max_future_s: float = 300.0,
) -> ImportReport:
    """Write an events frame: ``ts``, ``account_id``, ``kind``, optional ``detail``."""
    report = report or ImportReport(kind="events")
    missing = [c for c in ("ts", "account_id", "kind") if c not in frame.columns]
    if missing:
        raise InvalidInput(
            f"{where}: missing column(s) {', '.join(missing)}; an events file has ts, account_id, "
            "kind and optional detail"
        )
    n = len(frame)
    report.rows_read += n
    if n == 0:
        return report
    ts_ms, ts_ok = parse_ts_column(frame["ts"])
    ts_ok, errors = _ts_errors(
        ts_ms, ts_ok, frame["ts"], first_line, now_ms() + int(max_future_s * 1000)
    )
    ids = frame["account_id"].to_numpy(dtype=object, na_value=None)
    id_ok, id_errors = _account_errors(ids, first_line)
    kinds = frame["kind"].to_numpy(dtype=object, na_value=None)
    kind_ok = np.fromiter((k in EVENT_KINDS for k in kinds), dtype=bool, count=n)
    kind_errors = [
        ItemError(
            first_line + int(i),
            "kind",
            f"unknown event kind {kinds[i]!r}; known: {', '.join(sorted(EVENT_KINDS))}",
        )
        for i in np.flatnonzero(~kind_ok)
    ]
    if "detail" in frame.columns:
        detail = frame["detail"].to_numpy(dtype=object, na_value=None)
    else:
        detail = np.full(n, None, dtype=object)
    # the API's text rule, so PostgreSQL never sees what it would refuse (NUL)
    detail_reasons = [None if d is None else text_problem(str(d)) for d in detail]
    detail_ok = np.fromiter((r is None for r in detail_reasons), dtype=bool, count=n)
    detail_errors = [
        ItemError(first_line + int(i), "detail", detail_reasons[i])
        for i in np.flatnonzero(~detail_ok)
    ]
    errors += id_errors + kind_errors + detail_errors
    ok = ts_ok & id_ok & kind_ok & detail_ok
    good_ids = ids[ok].tolist()
    known = accounts_store.account_pks(conn, good_ids)
    unknown = [a for a in dict.fromkeys(good_ids) if a not in known]
    if unknown and register:
        known.update(accounts_store.register_unknown(conn, unknown, actor=actor, source=source))
        report.accounts_registered += len(unknown)
    elif unknown:
        unknown_set = set(unknown)
        for i in np.flatnonzero(ok):
            if ids[i] in unknown_set:
                errors.append(
                    ItemError(first_line + int(i), "account_id", f"unknown account {ids[i]!r}")
                )
                ok[i] = False
    report.add_errors(sorted(errors, key=lambda e: e.index))
    rows = [
        (
            known[ids[i]],
            int(ts_ms[i]),
            str(kinds[i]),
            None if detail[i] is None else str(detail[i]),
            source,
        )
        for i in np.flatnonzero(ok)
    ]
    written = write_events(conn, rows)
    report.duplicates += len(rows) - written
    report.rows_stored += written
    return report


def import_events(
    engine: sa.Engine,
    paths: Sequence[str | Path],
    *,
    register: bool = True,
    strict: bool = False,
    actor: str = "cli",
    progress: bool | None = None,
) -> ImportReport:
    """Import events files (CSV or Parquet) in one transaction.

    ``progress``: a bar on stderr counting rows (``None``: only on a terminal).
    """
    report = ImportReport(kind="events", files=[str(p) for p in paths])
    with engine.begin() as conn, _progress_bar(paths, progress, "import events") as bar:
        for path in paths:
            for first_line, chunk in iter_chunks(path):
                import_events_frame(
                    conn,
                    chunk,
                    register=register,
                    actor=actor,
                    report=report,
                    first_line=first_line,
                    where=str(path),
                )
                bar.update(len(chunk))
        if strict and report.rejected:
            raise InvalidBatch(
                f"{report.rejected} row(s) rejected; strict mode stored nothing", report.errors
            )
    return report


# --- accounts (registry) ------------------------------------------------------------------


def _clean(value):
    if value is None:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    text = str(value).strip() if isinstance(value, str) else value
    return None if text == "" else text


def import_accounts_frame(
    conn: sa.Connection,
    frame: pd.DataFrame,
    *,
    actor: str,
    report: ImportReport | None = None,
    first_line: int = 1,
    where: str = "frame",
) -> ImportReport:
    """Create or update registry entries from a frame (account_id, role, master_id, group,
    optional capacity and state). Masters are applied before servants; every change is audited.
    Any invalid row rejects the whole frame (:class:`InvalidBatch`), so a registry is never half
    loaded.
    """
    report = report or ImportReport(kind="accounts")
    missing = [c for c in ("account_id", "role") if c not in frame.columns]
    if missing:
        raise InvalidInput(
            f"{where}: missing column(s) {', '.join(missing)}; an accounts file has account_id, "
            "role, master_id, group and optional capacity"
        )
    report.rows_read += len(frame)
    records = frame.to_dict("records")
    order = sorted(
        range(len(records)), key=lambda i: 0 if _clean(records[i].get("role")) == "master" else 1
    )
    created = updated = 0
    errors: list[ItemError] = []
    for i in order:
        rec = records[i]
        line = first_line + i
        account_id = _clean(rec.get("account_id"))
        fields = {
            "role": _clean(rec.get("role")),
            "master_id": _clean(rec.get("master_id")),
            "group": _clean(rec.get("group")),
        }
        if "capacity" in rec and _clean(rec.get("capacity")) is not None:
            try:
                fields["capacity"] = float(rec["capacity"])
            except (TypeError, ValueError):
                errors.append(ItemError(line, "capacity", f"not a number: {rec['capacity']!r}"))
                continue
        if "state" in rec and _clean(rec.get("state")) is not None:
            fields["state"] = _clean(rec["state"])
        if account_id is None:
            errors.append(ItemError(line, "account_id", "missing account id"))
            continue
        try:
            existing = accounts_store.get_account(conn, str(account_id))
            if existing is None:
                accounts_store.create_account(
                    conn, account_id=str(account_id), actor=actor, **fields
                )
                created += 1
            else:
                changes = {k: v for k, v in fields.items() if existing.get(k) != v}
                if changes:
                    accounts_store.update_account(
                        conn, str(account_id), changes=changes, actor=actor
                    )
                    updated += 1
        except (InvalidInput, Conflict, NotFound) as exc:  # every row's reason is reported
            errors.append(ItemError(line, "account", str(exc)))
    report.add_errors(errors)
    report.rows_stored += created + updated
    report.extra["created"] = report.extra.get("created", 0) + created
    report.extra["updated"] = report.extra.get("updated", 0) + updated
    if errors:
        raise InvalidBatch(
            f"{where}: {len(errors)} invalid registry row(s); nothing was changed", errors
        )
    return report


def import_accounts(
    engine: sa.Engine, paths: Sequence[str | Path], *, actor: str = "cli"
) -> ImportReport:
    """Load or update the registry from CSV or Parquet files, all-or-nothing."""
    report = ImportReport(kind="accounts", files=[str(p) for p in paths])
    with engine.begin() as conn:
        for path in paths:
            for first_line, chunk in iter_chunks(path):
                import_accounts_frame(
                    conn, chunk, actor=actor, report=report, first_line=first_line, where=str(path)
                )
    return report


# --- export -------------------------------------------------------------------------------


def export_metrics(
    engine: sa.Engine,
    out: str | Path,
    *,
    accounts: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    start=None,
    end=None,
    accounts_per_chunk: int = 200,
) -> int:
    """Write stored samples back in the wide import format (CSV or Parquet by extension).

    Reads a few hundred accounts at a time so memory stays bounded. Returns rows written.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ids = list(accounts) if accounts is not None else list(accounts_store.account_pks(engine))
    ids.sort()
    names = list(metrics) if metrics is not None else list(metrics_store.metric_kinds(engine))
    written = 0
    writer = None
    parquet = _is_parquet(out)
    try:
        if not ids:
            frame = metrics_store.read_metrics(engine, accounts=[], metrics=names)
            _write_part(frame, out, parquet, header=True)
            return 0
        for start_i in range(0, len(ids), accounts_per_chunk):
            part = metrics_store.read_metrics(
                engine,
                accounts=ids[start_i : start_i + accounts_per_chunk],
                metrics=names,
                start=start,
                end=end,
            )
            if parquet:
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.Table.from_pandas(part, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(out, table.schema)
                writer.write_table(table)
            else:
                _write_part(part, out, parquet=False, header=start_i == 0)
            written += len(part)
    finally:
        if writer is not None:
            writer.close()
    return written


def _write_part(frame: pd.DataFrame, out: Path, parquet: bool, header: bool) -> None:
    if parquet:
        frame.to_parquet(out, index=False)
        return
    frame = frame.copy()
    frame["ts"] = frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
    frame.to_csv(out, index=False, mode="w" if header else "a", header=header)


def export_events(engine: sa.Engine, out: str | Path, **filters) -> int:
    from fleetml.store.events import read_events

    frame = read_events(engine, **filters)[["ts", "account_id", "kind", "detail"]]
    out = Path(out)
    if _is_parquet(out):
        frame.to_parquet(out, index=False)
    else:
        frame = frame.copy()
        frame["ts"] = frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
        frame.to_csv(out, index=False)
    return len(frame)
