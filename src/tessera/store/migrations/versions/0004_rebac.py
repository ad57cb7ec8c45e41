"""Relationship engine: authorization models, relation tuples, large-batch change records.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "rebac_models",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("dsl", sa.Text, nullable=False),
        sa.Column("json", sa.Text, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_rebac_models_active", "rebac_models", ["active"])
    op.create_table(
        "rebac_tuples",
        sa.Column("object", sa.String(256), primary_key=True),
        sa.Column("relation", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(512), primary_key=True),
        sa.Column("condition", sa.String(64)),
        sa.Column("context", sa.Text),
        sa.Column("expires_at", TS),
        sa.Column("written_at", TS, nullable=False),
    )
    op.create_index("ix_rebac_tuples_user", "rebac_tuples", ["user"])
    op.create_table(
        "rebac_changes",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("object", sa.String(256), nullable=False),
        sa.Column("relation", sa.String(64), nullable=False),
        sa.Column("user", sa.String(512), nullable=False),
        sa.Column("condition", sa.String(64)),
        sa.Column("context", sa.Text),
        sa.Column("expires_at", TS),
    )


def downgrade() -> None:
    op.drop_table("rebac_changes")
    op.drop_index("ix_rebac_tuples_user", table_name="rebac_tuples")
    op.drop_table("rebac_tuples")
    op.drop_index("ix_rebac_models_active", table_name="rebac_models")
    op.drop_table("rebac_models")
