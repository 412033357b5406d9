"""The decision policy's controller state, so a restarted worker (or a one-shot tick) continues
its run counters, cooldowns and safety envelope instead of starting from zero.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 16:40:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "controller_state",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("tick_ms", sa.BigInteger(), nullable=False),
        sa.Column("state", JSONType, nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("controller_state")
