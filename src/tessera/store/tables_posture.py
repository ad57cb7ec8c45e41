"""Posture findings and access reviews (migration 0010)."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, Integer, String, Table, Text

from tessera.store.tables import metadata

# One row per (rule, subject): ``key`` is ``Finding.key``. A finding no longer reported by
# a scan is ``resolved``; reported again, it is ``open`` again with its first_seen kept.
posture_findings = Table(
    "posture_findings",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("rule", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("subject_kind", String(16), nullable=False),
    Column("subject", String(256), nullable=False),
    Column("agent_id", String(64)),
    Column("summary", String(500), nullable=False),
    Column("evidence", Text, nullable=False),  # JSON
    Column("remediation", String(32), nullable=False),
    Column("remediation_args", Text, nullable=False),  # JSON
    Column("status", String(16), nullable=False),  # open | resolved
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),
    Column("scan_id", String(40), nullable=False),
    Index("ix_posture_findings_status", "status", "severity"),
    Index("ix_posture_findings_rule", "rule"),
    Index("ix_posture_findings_agent", "agent_id"),
)

posture_scans = Table(
    "posture_scans",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("findings", Integer, nullable=False),
    Column("stats", Text, nullable=False),  # JSON: records read, seconds per rule
    Column("actor", String(128), nullable=False),
    Index("ix_posture_scans_started", "started_at"),
)

# An access review campaign: every owner confirms or revokes each grant of their agents.
review_campaigns = Table(
    "review_campaigns",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False),  # open | closed
    Column("on_expiry", String(8), nullable=False),  # revoke | keep
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("deadline", DateTime(timezone=True), nullable=False),
    Column("closed_at", DateTime(timezone=True)),
    Column("created_by", String(128), nullable=False),
    Index("ix_review_campaigns_status", "status"),
)

review_items = Table(
    "review_items",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("campaign_id", String(40), nullable=False),
    Column("agent_id", String(64), nullable=False),
    Column("owner_user_id", String(64), nullable=False),
    Column("field", String(32), nullable=False),  # tools | data_scopes | models | ...
    Column("item", String(512), nullable=False),
    # pending | confirmed | revoked | expired_revoked | expired_kept | void
    Column("state", String(16), nullable=False),
    Column("answered_by", String(128)),
    Column("answered_at", DateTime(timezone=True)),
    Column("note", String(500)),
    Index("ix_review_items_campaign", "campaign_id", "state"),
    Index("ix_review_items_owner", "owner_user_id"),
)
