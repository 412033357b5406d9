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

# ------------------------------------------------------------------------------------------------
# The live loop (migration 0002): predictions, forecasts, alerts, silences, notifications, job runs.
# Account ids are stored as text (not account_pk) so these tables read without a join and keep
# their history when an account is retired.

#: The newest prediction per (account, family, horizon): what the prediction API serves.
#: ``horizon`` is "" for families without one (anomaly).
predictions_latest = sa.Table(
    "predictions_latest",
    metadata,
    sa.Column("account_id", sa.String(128), nullable=False),
    sa.Column("family", sa.String(16), nullable=False),
    sa.Column("horizon", sa.String(16), nullable=False),
    sa.Column("computed_at", sa.BigInteger, nullable=False),
    sa.Column("data_until", sa.BigInteger, nullable=True),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("flag", sa.Boolean, nullable=False),
    sa.Column("model_version", sa.Integer, nullable=True),
    sa.Column("fallback", sa.Boolean, nullable=False),
    sa.Column("detail", JSONType, nullable=True),
    sa.PrimaryKeyConstraint("account_id", "family", "horizon", name="pk_predictions_latest"),
)

#: Every prediction the tick made, kept for ``prediction_retention``; keyed by the data it scored,
#: so a tick re-run over the same samples overwrites instead of duplicating.
prediction_history = sa.Table(
    "prediction_history",
    metadata,
    sa.Column("account_id", sa.String(128), nullable=False),
    sa.Column("family", sa.String(16), nullable=False),
    sa.Column("horizon", sa.String(16), nullable=False),
    sa.Column("data_until", sa.BigInteger, nullable=False),
    sa.Column("computed_at", sa.BigInteger, nullable=False),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("flag", sa.Boolean, nullable=False),
    sa.Column("model_version", sa.Integer, nullable=True),
    sa.Column("fallback", sa.Boolean, nullable=False),
    sa.PrimaryKeyConstraint(
        "account_id", "family", "horizon", "data_until", name="pk_prediction_history"
    ),
    sa.Index("ix_prediction_history_data_until", "data_until"),
)

#: Forecast cache: one row per (scope, target, metric, horizon) from the hourly job.
forecasts = sa.Table(
    "forecasts",
    metadata,
    sa.Column("scope", sa.String(16), nullable=False),  # "account" | "group"
    sa.Column("target", sa.String(128), nullable=False),
    sa.Column("metric", sa.String(64), nullable=False),
    sa.Column("horizon", sa.Integer, nullable=False),
    sa.Column("computed_at", sa.BigInteger, nullable=False),
    sa.Column("model_version", sa.Integer, nullable=True),
    sa.Column("payload", JSONType, nullable=False),
    sa.PrimaryKeyConstraint("scope", "target", "metric", "horizon", name="pk_forecasts"),
)

#: Every forecast the hourly job made (the cache above keeps only the newest), to measure them
#: against what happened. Kept for ``prediction_retention_s``.
forecast_history = sa.Table(
    "forecast_history",
    metadata,
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("target", sa.String(128), nullable=False),
    sa.Column("metric", sa.String(64), nullable=False),
    sa.Column("horizon", sa.Integer, nullable=False),
    sa.Column("computed_at", sa.BigInteger, nullable=False),
    sa.Column("model_version", sa.Integer, nullable=True),
    sa.Column("payload", JSONType, nullable=False),
    sa.PrimaryKeyConstraint(
        "scope", "target", "metric", "horizon", "computed_at", name="pk_forecast_history"
    ),
    sa.Index("ix_forecast_history_computed_at", "computed_at"),
)

#: Alerts: at most one open (firing or acknowledged) alert per (account, kind), enforced by a
#: partial unique index, so a tick re-run after a crash cannot open a second one.
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(128), nullable=False),
    sa.Column("group", sa.String(128), nullable=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # firing | acknowledged | resolved
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("detail", JSONType, nullable=True),
    sa.Column("opened_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("last_seen_at", sa.BigInteger, nullable=False),
    sa.Column("acknowledged_at", sa.BigInteger, nullable=True),
    sa.Column("acknowledged_by", sa.String(128), nullable=True),
    sa.Column("resolved_at", sa.BigInteger, nullable=True),
    sa.Column("resolved_by", sa.String(128), nullable=True),
    sa.Column("silenced", sa.Boolean, nullable=False),
    sa.Index("ix_alerts_state", "state"),
    sa.Index("ix_alerts_opened_at", "opened_at"),
    sa.Index(
        "uq_alerts_open",
        "account_id",
        "kind",
        unique=True,
        sqlite_where=sa.text("state != 'resolved'"),
        postgresql_where=sa.text("state != 'resolved'"),
    ),
)

#: Every state change of an alert (who, when, from, to, note).
alert_history = sa.Table(
    "alert_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.Integer, nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("from_state", sa.String(16), nullable=True),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("note", sa.Text, nullable=True),
    sa.Index("ix_alert_history_alert", "alert_id"),
)

#: What ops said of an alert: was it a real problem or a false alarm (the latest word counts).
alert_feedback = sa.Table(
    "alert_feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.Integer, nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("verdict", sa.String(16), nullable=False),  # real | false_alarm
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("note", sa.Text, nullable=True),
    sa.Index("ix_alert_feedback_alert", "alert_id"),
)

#: Silences: an alert matching every given matcher (account, group, kind) while
#: ``starts_at <= now < ends_at`` is recorded but not notified.
silences = sa.Table(
    "silences",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(128), nullable=True),
    sa.Column("group", sa.String(128), nullable=True),
    sa.Column("kind", sa.String(32), nullable=True),
    sa.Column("starts_at", sa.BigInteger, nullable=False),
    sa.Column("ends_at", sa.BigInteger, nullable=False),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("deleted_at", sa.BigInteger, nullable=True),
)

#: Notification outbox: written in the same transaction as the alert change it reports, delivered
#: by a sender thread with retries; unique per (alert, event, target), so nothing is sent twice.
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.Integer, nullable=False),
    sa.Column("event", sa.String(16), nullable=False),  # firing | resolved
    sa.Column("target", sa.String(512), nullable=False),
    sa.Column("format", sa.String(16), nullable=False),  # json | alertmanager
    sa.Column("payload", JSONType, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # pending | delivered | failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("delivered_at", sa.BigInteger, nullable=True),
    sa.UniqueConstraint("alert_id", "event", "target", name="uq_notifications_alert_event"),
    sa.Index("ix_notifications_state", "state"),
)

#: Every scheduler job run (and ``fleetml tick``): what ran, when, how it ended, what it counted.
job_runs = sa.Table(
    "job_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job", sa.String(64), nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("ended_at", sa.BigInteger, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),  # running | ok | error | skipped
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("counts", JSONType, nullable=True),
    sa.Column("host", sa.String(128), nullable=True),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Index("ix_job_runs_started_at", "started_at"),
)

# ------------------------------------------------------------------------------------------------
# Decisions (migration 0003): each group's decision settings, the decision record, the actions
# published to the runtime, recommendations for people, and the routing weights in effect.
# Every row a tick writes carries a dedup key (tick time, kind, account), so a rerun of the same
# tick after a crash writes nothing twice.

#: A group's decision settings: only the fields that differ from ``GroupPolicy()`` (and ``mode``
#: whenever it was set, since the default mode is a deployment setting).
group_policies = sa.Table(
    "group_policies",
    metadata,
    sa.Column("group", sa.String(128), primary_key=True),
    sa.Column("settings", JSONType, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("updated_by", sa.String(128), nullable=True),
)

#: The decision record: what was decided, by which rule, on which inputs and model versions, and
#: (for failovers) whether it turned out to be needed. Answers "why did traffic move".
decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts_ms", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),  # weight | an ActionKind | recommendation
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("account_id", sa.String(128), nullable=True),
    sa.Column("group", sa.String(128), nullable=True),
    sa.Column("mode", sa.String(16), nullable=False),
    # executed | shadow | awaiting_approval | recommended | recorded | rejected | expired | ...
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("params", JSONType, nullable=False),
    sa.Column("inputs", JSONType, nullable=False),
    sa.Column("models", JSONType, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("action_id", sa.Integer, nullable=True),
    sa.Column("recommendation_id", sa.Integer, nullable=True),
    sa.Column("outcome", JSONType, nullable=True),
    sa.Column("outcome_at", sa.BigInteger, nullable=True),
    sa.Column("dedup_key", sa.String(256), nullable=True),
    sa.UniqueConstraint("dedup_key", name="uq_decisions_dedup_key"),
    sa.Index("ix_decisions_account_ts", "account_id", "ts_ms"),
    sa.Index("ix_decisions_ts", "ts_ms"),
    sa.Index("ix_decisions_group_ts", "group", "ts_ms"),
    sa.Index("ix_decisions_action", "action_id"),
    sa.Index("ix_decisions_kind_ts", "kind", "ts_ms"),
)

#: Actions for the runtime. auto mode publishes them ``pending``; approve mode starts them
#: ``awaiting_approval`` until an operator approves (-> pending) or rejects them. The runtime
#: acknowledges a pending action (acknowledged | failed); one nobody acknowledged in time
#: expires; a newer action of the same kind for the same account supersedes an open one.
#: ``approved_by``/``approved_at`` name the operator who settled a waiting action (approved or
#: rejected: the state says which).
actions = sa.Table(
    "actions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("decision_id", sa.Integer, nullable=True),
    sa.Column("account_id", sa.String(128), nullable=False),
    sa.Column("group", sa.String(128), nullable=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("params", JSONType, nullable=False),
    # awaiting_approval | pending | acknowledged | failed | expired | rejected | superseded
    sa.Column("state", sa.String(24), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Column("approved_by", sa.String(128), nullable=True),
    sa.Column("approved_at", sa.BigInteger, nullable=True),
    sa.Column("acked_at", sa.BigInteger, nullable=True),
    sa.Column("acked_by", sa.String(128), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("dedup_key", sa.String(256), nullable=True),
    sa.UniqueConstraint("dedup_key", name="uq_actions_dedup_key"),
    sa.Index("ix_actions_state_created", "state", "created_at"),
    sa.Index("ix_actions_account", "account_id"),
)

#: Recommendations for people, with evidence: at most one open per dedup key (a partial unique
#: index, like uq_alerts_open); raising an open one again updates it and counts an occurrence.
recommendations = sa.Table(
    "recommendations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("group", sa.String(128), nullable=True),
    sa.Column("account_id", sa.String(128), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),  # open|accepted|dismissed|applied|expired
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("evidence", JSONType, nullable=False),
    sa.Column("expected_impact", JSONType, nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("setting", JSONType, nullable=True),
    sa.Column("dedup_key", sa.String(256), nullable=False),
    sa.Column("occurrences", sa.Integer, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Column("decided_by", sa.String(128), nullable=True),
    sa.Column("decided_at", sa.BigInteger, nullable=True),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Index("ix_recommendations_state", "state"),
    sa.Index(
        "uq_recommendations_open",
        "dedup_key",
        unique=True,
        sqlite_where=sa.text("state = 'open'"),
        postgresql_where=sa.text("state = 'open'"),
    ),
)

#: The routing weight in effect per account (what ``GET /v1/weights`` serves), with the target
#: it is moving towards, the reasons it sits below capacity and the model versions behind it.
weights = sa.Table(
    "weights",
    metadata,
    sa.Column("account_id", sa.String(128), primary_key=True),
    sa.Column("group", sa.String(128), nullable=False),
    sa.Column("weight", sa.Float, nullable=False),
    sa.Column("target", sa.Float, nullable=False),
    sa.Column("reasons", JSONType, nullable=False),
    sa.Column("models", JSONType, nullable=False),
    sa.Column("ts_ms", sa.BigInteger, nullable=False),
    sa.Index("ix_weights_group", "group"),
)

#: The decision policy's controller state after the last tick (run counters, cooldowns, the
#: safety envelope's window, smoothed weights), so a restarted worker or a one-shot tick
#: continues where the previous one stopped. One row per decision loop (``key``).
controller_state = sa.Table(
    "controller_state",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("tick_ms", sa.BigInteger, nullable=False),
    sa.Column("state", JSONType, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)
