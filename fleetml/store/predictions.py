"""Predictions the live loop made: the newest per (account, family, horizon), and their history.

Writes go through the DB-API driver in bulk (a tick over 10,000 accounts writes about 40,000
rows): ``executemany`` on SQLite, ``COPY`` into a staging table then one upsert on PostgreSQL.
History rows are keyed by the data they scored (``data_until``), so re-running a tick over the
same samples overwrites instead of duplicating.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa

from fleetml.store.audit import connect
from fleetml.store.tables import prediction_history, predictions_latest

_COLS = (
    "account_id",
    "family",
    "horizon",
    "computed_at",
    "data_until",
    "score",
    "flag",
    "model_version",
    "fallback",
    "detail",
)
_HIST_COLS = _COLS[:-1]

_LATEST_SET = ", ".join(
    f"{c} = excluded.{c}" for c in _COLS if c not in ("account_id", "family", "horizon")
)
_HIST_SET = ", ".join(
    f"{c} = excluded.{c}"
    for c in _HIST_COLS
    if c not in ("account_id", "family", "horizon", "data_until")
)


def _rows(frame: pd.DataFrame, computed_at: int) -> list[tuple]:
    """DB-API rows, column by column (a tick writes tens of thousands)."""
    n = len(frame)
    score = frame["score"].to_numpy(dtype=float)
    scores = np.where(np.isfinite(score), score, np.nan).tolist()
    scores = [None if x != x else x for x in scores]  # NaN -> NULL
    versions = [
        None if v is None or v != v else int(v)
        for v in frame["model_version"].to_numpy(dtype=object).tolist()
    ]
    details: list = [None] * n
    detail = frame["detail"].to_numpy(dtype=object) if "detail" in frame else None
    top = frame["top_metrics"].to_numpy(dtype=object) if "top_metrics" in frame else None
    has = np.zeros(n, dtype=bool)
    if detail is not None:
        has |= np.array([isinstance(d, dict) and bool(d) for d in detail], dtype=bool)
    if top is not None:
        has |= np.array([bool(t) for t in top], dtype=bool)
    for i in np.flatnonzero(has):
        d = dict(detail[i]) if detail is not None and isinstance(detail[i], dict) else {}
        if top is not None and top[i]:
            d["top_metrics"] = str(top[i]).split(";")
        details[i] = orjson.dumps(d).decode()
    return list(
        zip(
            frame["account_id"].astype(str).tolist(),
            frame["family"].astype(str).tolist(),
            frame["horizon"].astype(str).tolist(),
            [int(computed_at)] * n,
            frame["data_until"].to_numpy(dtype="int64").tolist(),
            scores,
            frame["flag"].to_numpy(dtype=bool).tolist(),
            versions,
            frame["fallback"].to_numpy(dtype=bool).tolist(),
            details,
            strict=True,
        )
    )


def write_predictions(conn: sa.Connection, frame: pd.DataFrame, *, computed_at: int) -> int:
    """Upsert a tick's predictions (the live scorer's frame) into the latest table and the
    history, inside the caller's transaction. Returns rows written."""
    if not len(frame):
        return 0
    rows = _rows(frame, computed_at)
    hist = [r[:-1] for r in rows]
    dbapi = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        _pg_upsert(
            dbapi, "predictions_latest", _COLS, rows, "account_id, family, horizon", _LATEST_SET
        )
        _pg_upsert(
            dbapi,
            "prediction_history",
            _HIST_COLS,
            hist,
            "account_id, family, horizon, data_until",
            _HIST_SET,
        )
        return len(rows)
    cur = dbapi.cursor()
    try:
        marks = ", ".join("?" * len(_COLS))
        cur.executemany(
            f"INSERT INTO predictions_latest ({', '.join(_COLS)}) VALUES ({marks}) "
            f"ON CONFLICT(account_id, family, horizon) DO UPDATE SET {_LATEST_SET}",
            rows,
        )
        marks = ", ".join("?" * len(_HIST_COLS))
        cur.executemany(
            f"INSERT INTO prediction_history ({', '.join(_HIST_COLS)}) VALUES ({marks}) "
            f"ON CONFLICT(account_id, family, horizon, data_until) DO UPDATE SET {_HIST_SET}",
            hist,
        )
    finally:
        cur.close()
    return len(rows)


def _pg_upsert(dbapi, table: str, cols: Sequence[str], rows, key: str, set_clause: str) -> None:
    stage = f"_fleetml_stage_{table}"
    with dbapi.cursor() as cur:
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        )
        with cur.copy(f"COPY {stage} ({', '.join(cols)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(
            f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(cols)} FROM {stage} "
            f"ON CONFLICT ({key}) DO UPDATE SET {set_clause}"
        )
        cur.execute(f"TRUNCATE {stage}")


def read_latest(
    bind,
    *,
    accounts: Iterable[str] | None = None,
    families: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Rows of the latest table (all, or of ``accounts`` / ``families``)."""
    t = predictions_latest
    query = sa.select(t)
    if accounts is not None:
        query = query.where(t.c.account_id.in_(list(accounts)))
    if families is not None:
        query = query.where(t.c.family.in_(list(families)))
    with connect(bind) as conn:
        rows = conn.execute(query).mappings().all()
    return pd.DataFrame([dict(r) for r in rows], columns=list(t.c.keys()))


def latest_version(bind) -> tuple[int, int]:
    """(newest ``computed_at``, row count) of the latest table: changes whenever a tick wrote."""
    t = predictions_latest
    with connect(bind) as conn:
        row = conn.execute(sa.select(sa.func.max(t.c.computed_at), sa.func.count())).one()
    return int(row[0] or 0), int(row[1] or 0)


def flagged_runs(
    bind, *, limit_per_key: int = 500, accounts: Iterable[str] | None = None
) -> pd.DataFrame:
    """For every (account, family, horizon) flagged in the latest table (of ``accounts`` when
    given): how many of its newest history rows in a row were flagged (the live scorer's run
    counters after a restart)."""
    latest = sa.select(
        predictions_latest.c.account_id, predictions_latest.c.family, predictions_latest.c.horizon
    ).where(predictions_latest.c.flag.is_(True))
    if accounts is not None:
        latest = latest.where(predictions_latest.c.account_id.in_(list(accounts)))
    h = prediction_history
    out = []
    with connect(bind) as conn:
        keys = conn.execute(latest).all()
        for acc, fam, hor in keys:  # flagged accounts only: few
            flags = conn.execute(
                sa.select(h.c.flag)
                .where(h.c.account_id == acc, h.c.family == fam, h.c.horizon == hor)
                .order_by(h.c.data_until.desc())
                .limit(limit_per_key)
            ).scalars()
            run = 0
            for f in flags:
                if not f:
                    break
                run += 1
            out.append({"account_id": acc, "family": fam, "horizon": hor, "run": run, "flag": True})
    return pd.DataFrame(out, columns=["account_id", "family", "horizon", "run", "flag"])


def _latest_anomaly_rows(bind, accounts: Iterable[str] | None) -> list[tuple]:
    """``(account_id, data_until, model_version, fallback, flag, detail)`` of every latest
    anomaly prediction with a readable detail (of ``accounts`` when given)."""
    t = predictions_latest
    query = sa.select(
        t.c.account_id, t.c.data_until, t.c.model_version, t.c.fallback, t.c.flag, t.c.detail
    ).where(t.c.family == "anomaly", t.c.detail.is_not(None))
    if accounts is not None:
        query = query.where(t.c.account_id.in_(list(accounts)))
    rows = []
    with connect(bind) as conn:
        for account, until, version, fallback, flag, detail in conn.execute(query):
            try:
                if isinstance(detail, str | bytes):
                    detail = orjson.loads(detail)
            except orjson.JSONDecodeError:
                continue
            if isinstance(detail, dict):
                rows.append((str(account), until, version, bool(fallback), bool(flag), detail))
    return rows


def _maxima(rows: list[tuple]) -> pd.DataFrame:
    out = []
    for account, until, _, _, _, detail in rows:
        top, prev = detail.get("habituation_max"), detail.get("habituation_prev", None)
        held = detail.get("habituation_until")
        if not _non_negative(top):
            continue
        prev = prev if _non_negative(prev) else top
        # the row the maximum holds (a fallback tick keeps the model's state unchanged)
        until = int(held) if isinstance(held, int) else int(until)
        out.append((account, float(top), float(prev), until))
    return pd.DataFrame(out, columns=["account_id", "max", "prev", "until"])


def _contexts(rows: list[tuple]) -> pd.DataFrame:
    out = []
    for account, until, version, fallback, _, detail in rows:
        raw = detail.get("context_raw")
        ok = isinstance(raw, list) and all(v is None or _finite(v) for v in raw)
        if ok and not fallback and until is not None and version is not None:
            out.append((account, int(version), int(until), raw))
    return pd.DataFrame(out, columns=["account_id", "version", "until", "raw"])


def _rules(rows: list[tuple]) -> pd.DataFrame:
    out = []
    for account, until, _, fallback, _, detail in rows:
        before, after = detail.get("rule_before"), detail.get("rule_after")
        ok = all(
            isinstance(state, list)
            and len(state) == 3
            and all(_non_negative(v) and float(v) == int(v) for v in state)
            for state in (before, after)
        )
        if ok and not fallback and until is not None:
            out.append((account, int(until), [int(v) for v in before], [int(v) for v in after]))
    return pd.DataFrame(out, columns=["account_id", "until", "before", "after"])


def anomaly_rule_states(bind, *, accounts: Iterable[str] | None = None) -> pd.DataFrame:
    """Each account's anomaly alert-rule state as stored with its latest anomaly prediction
    (``detail.rule_before`` and ``detail.rule_after``: ``[run, since, kept]`` before and after
    the row): ``account_id``, ``until`` (the row's time), ``before``, ``after``. Fallback rows
    and malformed states are left out."""
    return _rules(_latest_anomaly_rows(bind, accounts))


def habituation_maxima(bind, *, accounts: Iterable[str] | None = None) -> pd.DataFrame:
    """Each account's habituation state as stored with its latest anomaly prediction:
    ``account_id``, ``max`` (``detail.habituation_max``), ``prev`` (``detail.habituation_prev``,
    the maximum before that row; ``max`` when absent) and ``until`` (the time of the row the
    maximum holds: ``detail.habituation_until``, else the prediction's ``data_until``).
    Accounts without one are left out; ``accounts`` reads only those."""
    return _maxima(_latest_anomaly_rows(bind, accounts))


def anomaly_contexts(bind, *, accounts: Iterable[str] | None = None) -> pd.DataFrame:
    """Each account's anomaly calibration context as stored with its latest anomaly prediction
    (``detail.context_raw``): ``account_id``, ``version`` (the model that scored the row),
    ``until`` (the row's time) and ``raw`` (the raw scores before the row, then its own; None
    where a score was missing). Fallback rows, and rows without one or with a malformed one,
    are left out."""
    return _contexts(_latest_anomaly_rows(bind, accounts))


@dataclass(frozen=True)
class AnomalyState:
    """The anomaly state stored with the latest anomaly predictions (one read): the
    :func:`habituation_maxima`, :func:`anomaly_contexts` and :func:`anomaly_rule_states` rows,
    and the accounts whose latest anomaly prediction is flagged."""

    maxima: pd.DataFrame
    contexts: pd.DataFrame
    rules: pd.DataFrame
    flagged: frozenset[str]

    def until(self) -> pd.Series:
        """Per account, the time of the newest row any of its state was stored for."""
        held = pd.concat(
            [f[["account_id", "until"]] for f in (self.maxima, self.contexts, self.rules)],
            ignore_index=True,
        )
        return held.groupby("account_id")["until"].max()


def anomaly_states(bind, *, accounts: Iterable[str] | None = None) -> AnomalyState:
    """Every account's (or ``accounts``') :class:`AnomalyState`, in one read."""
    rows = _latest_anomaly_rows(bind, accounts)
    flagged = frozenset(r[0] for r in rows if r[4])
    return AnomalyState(_maxima(rows), _contexts(rows), _rules(rows), flagged)


def _finite(value) -> bool:
    """A JSON number that is a finite float (not a bool, not an integer past float's range)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _non_negative(value) -> bool:
    return _finite(value) and value >= 0


def read_history(
    bind,
    account_id: str,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    families: Iterable[str] | None = None,
    limit: int = 10_000,
) -> pd.DataFrame:
    """One account's prediction history, oldest first: the newest ``limit`` rows in
    ``[start_ms, end_ms]`` (by the data each prediction was made on)."""
    h = prediction_history
    query = sa.select(h).where(h.c.account_id == account_id)
    if start_ms is not None:
        query = query.where(h.c.data_until >= start_ms)
    if end_ms is not None:
        query = query.where(h.c.data_until <= end_ms)
    if families is not None:
        query = query.where(h.c.family.in_(list(families)))
    query = query.order_by(h.c.data_until.desc(), h.c.family, h.c.horizon).limit(limit)
    with connect(bind) as conn:
        rows = conn.execute(query).mappings().all()
    frame = pd.DataFrame([dict(r) for r in rows], columns=list(h.c.keys()))
    return frame.iloc[::-1].reset_index(drop=True)
