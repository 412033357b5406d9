"""Alert feedback (ops say whether an alert was a real problem or a false alarm, so the
dashboard can show each alert kind's precision) and the forecast history (every forecast the
hourly job made, to measure it against what happened).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 00:40:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "alert_feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alert_feedback", schema=None) as batch_op:
        batch_op.create_index("ix_alert_feedback_alert", ["alert_id"], unique=False)
    op.create_table(
        "forecast_history",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("horizon", sa.Integer(), nullable=False),
        sa.Column("computed_at", sa.BigInteger(), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("payload", JSONType, nullable=False),
        sa.PrimaryKeyConstraint(
            "scope", "target", "metric", "horizon", "computed_at", name="pk_forecast_history"
        ),
    )
    with op.batch_alter_table("forecast_history", schema=None) as batch_op:
        batch_op.create_index("ix_forecast_history_computed_at", ["computed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("forecast_history", schema=None) as batch_op:
        batch_op.drop_index("ix_forecast_history_computed_at")
    op.drop_table("forecast_history")
    with op.batch_alter_table("alert_feedback", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_feedback_alert")
    op.drop_table("alert_feedback")
