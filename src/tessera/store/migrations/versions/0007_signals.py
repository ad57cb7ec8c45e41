"""Shared Signals streams, deliveries and received SETs (issue 7).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ssf_streams",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("service_id", sa.String(32), nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("endpoint_url", sa.String(2048)),
        sa.Column("auth_sealed", sa.Text),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.String(256)),
        sa.Column("created_seq", sa.BigInteger, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_index("ix_ssf_streams_service", "ssf_streams", ["service_id"])
    op.create_table(
        "ssf_subjects",
        sa.Column("stream_id", sa.String(40), primary_key=True),
        sa.Column("subject_key", sa.String(80), primary_key=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("included", sa.Boolean, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_table(
        "ssf_deliveries",
        sa.Column("id", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("stream_id", sa.String(40), nullable=False),
        sa.Column("dedupe", sa.String(96), nullable=False, unique=True),
        sa.Column("jti", sa.String(64), nullable=False, unique=True),
        sa.Column("event_seq", sa.BigInteger, nullable=False),
        sa.Column("event_type", sa.String(160), nullable=False),
        sa.Column("set_jwt", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", _TS, nullable=False),
        sa.Column("lease_until", _TS),
        sa.Column("last_error", sa.String(300)),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("done_at", _TS),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_ssf_deliveries_due", "ssf_deliveries", ["state", "next_attempt_at"])
    op.create_index("ix_ssf_deliveries_stream", "ssf_deliveries", ["stream_id", "state"])
    op.create_table(
        "ssf_cursor",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "ssf_received",
        sa.Column("iss", sa.String(512), primary_key=True),
        sa.Column("jti", sa.String(256), primary_key=True),
        sa.Column("events", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(300), nullable=False),
        sa.Column("received_at", _TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("ssf_received", "ssf_cursor", "ssf_deliveries", "ssf_subjects", "ssf_streams"):
        op.drop_table(table)
