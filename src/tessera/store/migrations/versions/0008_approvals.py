"""Human approvals: CIBA requests, approver passkeys (issue 8).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "approval_requests",
        sa.Column("auth_req_id", sa.String(48), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("agent_id", sa.String(32), nullable=False),
        sa.Column("session_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32)),
        sa.Column("act_chain", sa.Text, nullable=False),
        sa.Column("action", sa.String(256), nullable=False),
        sa.Column("resource", sa.Text, nullable=False),
        sa.Column("arguments", sa.Text, nullable=False),
        sa.Column("argument_hash", sa.String(80), nullable=False),
        sa.Column("dpop_jkt", sa.String(64)),
        sa.Column("decision_id", sa.String(48), nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("risk", sa.Text),
        sa.Column("binding_message", sa.String(200), nullable=False),
        sa.Column("required", sa.Integer, nullable=False),
        sa.Column("group_name", sa.String(64)),
        sa.Column("passkey_required", sa.Boolean, nullable=False),
        sa.Column("delivery", sa.String(8), nullable=False),
        sa.Column("notify_token", sa.LargeBinary),
        sa.Column("group_key", sa.String(80), nullable=False),
        sa.Column("repeats", sa.Integer, nullable=False),
        sa.Column("interval", sa.Integer, nullable=False),
        sa.Column("next_poll_at", _TS),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("decided_at", _TS),
        sa.Column("token_jti", sa.String(48)),
        sa.Column("token_issued_at", _TS),
        sa.Column("redeemed_at", _TS),
        sa.Column("outcome", sa.String(200)),
        sa.Column("notified_at", _TS),
    )
    op.create_index("ix_approval_requests_group", "approval_requests", ["group_key", "status"])
    op.create_index("ix_approval_requests_agent", "approval_requests", ["agent_id", "status"])
    op.create_index("ix_approval_requests_status", "approval_requests", ["status", "expires_at"])
    op.create_table(
        "approval_votes",
        sa.Column("auth_req_id", sa.String(48), primary_key=True),
        sa.Column("approver", sa.String(80), primary_key=True),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_approval_votes_approver", "approval_votes", ["approver", "created_at"])
    op.create_table(
        "approval_candidates",
        sa.Column("auth_req_id", sa.String(48), primary_key=True),
        sa.Column("user_id", sa.String(32), primary_key=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_approval_candidates_user", "approval_candidates", ["user_id", "created_at"])
    op.create_table(
        "approver_passkeys",
        sa.Column("credential_id", sa.String(1400), primary_key=True),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("sign_count", sa.BigInteger, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("last_used_at", _TS),
    )
    op.create_index("ix_approver_passkeys_user", "approver_passkeys", ["user_id"])
    op.create_table(
        "approver_enrollments",
        sa.Column("token_hash", sa.String(80), primary_key=True),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("used_at", _TS),
    )
    op.create_table(
        "approver_sessions",
        sa.Column("token_hash", sa.String(80), primary_key=True),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
    )
    op.create_table(
        "ciba_clients",
        sa.Column("client_id", sa.String(32), primary_key=True),
        sa.Column("delivery_mode", sa.String(8), nullable=False),
        sa.Column("notification_endpoint", sa.String(2048)),
        sa.Column("updated_at", _TS, nullable=False),
    )


def downgrade() -> None:
    for name in (
        "ciba_clients",
        "approver_sessions",
        "approver_enrollments",
        "approver_passkeys",
        "approval_candidates",
        "approval_votes",
        "approval_requests",
    ):
        op.drop_table(name)
