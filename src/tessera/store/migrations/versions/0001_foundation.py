"""Foundation: event log, identity registry, signing keys, admin tokens.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _created_updated() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "operators",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *_created_updated(),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("grants", sa.Text, nullable=False),
        *_created_updated(),
    )
    op.create_table(
        "services",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *_created_updated(),
    )
    op.create_table(
        "agents",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("operator_id", sa.String(32), sa.ForeignKey("operators.id"), nullable=False),
        sa.Column("owner_user_id", sa.String(32), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("purpose", sa.String(500), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("ceiling", sa.Text, nullable=False),
        sa.Column("attestation_required", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.String(200)),
        *_created_updated(),
    )
    op.create_index("ix_agents_operator", "agents", ["operator_id"])
    op.create_index("ix_agents_owner", "agents", ["owner_user_id"])
    op.create_table(
        "models",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("operator_id", sa.String(32), sa.ForeignKey("operators.id"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(71), nullable=False, unique=True),
        sa.Column("signature", sa.Text),
        sa.Column("status", sa.String(16), nullable=False),
        *_created_updated(),
    )
    op.create_table(
        "credentials",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner_kind", sa.String(16), nullable=False),
        sa.Column("owner_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("public_jwk", sa.Text),
        sa.Column("jkt", sa.String(64)),
        sa.Column("spiffe_id", sa.String(2048)),
        sa.Column("secret_hash", sa.String(200), unique=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS),
        sa.Column("last_used_at", TS),
    )
    op.create_index("ix_credentials_owner", "credentials", ["owner_kind", "owner_id"])
    op.create_index("ix_credentials_jkt", "credentials", ["jkt"])
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column("public_jwk", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("retired_at", TS),
        sa.Column("publish_until", TS),
    )
    op.create_table(
        "admin_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("token_hash", sa.String(80), nullable=False, unique=True),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "admin_tokens",
        "signing_keys",
        "credentials",
        "models",
        "agents",
        "services",
        "users",
        "operators",
        "events",
    ):
        op.drop_table(table)
