"""Posture findings and access reviews (issue 11).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "posture_findings",
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("subject_kind", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("agent_id", sa.String(64)),
        sa.Column("summary", sa.String(500), nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("remediation", sa.String(32), nullable=False),
        sa.Column("remediation_args", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _ts("first_seen"),
        _ts("last_seen"),
        _ts("resolved_at", True),
        sa.Column("scan_id", sa.String(40), nullable=False),
    )
    op.create_index("ix_posture_findings_status", "posture_findings", ["status", "severity"])
    op.create_index("ix_posture_findings_rule", "posture_findings", ["rule"])
    op.create_index("ix_posture_findings_agent", "posture_findings", ["agent_id"])
    op.create_table(
        "posture_scans",
        sa.Column("id", sa.String(40), primary_key=True),
        _ts("started_at"),
        _ts("finished_at"),
        sa.Column("findings", sa.Integer, nullable=False),
        sa.Column("stats", sa.Text, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
    )
    op.create_index("ix_posture_scans_started", "posture_scans", ["started_at"])
    op.create_table(
        "review_campaigns",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("on_expiry", sa.String(8), nullable=False),
        _ts("created_at"),
        _ts("deadline"),
        _ts("closed_at", True),
        sa.Column("created_by", sa.String(128), nullable=False),
    )
    op.create_index("ix_review_campaigns_status", "review_campaigns", ["status"])
    op.create_table(
        "review_items",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("campaign_id", sa.String(40), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("owner_user_id", sa.String(64), nullable=False),
        sa.Column("field", sa.String(32), nullable=False),
        sa.Column("item", sa.String(512), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("answered_by", sa.String(128)),
        _ts("answered_at", True),
        sa.Column("note", sa.String(500)),
    )
    op.create_index("ix_review_items_campaign", "review_items", ["campaign_id", "state"])
    op.create_index("ix_review_items_owner", "review_items", ["owner_user_id"])


def downgrade() -> None:
    for table in ("review_items", "review_campaigns", "posture_scans", "posture_findings"):
        op.drop_table(table)
