"""Tables of the MCP gateway (migration 0011). A session taint mark is written once and
never removed while the session lives (DESIGN 5: a tainted session stays tainted)."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, String, Table

from tessera.store.tables import metadata

session_taints = Table(
    "session_taints",
    metadata,
    Column("sid", String(32), primary_key=True),
    Column("cause", String(256), nullable=False),
    Column("tainted_at", DateTime(timezone=True), nullable=False),
)
