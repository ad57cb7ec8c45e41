"""Model attestors: SPIFFE IDs an operator registered as running a model (DESIGN flow A).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_attestors",
        sa.Column("spiffe_id", sa.String(2048), primary_key=True),
        sa.Column("model_id", sa.String(32), sa.ForeignKey("models.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_model_attestors_model", "model_attestors", ["model_id"])


def downgrade() -> None:
    op.drop_table("model_attestors")
