"""Decisions: group policies, the decision record, actions for the runtime, recommendations
for people and the routing weights in effect.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-14 10:12:41.508113
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "actions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("decision_id", sa.Integer(), nullable=True),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("group", sa.String(length=128), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("params", JSONType, nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("approved_by", sa.String(length=128), nullable=True),
        sa.Column("approved_at", sa.BigInteger(), nullable=True),
        sa.Column("acked_at", sa.BigInteger(), nullable=True),
        sa.Column("acked_by", sa.String(length=128), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("dedup_key", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedup_key", name="uq_actions_dedup_key"),
    )
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.create_index("ix_actions_account", ["account_id"], unique=False)
        batch_op.create_index("ix_actions_state_created", ["state", "created_at"], unique=False)

    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=True),
        sa.Column("group", sa.String(length=128), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("params", JSONType, nullable=False),
        sa.Column("inputs", JSONType, nullable=False),
        sa.Column("models", JSONType, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("action_id", sa.Integer(), nullable=True),
        sa.Column("recommendation_id", sa.Integer(), nullable=True),
        sa.Column("outcome", JSONType, nullable=True),
        sa.Column("outcome_at", sa.BigInteger(), nullable=True),
        sa.Column("dedup_key", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedup_key", name="uq_decisions_dedup_key"),
    )
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.create_index("ix_decisions_account_ts", ["account_id", "ts_ms"], unique=False)
        batch_op.create_index("ix_decisions_action", ["action_id"], unique=False)
        batch_op.create_index("ix_decisions_group_ts", ["group", "ts_ms"], unique=False)
        batch_op.create_index("ix_decisions_ts", ["ts_ms"], unique=False)

    op.create_table(
        "group_policies",
        sa.Column("group", sa.String(length=128), nullable=False),
        sa.Column("settings", JSONType, nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("group"),
    )
    op.create_table(
        "recommendations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("group", sa.String(length=128), nullable=True),
        sa.Column("account_id", sa.String(length=128), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("evidence", JSONType, nullable=False),
        sa.Column("expected_impact", JSONType, nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("setting", JSONType, nullable=True),
        sa.Column("dedup_key", sa.String(length=256), nullable=False),
        sa.Column("occurrences", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("decided_by", sa.String(length=128), nullable=True),
        sa.Column("decided_at", sa.BigInteger(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("recommendations", schema=None) as batch_op:
        batch_op.create_index("ix_recommendations_state", ["state"], unique=False)
        batch_op.create_index(
            "uq_recommendations_open",
            ["dedup_key"],
            unique=True,
            sqlite_where=sa.text("state = 'open'"),
            postgresql_where=sa.text("state = 'open'"),
        )

    op.create_table(
        "weights",
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("group", sa.String(length=128), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("target", sa.Float(), nullable=False),
        sa.Column("reasons", JSONType, nullable=False),
        sa.Column("models", JSONType, nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )
    with op.batch_alter_table("weights", schema=None) as batch_op:
        batch_op.create_index("ix_weights_group", ["group"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("weights", schema=None) as batch_op:
        batch_op.drop_index("ix_weights_group")

    op.drop_table("weights")
    with op.batch_alter_table("recommendations", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_recommendations_open",
            sqlite_where=sa.text("state = 'open'"),
            postgresql_where=sa.text("state = 'open'"),
        )
        batch_op.drop_index("ix_recommendations_state")

    op.drop_table("recommendations")
    op.drop_table("group_policies")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_decisions_ts")
        batch_op.drop_index("ix_decisions_group_ts")
        batch_op.drop_index("ix_decisions_action")
        batch_op.drop_index("ix_decisions_account_ts")

    op.drop_table("decisions")
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.drop_index("ix_actions_state_created")
        batch_op.drop_index("ix_actions_account")

    op.drop_table("actions")
