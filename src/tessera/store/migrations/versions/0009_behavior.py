"""Behaviour baselines (issue 10): per-agent and per-peer-group baseline state, and drift
findings (posture-style rows: severity, evidence, remediation).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "behavior_baselines",
        sa.Column("kind", sa.String(8), primary_key=True),  # agent | peer
        sa.Column("key", sa.String(256), primary_key=True),
        sa.Column("operator", sa.String(128), nullable=False),
        sa.Column("model_digest", sa.String(128), nullable=False),
        sa.Column("calls", sa.Integer, nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        # bumped by a re-baseline, so a running node adopts it instead of overwriting it
        sa.Column("generation", sa.Integer, nullable=False, server_default="0"),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "behavior_findings",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("agent", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),  # agent | model
        sa.Column("severity", sa.String(8), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),  # open | resolved
        sa.Column("kl", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("window", sa.Integer, nullable=False),
        sa.Column("model_digest", sa.String(128), nullable=False),
        sa.Column("compared_to", sa.String(128), nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("remediation", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_behavior_findings_agent", "behavior_findings", ["agent", "status"])


def downgrade() -> None:
    op.drop_index("ix_behavior_findings_agent", "behavior_findings")
    op.drop_table("behavior_findings")
    op.drop_table("behavior_baselines")
