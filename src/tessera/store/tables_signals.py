"""Tables of Shared Signals (issue 7): SSF streams, their subjects, the SET outbox with
delivery state, the outbox cursor over the event log, and SETs received from transmitters.
Created by migration 0007."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from tessera.store.tables import SeqType, metadata

ssf_streams = Table(
    "ssf_streams",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("service_id", String(32), nullable=False),  # the receiver that manages it
    Column("config", Text, nullable=False),  # JSON: aud, events_requested, description, ...
    Column("method", String(32), nullable=False),  # urn:ietf:rfc:8935 | urn:ietf:rfc:8936
    Column("endpoint_url", String(2048)),  # push: the receiver's URL
    Column("auth_sealed", Text),  # push: the Authorization header, AES-GCM under a KEK subkey
    Column("status", String(16), nullable=False),  # enabled | paused | disabled
    Column("status_reason", String(256)),
    Column("created_seq", BigInteger, nullable=False),  # events after it are delivered
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_ssf_streams_service", ssf_streams.c.service_id)

ssf_subjects = Table(
    "ssf_subjects",
    metadata,
    Column("stream_id", String(40), primary_key=True),
    Column("subject_key", String(80), primary_key=True),  # sha256 of the canonical subject
    Column("subject", Text, nullable=False),
    Column("included", Boolean, nullable=False),  # add_subject: true; remove_subject: false
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

ssf_deliveries = Table(
    "ssf_deliveries",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("stream_id", String(40), nullable=False),
    Column("dedupe", String(96), nullable=False, unique=True),  # stream:event seq:index
    Column("jti", String(64), nullable=False, unique=True),
    Column("event_seq", BigInteger, nullable=False),
    Column("event_type", String(160), nullable=False),
    Column("set_jwt", Text, nullable=False),
    Column("state", String(16), nullable=False),  # pending | delivered | acked | failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("lease_until", DateTime(timezone=True)),
    Column("last_error", String(300)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("done_at", DateTime(timezone=True)),
    sqlite_autoincrement=True,
)
Index("ix_ssf_deliveries_due", ssf_deliveries.c.state, ssf_deliveries.c.next_attempt_at)
Index("ix_ssf_deliveries_stream", ssf_deliveries.c.stream_id, ssf_deliveries.c.state)

ssf_cursor = Table(
    "ssf_cursor",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("seq", BigInteger, nullable=False),
)

ssf_received = Table(
    "ssf_received",
    metadata,
    Column("iss", String(512), primary_key=True),
    Column("jti", String(256), primary_key=True),
    Column("events", Text, nullable=False),  # JSON list of event type URIs
    Column("outcome", String(300), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)
