"""MCP gateway state (issue 9): durable session taint marks, shared by every node.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "session_taints",
        sa.Column("sid", sa.String(32), primary_key=True),
        sa.Column("cause", sa.String(256), nullable=False),
        sa.Column("tainted_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("session_taints")
