"""Table definitions (SQLAlchemy Core). Alembic migrations in ``migrations/`` create them.

Metric samples are stored one row per (account, ts) with the values of every metric the sample
carried in one JSON object. That keeps a sample of 8 metrics to one row (bulk insert runs at the
row rate of the database, not eight times slower), lets any metric name appear without DDL, and
still answers range reads per metric: the reader extracts the requested metrics in SQL.
Idempotence on (account, ts, metric) is an upsert that merges the JSON objects.

The primary key is (ts, account_pk): the runtime pushes the whole fleet's samples time after
time, so a batch lands at the end of the B-tree and a commit writes a handful of pages. Keyed by
account first, the same batch of 200 accounts dirtied 200 pages and committed 3.5x slower on
SQLite. Reads are time-bounded (latest windows, training ranges); PostgreSQL additionally keeps
an (account_pk, ts) index.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()

# JSON on SQLite (text, with json_extract / json_patch), JSONB on PostgreSQL (with ->> and ||).
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(128), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("master_id", sa.String(128), nullable=True),
    sa.Column("group", sa.String(128), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("capacity", sa.Float, nullable=True),
    sa.Column("attributes", JSONType, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("retired_at", sa.BigInteger, nullable=True),
    sa.Index("ix_accounts_master_id", "master_id"),
    sa.Index("ix_accounts_group", "group"),
)

metric_kinds = sa.Table(
    "metric_kinds",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("unit", sa.String(32), nullable=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

samples = sa.Table(
    "samples",
    metadata,
    sa.Column("account_pk", sa.Integer, nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("vals", JSONType, nullable=False),
    sa.PrimaryKeyConstraint("ts", "account_pk", name="pk_samples"),
    sqlite_with_rowid=False,
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_pk", sa.Integer, nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("source", sa.String(64), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("account_pk", "ts", "kind", name="uq_events_account_ts_kind"),
    sa.Index("ix_events_ts", "ts"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("entity_type", sa.String(32), nullable=False),
    sa.Column("entity_id", sa.String(128), nullable=True),
    sa.Column("before", JSONType, nullable=True),
    sa.Column("after", JSONType, nullable=True),
    sa.Column("detail", JSONType, nullable=True),
    sa.Index("ix_audit_ts", "ts"),
    sa.Index("ix_audit_entity", "entity_type", "entity_id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
)
