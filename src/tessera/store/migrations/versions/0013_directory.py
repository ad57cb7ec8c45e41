"""The decision point's directory: attributes of subjects and resources (issue 5).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "directory_entries",
        sa.Column("etype", sa.String(64), primary_key=True),
        sa.Column("eid", sa.String(256), primary_key=True),
        sa.Column("attributes", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("directory_entries")
