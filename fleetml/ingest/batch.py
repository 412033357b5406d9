"""Fast validation of an HTTP ingest batch (metrics or events).

The metrics endpoint must sustain about 100,000 samples a second, so this module avoids pydantic
models per sample: the body is parsed once with orjson and validated in one tight loop that leans
on caches (validated account ids, parsed timestamp strings, known metric names). The result is a
list of rows ready for the store's bulk writer, or the complete list of what is wrong with the
batch, by sample index, field and reason, so a client can fix everything in one round trip.

The validators are pure functions. :class:`BatchIngestor` adds what needs the store: resolving
account ids to internal keys (registering unknown ones inside the write transaction) and durable
writes through :class:`GroupCommitWriter`, which lets concurrent batches share a commit.
"""

from __future__ import annotations

import json
import math
import queue
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from fleetml.errors import InvalidBatch, ItemError
from fleetml.timestamps import MAX_SECONDS, parse_ts_ms
from fleetml.timestamps import now_ms as clock_ms
from fleetml.vocab import ACCOUNT_ID_RE, EVENT_KINDS, METRIC_NAME_RE, json_problem

__all__ = [
    "BatchIngestor",
    "BatchRejected",
    "GroupCommitWriter",
    "EventBatch",
    "MetricBatch",
    "TimestampCache",
    "ValidationItem",
    "parse_body",
    "parse_ts_ms",
    "validate_events",
    "validate_metric_samples",
    "unknown_account_errors",
]

_INT_LIMIT = 2**63  # JSON integers stored in SQLite / PostgreSQL JSON must fit a signed 64-bit int
_NON_FINITE_STRINGS = frozenset(
    {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
)
_METRIC_NAME_HELP = (
    "metric names start with a letter or underscore, then letters, digits or underscores, "
    "at most 64 characters"
)
_ACCOUNT_ID_HELP = "account ids are 1-128 characters from letters, digits and _ . : @ + -"


#: One bad item of a batch (index, field, reason); ``index`` is None for batch-level problems.
ValidationItem = ItemError


class BatchRejected(InvalidBatch):
    """The batch was refused as a whole; ``errors`` lists every bad item.

    ``status_code`` is 422 for invalid content, 413 for a batch over the size limit and 400 for a
    body that is not JSON at all.
    """

    def __init__(self, detail: str, errors: list[ItemError], *, status_code: int = 422):
        super().__init__(detail, errors)
        self.status_code = status_code


# --- parsing --------------------------------------------------------------------------------


def parse_body(body: bytes) -> Any:
    """Parse a JSON request body.

    orjson is tried first (fast, strict). Standard JSON has no NaN or Infinity, but some clients
    (Python's ``json.dumps``, hand-rolled serialisers) write them as bare literals; orjson refuses
    those, so on failure the body is parsed again with :mod:`json`, which accepts them. The
    non-finite numbers are then reported per sample by the validator instead of failing the whole
    body with a parse error that names nothing.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as fast_error:
        rejected = BatchRejected(
            f"request body is not valid JSON: {fast_error}",
            [ValidationItem(None, "body", str(fast_error))],
            status_code=400,
        )
        if "depth limit" in str(fast_error):
            # nested deeper than orjson's 1,024 levels: no sample is; json would go as deep as
            # the process's recursion limit allows, so the answer would depend on it
            raise rejected from None
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise rejected from None


class TimestampCache:
    """Remembers parsed timestamp strings: a batch from one runtime repeats the same few stamps."""

    def __init__(self, max_entries: int = 200_000):
        self.max_entries = max_entries
        self.known: dict[str, int] = {}  # read directly by the validator's fast path

    def get(self, text: str) -> int:
        ms = self.known.get(text)
        if ms is None:
            ms = parse_ts_ms(text)
            if len(self.known) >= self.max_entries:
                self.known.clear()
            self.known[text] = ms
        return ms


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# --- shared checks --------------------------------------------------------------------------


def _items(payload: Any, key: str, *, max_items: int, what: str) -> list:
    """The list under ``key`` of the body, or a batch-level rejection."""
    if not isinstance(payload, dict):
        raise BatchRejected(
            f'request body must be a JSON object like {{"{key}": [...]}}, '
            f"got {_json_type(payload)}",
            [ValidationItem(None, "body", f"must be an object, got {_json_type(payload)}")],
        )
    items = payload.get(key)
    if not isinstance(items, list):
        reason = (
            "is required" if key not in payload else f"must be an array, got {_json_type(items)}"
        )
        raise BatchRejected(
            f'request body must carry "{key}": an array of {what}',
            [ValidationItem(None, key, reason)],
        )
    if len(items) > max_items:
        raise BatchRejected(
            f"batch of {len(items)} {what} is over the limit of {max_items}; split it",
            [ValidationItem(None, key, f"at most {max_items} items per request")],
            status_code=413,
        )
    return items


def _check_ts(value: Any, ts_cache: TimestampCache, max_ms: int) -> tuple[int | None, str | None]:
    """(epoch ms, None) for a good timestamp, (None, reason) for a bad one."""
    looks_like_ms = type(value) in (int, float) and 1e11 < value < 1e15
    hint = "; it looks like epoch milliseconds, send epoch seconds" if looks_like_ms else ""
    try:
        ms = ts_cache.get(value) if type(value) is str else parse_ts_ms(value)
    except ValueError as exc:
        return None, f"is too far in the future: {exc}{hint}" if hint else str(exc)
    if ms > max_ms:
        reason = "is too far in the future (more than the allowed clock skew ahead of the server)"
        return None, reason + hint
    return ms, None


def _check_account(value: Any) -> str | None:
    if type(value) is not str:
        if value is None:
            return "is required"
        return f"must be a string, got {_json_type(value)}"
    if not ACCOUNT_ID_RE.match(value):
        return f"{value!r} is not a valid account id; {_ACCOUNT_ID_HELP}"
    return None


def _bad_value_reason(value: Any) -> str:
    if isinstance(value, float):
        shown = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return f"{shown} is not a finite number"
    if isinstance(value, str) and value.strip().lower() in _NON_FINITE_STRINGS:
        return f"{value!r} is not a finite number"
    if isinstance(value, int) and not isinstance(value, bool):
        return "integer is out of the signed 64-bit range"
    return f"must be a number or null, got {_json_type(value)}"


def unknown_account_errors(
    items: list, unknown: Iterable[str], *, register_hint: bool = True
) -> list[ValidationItem]:
    """Errors for every item whose account id is in ``unknown`` (a second pass; rare path)."""
    unknown = set(unknown)
    hint = "; register it with POST /v1/accounts or send ?register=true" if register_hint else ""
    out = []
    for i, item in enumerate(items):
        aid = item.get("account_id") if isinstance(item, dict) else None
        if type(aid) is str and aid in unknown:
            out.append(ValidationItem(i, "account_id", f"unknown account {aid!r}{hint}"))
    return out


# --- metrics --------------------------------------------------------------------------------


@dataclass(slots=True)
class MetricBatch:
    """A validated metrics batch.

    ``samples`` maps (account id, epoch ms) to the observed values of that sample, with nulls
    dropped and duplicates within the batch merged (last value wins, as in the store).
    """

    n_samples: int
    n_values: int
    samples: dict[tuple[str, int], dict[str, float | int]]
    account_ids: set[str]
    metric_names: set[str]
    items: list = field(repr=False, default_factory=list)

    def rows(self, account_pks: Mapping[str, int]) -> list[tuple[int, int, str]]:
        """``(account_pk, ts_ms, values_json)`` rows for ``store.metrics.write_samples``.

        Sorted by key: inserting in primary-key order touches each B-tree page once.
        """
        dumps = orjson.dumps
        rows = [
            (account_pks[aid], ts, dumps(vals).decode())
            for (aid, ts), vals in self.samples.items()
            if vals
        ]
        rows.sort()
        return rows


def _check_values(
    i: int, vals: dict, good_names: set[str], name_ok
) -> tuple[dict, list[ItemError]]:
    """The slow path over one sample's values: the observed values and every problem found."""
    clean: dict = {}
    errors: list[ItemError] = []
    for name, v in vals.items():
        if name not in good_names:
            if not name_ok(name):
                errors.append(
                    ValidationItem(i, f"values.{name}", f"bad metric name; {_METRIC_NAME_HELP}")
                )
                continue
            good_names.add(name)
        tv = type(v)
        if v is None:
            continue  # not observed: not stored
        if (tv is float and math.isfinite(v)) or (tv is int and -_INT_LIMIT <= v < _INT_LIMIT):
            clean[name] = v
        else:
            errors.append(ValidationItem(i, f"values.{name}", _bad_value_reason(v)))
    return clean, errors


def validate_metric_samples(
    payload: Any,
    *,
    now_ms: int,
    max_future_skew_s: float,
    max_samples: int,
    ts_cache: TimestampCache | None = None,
    known_accounts: set[str] | None = None,
    known_metrics: set[str] | None = None,
) -> MetricBatch:
    """Validate a parsed ``{"samples": [...]}`` body; raise :class:`BatchRejected` listing all.

    ``known_accounts`` and ``known_metrics`` are caches of already-validated account ids and
    metric names (shared across requests by the API); they only grow with valid names.
    Whether each account exists is not checked here.
    """
    samples = _items(payload, "samples", max_items=max_samples, what="samples")
    ts_cache = ts_cache if ts_cache is not None else TimestampCache()
    good_aids = known_accounts if known_accounts is not None else set()
    good_names = known_metrics if known_metrics is not None else set()
    max_ms = now_ms + int(max_future_skew_s * 1000)
    name_ok = METRIC_NAME_RE.match
    merged: dict[tuple[str, int], dict] = {}
    aids: set[str] = set()
    names: set[str] = set()
    errors: list[ValidationItem] = []
    n_values = 0

    ts_known = ts_cache.known
    good_names_cover = good_names.issuperset
    batch_names_cover = names.issuperset
    for i, sample in enumerate(samples):
        if type(sample) is not dict:
            errors.append(ValidationItem(i, "", f"must be an object, got {_json_type(sample)}"))
            continue
        ok = True
        aid = sample.get("account_id")
        if type(aid) is not str or aid not in good_aids:
            reason = _check_account(aid)
            if reason is None:
                good_aids.add(aid)
            else:
                errors.append(ValidationItem(i, "account_id", reason))
                ok = False
        # Fast path for the common forms (a cached string, a finite number); anything else,
        # or a value out of bounds, goes through _check_ts for its reason.
        raw_ts = sample.get("ts")
        tt = type(raw_ts)
        if tt is str:
            ts = ts_known.get(raw_ts)
        elif (tt is float or tt is int) and 0 <= raw_ts < MAX_SECONDS:  # NaN fails too
            ts = round(raw_ts * 1000)
        else:
            ts = None
        if ts is None or ts > max_ms or ts < 0:
            ts, reason = _check_ts(raw_ts, ts_cache, max_ms)
            if reason is not None:
                errors.append(ValidationItem(i, "ts", reason))
                ok = False
        vals = sample.get("values")
        if type(vals) is not dict:
            reason = "is required" if vals is None else f"must be an object, got {_json_type(vals)}"
            errors.append(ValidationItem(i, "values", reason))
            continue
        # Fast path: known names, finite floats or in-range ints; nulls are dropped.
        clean = vals
        if good_names_cover(vals):
            has_null = False
            for v in vals.values():
                tv = type(v)
                if tv is float:
                    if v - v != 0:  # NaN or +-Infinity (only from the lenient parser)
                        clean = None
                        break
                elif tv is int:
                    if not -_INT_LIMIT <= v < _INT_LIMIT:
                        clean = None
                        break
                elif v is None:
                    has_null = True
                else:
                    clean = None
                    break
            if clean is not None and has_null:
                clean = {k: v for k, v in vals.items() if v is not None}
        else:
            clean = None
        if clean is None:
            clean, value_errors = _check_values(i, vals, good_names, name_ok)
            if value_errors:
                errors.extend(value_errors)
                ok = False
        if not ok:
            continue
        aids.add(aid)
        if not batch_names_cover(clean):
            names.update(clean)
        n_values += len(clean)
        key = (aid, ts)
        prev = merged.get(key)
        if prev is None:
            merged[key] = clean
        else:
            merged[key] = {**prev, **clean}  # never mutate the parsed body in place

    if errors:
        bad = len({e.index for e in errors})
        raise BatchRejected(
            f"batch rejected, nothing was stored: {bad} of {len(samples)} samples are invalid",
            errors,
        )
    return MetricBatch(
        n_samples=len(samples),
        n_values=n_values,
        samples=merged,
        account_ids=aids,
        metric_names=names,
        items=samples,
    )


# --- events ---------------------------------------------------------------------------------


@dataclass(slots=True)
class EventBatch:
    """A validated events batch: one ``(account_id, ts_ms, kind, detail)`` tuple per event."""

    events: list[tuple[str, int, str, str | None]]
    account_ids: set[str]
    items: list = field(repr=False, default_factory=list)


def validate_events(
    payload: Any,
    *,
    now_ms: int,
    max_future_skew_s: float,
    max_events: int,
    ts_cache: TimestampCache | None = None,
) -> EventBatch:
    """Validate a parsed ``{"events": [...]}`` body; raise :class:`BatchRejected` listing all.

    ``detail`` may be a string, null, or any JSON value (stored as its JSON text).
    """
    items = _items(payload, "events", max_items=max_events, what="events")
    ts_cache = ts_cache if ts_cache is not None else TimestampCache()
    max_ms = now_ms + int(max_future_skew_s * 1000)
    out: list[tuple[str, int, str, str | None]] = []
    aids: set[str] = set()
    errors: list[ValidationItem] = []
    for i, ev in enumerate(items):
        if type(ev) is not dict:
            errors.append(ValidationItem(i, "", f"must be an object, got {_json_type(ev)}"))
            continue
        n_before = len(errors)
        aid = ev.get("account_id")
        reason = _check_account(aid)
        if reason is not None:
            errors.append(ValidationItem(i, "account_id", reason))
        ts, reason = _check_ts(ev.get("ts"), ts_cache, max_ms)
        if reason is not None:
            errors.append(ValidationItem(i, "ts", reason))
        kind = ev.get("kind")
        if type(kind) is not str or kind not in EVENT_KINDS:
            shown = "is required" if kind is None else f"unknown event kind {kind!r}"
            errors.append(
                ValidationItem(i, "kind", f"{shown}; known kinds: {', '.join(sorted(EVENT_KINDS))}")
            )
        detail = ev.get("detail")
        if detail is not None:
            problem = json_problem(detail)
            if problem is not None:
                where = f"detail.{problem[0]}" if problem[0] else "detail"
                errors.append(ValidationItem(i, where, problem[1]))
            elif type(detail) is not str:
                detail = orjson.dumps(detail).decode()
        if len(errors) == n_before:
            out.append((aid, ts, kind, detail))
            aids.add(aid)
    if errors:
        bad = len({e.index for e in errors})
        raise BatchRejected(
            f"batch rejected, nothing was stored: {bad} of {len(items)} events are invalid", errors
        )
    return EventBatch(events=out, account_ids=aids, items=items)


# --- writing --------------------------------------------------------------------------------


@dataclass(slots=True)
class IngestOutcome:
    """What was durably committed for one batch."""

    samples: int
    rows: int
    values: int
    registered: list[str]


class GroupCommitWriter:
    """One writer thread; batches that arrive while a commit is running share the next one.

    Each commit of SQLite in WAL mode with ``synchronous=FULL`` rewrites every touched page and
    waits for an fsync, so its cost hardly depends on the rows it carries. Committing the
    batches of concurrent requests together (group commit) keeps "2xx means durably committed"
    for each of them while paying that cost once. A batch is never split across transactions:
    when a group fails, each of its batches is retried alone, so one bad batch cannot sink the
    others and each still lands all or nothing. One writer also means SQLite never makes a
    request wait on its busy timeout for another writer of this process.
    """

    def __init__(self, engine, *, max_group: int = 32):
        self.engine = engine
        self.max_group = max_group
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: Transactions committed and batches they carried (their ratio is the mean group size).
        self.commits = 0
        self.batches = 0

    def run(self, work):
        """Run ``work(conn)`` in a committed transaction (maybe shared); return its result."""
        job = _Job(work)
        self._ensure_thread()
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def close(self) -> None:
        """Stop the writer thread after the queued work is committed."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=30)

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="fleetml-ingest-writer", daemon=True
                )
                self._thread.start()

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            stop = False
            while len(jobs) < self.max_group:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                jobs.append(more)
            self._commit(jobs)
            if stop:
                return

    def _commit(self, jobs: list[_Job]) -> None:
        try:
            with self.engine.begin() as conn:
                results = [job.work(conn) for job in jobs]
        except Exception as exc:  # noqa: BLE001 - handed to the waiting request
            if len(jobs) > 1:
                for job in jobs:  # isolate the failing batch; the others commit alone
                    self._commit([job])
                return
            jobs[0].error = exc
            jobs[0].done.set()
            return
        self.commits += 1
        self.batches += len(jobs)
        for job, result in zip(jobs, results, strict=True):
            job.result = result
            job.done.set()


class _Job:
    __slots__ = ("work", "done", "result", "error")

    def __init__(self, work):
        self.work = work
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None


class BatchIngestor:
    """Validates HTTP batches and writes them durably, with caches shared across requests.

    One instance lives as long as the API process. Its caches only hold facts that cannot become
    false: an account id's internal key (accounts are retired, never deleted), a string's parse as
    a timestamp, a metric name's validity. Validation runs in the request's worker thread; writes
    go through one :class:`GroupCommitWriter`. A cache entry is added only after the
    transaction that created the fact committed.
    """

    def __init__(self, engine, *, max_batch: int, max_future_skew_s: float):
        self.engine = engine
        self.max_batch = max_batch
        self.max_future_skew_s = max_future_skew_s
        self.writer = GroupCommitWriter(engine)
        self.ts_cache = TimestampCache()
        self.account_pks: dict[str, int] = {}
        self.valid_account_ids: set[str] = set()
        self.valid_metric_names: set[str] = set()
        self.registered_metrics: set[str] = set()  # names the metric_kinds table holds

    def close(self) -> None:
        self.writer.close()

    def _resolve(self, items: list, account_ids: set[str], *, register: bool) -> list[str]:
        """Fill the key cache for ``account_ids``; return the ids to register (or reject)."""
        from fleetml.store.accounts import account_pks

        missing = [a for a in account_ids if a not in self.account_pks]
        if not missing:
            return []
        found = account_pks(self.engine, missing)
        self.account_pks.update(found)
        unknown = [a for a in missing if a not in found]
        if unknown and not register:
            errors = unknown_account_errors(items, unknown)
            raise BatchRejected(
                f"batch rejected, nothing was stored: {len(unknown)} unknown account(s) "
                f"({', '.join(sorted(unknown)[:5])}{', ...' if len(unknown) > 5 else ''}); "
                "register them with POST /v1/accounts or send ?register=true",
                errors,
            )
        return sorted(unknown)

    def _keys(self, conn, unknown: list[str], *, actor: str, source: str) -> dict[str, int]:
        """Account keys for the batch, registering ``unknown`` inside the caller's transaction."""
        if not unknown:
            return self.account_pks
        from fleetml.store.accounts import register_unknown

        return {**self.account_pks, **register_unknown(conn, unknown, actor=actor, source=source)}

    def ingest_metrics(
        self, body: bytes, *, register: bool = False, actor: str, now_ms: int | None = None
    ) -> IngestOutcome:
        """Parse, validate and durably store a ``{"samples": [...]}`` body, all or nothing."""
        from fleetml.store.metrics import ensure_metric_kinds, write_samples

        now_ms = now_ms if now_ms is not None else clock_ms()
        batch = validate_metric_samples(
            parse_body(body),
            now_ms=now_ms,
            max_future_skew_s=self.max_future_skew_s,
            max_samples=self.max_batch,
            ts_cache=self.ts_cache,
            known_accounts=self.valid_account_ids,
            known_metrics=self.valid_metric_names,
        )
        unknown = self._resolve(batch.items, batch.account_ids, register=register)
        rows = None if unknown else batch.rows(self.account_pks)  # built outside the writer

        def work(conn):
            pks = self._keys(conn, unknown, actor=actor, source="ingest:metrics")
            batch_rows = rows if rows is not None else batch.rows(pks)
            if not batch.metric_names <= self.registered_metrics:
                ensure_metric_kinds(conn, batch.metric_names)
            write_samples(conn, batch_rows)
            return pks, len(batch_rows)

        pks, n_rows = self.writer.run(work)
        self.registered_metrics |= batch.metric_names  # committed; metric kinds are never deleted
        if unknown:
            self.account_pks.update({a: pks[a] for a in unknown})
        return IngestOutcome(batch.n_samples, n_rows, batch.n_values, unknown)

    def ingest_events(
        self, body: bytes, *, register: bool = False, actor: str, now_ms: int | None = None
    ) -> IngestOutcome:
        """Parse, validate and durably store an ``{"events": [...]}`` body, all or nothing."""
        from fleetml.store.events import write_events

        now_ms = now_ms if now_ms is not None else clock_ms()
        batch = validate_events(
            parse_body(body),
            now_ms=now_ms,
            max_future_skew_s=self.max_future_skew_s,
            max_events=self.max_batch,
            ts_cache=self.ts_cache,
        )
        unknown = self._resolve(batch.items, batch.account_ids, register=register)
        source = f"api:{actor}"[:64]

        def work(conn):
            pks = self._keys(conn, unknown, actor=actor, source="ingest:events")
            rows = [(pks[aid], ts, kind, detail, source) for aid, ts, kind, detail in batch.events]
            write_events(conn, rows)
            return pks, len(rows)

        pks, n_rows = self.writer.run(work)
        if unknown:
            self.account_pks.update({a: pks[a] for a in unknown})
        return IngestOutcome(len(batch.items), n_rows, 0, unknown)
