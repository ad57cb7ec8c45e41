"""Token service: sessions, per-session budgets, single-use jti cache.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("sid", sa.String(32), primary_key=True),
        sa.Column("jti", sa.String(64), nullable=False, unique=True),
        sa.Column("token_hash", sa.String(80), nullable=False, unique=True),
        sa.Column("agent_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32)),
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("model_id", sa.String(32)),
        sa.Column("model_digest", sa.String(71)),
        sa.Column("parent_sid", sa.String(32)),
        sa.Column("root_sid", sa.String(32), nullable=False),
        sa.Column("depth", sa.Integer, nullable=False),
        sa.Column("audience", sa.Text, nullable=False),
        sa.Column("grant", sa.Text, nullable=False),
        sa.Column("act", sa.Text),
        sa.Column("cnf_jkt", sa.String(64)),
        sa.Column("issued_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("revoked_at", TS),
        sa.Column("revoked_reason", sa.String(200)),
    )
    for name, cols in (
        ("ix_sessions_agent", ["agent_id"]),
        ("ix_sessions_user", ["user_id"]),
        ("ix_sessions_root", ["root_sid"]),
        ("ix_sessions_parent", ["parent_sid"]),
        ("ix_sessions_digest", ["model_digest"]),
    ):
        op.create_index(name, "sessions", cols)
    op.create_table(
        "session_budgets",
        sa.Column("sid", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("granted", sa.BigInteger, nullable=False),
        sa.Column("remaining", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "replay_jtis",
        sa.Column("kind", sa.String(24), primary_key=True),
        sa.Column("jti", sa.String(200), primary_key=True),
        sa.Column("expires_at", TS, nullable=False),
    )
    op.create_index("ix_replay_expires", "replay_jtis", ["expires_at"])


def downgrade() -> None:
    op.drop_table("replay_jtis")
    op.drop_table("session_budgets")
    op.drop_table("sessions")
