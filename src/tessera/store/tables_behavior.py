"""Tables of the behaviour engine (migration 0009), on the shared metadata."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Float, Index, Integer, String, Table, Text

from tessera.store.tables import metadata

behavior_baselines = Table(
    "behavior_baselines",
    metadata,
    Column("kind", String(8), primary_key=True),
    Column("key", String(256), primary_key=True),
    Column("operator", String(128), nullable=False),
    Column("model_digest", String(128), nullable=False),
    Column("calls", Integer, nullable=False),
    Column("level", String(8), nullable=False),
    Column("generation", Integer, nullable=False, server_default="0"),
    Column("state", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

behavior_findings = Table(
    "behavior_findings",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("agent", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("severity", String(8), nullable=False),
    Column("status", String(12), nullable=False),
    Column("kl", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("window", Integer, nullable=False),
    Column("model_digest", String(128), nullable=False),
    Column("compared_to", String(128), nullable=False),
    Column("evidence", Text, nullable=False),
    Column("remediation", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),
    Index("ix_behavior_findings_agent", "agent", "status"),
)
