"""An index on the decision record's kind and time, so every tick can find the failovers that
still await their outcome (made before a restart, or by a one-shot tick) without scanning the
weight changes around them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 19:30:00.000000
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_decisions_kind_ts", "decisions", ["kind", "ts_ms"])


def downgrade() -> None:
    op.drop_index("ix_decisions_kind_ts", table_name="decisions")
