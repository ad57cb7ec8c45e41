"""Tables of human approvals (issue 8, migration 0008): CIBA requests, votes, the approvers
asked, approver passkeys, enrollment links, approver console sessions, CIBA client
delivery settings. Mirrors the migration; queries live in ``store/sql_approvals.py``."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)

from tessera.store.tables import metadata

approval_requests = Table(
    "approval_requests",
    metadata,
    Column("auth_req_id", String(48), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("origin", String(16), nullable=False),  # gateway | backchannel
    Column("agent_id", String(32), nullable=False),
    Column("session_id", String(32), nullable=False),
    Column("user_id", String(32)),
    Column("act_chain", Text, nullable=False),
    Column("action", String(256), nullable=False),
    Column("resource", Text, nullable=False),
    Column("arguments", Text, nullable=False),  # redacted
    Column("argument_hash", String(80), nullable=False),
    Column("dpop_jkt", String(64)),
    Column("decision_id", String(48), nullable=False),
    Column("reasons", Text, nullable=False),
    Column("risk", Text),
    Column("binding_message", String(200), nullable=False),
    Column("required", Integer, nullable=False),
    Column("group_name", String(64)),
    Column("passkey_required", Boolean, nullable=False),
    Column("delivery", String(8), nullable=False),  # poll | ping | push
    Column("notify_token", LargeBinary),  # sealed client_notification_token
    Column("group_key", String(80), nullable=False),
    Column("repeats", Integer, nullable=False),
    Column("interval", Integer, nullable=False),
    Column("next_poll_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True)),
    Column("token_jti", String(48)),
    Column("token_issued_at", DateTime(timezone=True)),
    Column("redeemed_at", DateTime(timezone=True)),
    Column("outcome", String(200)),
    Column("notified_at", DateTime(timezone=True)),  # ping/push delivered (2xx)
    Index("ix_approval_requests_group", "group_key", "status"),
    Index("ix_approval_requests_agent", "agent_id", "status"),
    Index("ix_approval_requests_status", "status", "expires_at"),
)

approval_votes = Table(
    "approval_votes",
    metadata,
    Column("auth_req_id", String(48), primary_key=True),
    Column("approver", String(80), primary_key=True),
    Column("decision", String(8), nullable=False),  # approve | deny
    Column("method", String(8), nullable=False),  # passkey | admin | dev
    Column("note", String(500), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_approval_votes_approver", "approver", "created_at"),
)

approval_candidates = Table(
    "approval_candidates",
    metadata,
    Column("auth_req_id", String(48), primary_key=True),
    Column("user_id", String(32), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_approval_candidates_user", "user_id", "created_at"),
)

approver_passkeys = Table(
    "approver_passkeys",
    metadata,
    Column("credential_id", String(1400), primary_key=True),
    Column("user_id", String(32), nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("sign_count", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True)),
    Index("ix_approver_passkeys_user", "user_id"),
)

approver_enrollments = Table(
    "approver_enrollments",
    metadata,
    Column("token_hash", String(80), primary_key=True),
    Column("user_id", String(32), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True)),
)

approver_sessions = Table(
    "approver_sessions",
    metadata,
    Column("token_hash", String(80), primary_key=True),
    Column("user_id", String(32), nullable=False),
    Column("method", String(8), nullable=False),  # passkey | dev
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

ciba_clients = Table(
    "ciba_clients",
    metadata,
    Column("client_id", String(32), primary_key=True),
    Column("delivery_mode", String(8), nullable=False),
    Column("notification_endpoint", String(2048)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
