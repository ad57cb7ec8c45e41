"""The PDP's directory (migration 0013): attributes of subjects and resources, one row per
entity (``type``, ``id``), read by the decision point from memory (``pdp/directory.py``)."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, String, Table, Text

from tessera.store.tables import metadata

directory_entries = Table(
    "directory_entries",
    metadata,
    Column("etype", String(64), primary_key=True),
    Column("eid", String(256), primary_key=True),
    Column("attributes", Text, nullable=False),  # JSON object
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(256), nullable=False),
)
