"""SQLAlchemy Core tables. The schema itself is created and changed only by Alembic
migrations (``store/migrations``); this module mirrors it for queries."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# SQLite needs INTEGER PRIMARY KEY for a rowid alias; PostgreSQL gets a BIGINT identity.
SeqType = BigInteger().with_variant(Integer(), "sqlite")

events = Table(
    "events",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("type", String(64), nullable=False),
    Column("subject", String(128), nullable=False),
    Column("payload", Text, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    sqlite_autoincrement=True,
)

operators = Table(
    "operators",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("email", String(320)),
    Column("status", String(16), nullable=False),
    Column("grants", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

services = Table(
    "services",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("description", String(500), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

agents = Table(
    "agents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("operator_id", String(32), ForeignKey("operators.id"), nullable=False),
    Column("owner_user_id", String(32), ForeignKey("users.id"), nullable=False),
    Column("purpose", String(500), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("ceiling", Text, nullable=False),
    Column("attestation_required", Boolean, nullable=False),
    Column("status", String(16), nullable=False),
    Column("status_reason", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_agents_operator", "operator_id"),
    Index("ix_agents_owner", "owner_user_id"),
)

models = Table(
    "models",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("operator_id", String(32), ForeignKey("operators.id"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("digest", String(71), nullable=False, unique=True),
    Column("signature", Text),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

credentials = Table(
    "credentials",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_kind", String(16), nullable=False),
    Column("owner_id", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("public_jwk", Text),
    Column("jkt", String(64)),
    Column("spiffe_id", String(2048)),
    Column("secret_hash", String(200), unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
    Index("ix_credentials_owner", "owner_kind", "owner_id"),
    Index("ix_credentials_jkt", "jkt"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("alg", String(16), nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("public_jwk", Text, nullable=False),
    Column("status", String(16), nullable=False),  # active | retired
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("retired_at", DateTime(timezone=True)),
    # The public key stays in the JWKS until every token it signed has expired.
    Column("publish_until", DateTime(timezone=True)),
)

admin_tokens = Table(
    "admin_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("token_hash", String(80), nullable=False, unique=True),
    Column("label", String(100), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# -- token service (migration 0002) ---------------------------------------------------------

sessions = Table(
    "sessions",
    metadata,
    Column("sid", String(32), primary_key=True),
    Column("jti", String(64), nullable=False, unique=True),
    Column("token_hash", String(80), nullable=False, unique=True),
    Column("agent_id", String(32), nullable=False),
    Column("user_id", String(32)),
    Column("operator_id", String(32), nullable=False),
    Column("model_id", String(32)),
    Column("model_digest", String(71)),
    Column("parent_sid", String(32)),
    Column("root_sid", String(32), nullable=False),
    Column("depth", Integer, nullable=False),
    Column("audience", Text, nullable=False),
    Column("grant", Text, nullable=False),
    Column("act", Text),
    Column("cnf_jkt", String(64)),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("revoked_reason", String(200)),
    Index("ix_sessions_agent", "agent_id"),
    Index("ix_sessions_user", "user_id"),
    Index("ix_sessions_root", "root_sid"),
    Index("ix_sessions_parent", "parent_sid"),
    Index("ix_sessions_digest", "model_digest"),
)

session_budgets = Table(
    "session_budgets",
    metadata,
    Column("sid", String(32), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("granted", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
)

# Single-use identifiers (client assertion jti, DPoP proof jti, actor token jti, one-shot
# approval jti): the unique key makes "use once" atomic across nodes.
replay_jtis = Table(
    "replay_jtis",
    metadata,
    Column("kind", String(24), primary_key=True),
    Column("jti", String(200), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_replay_expires", "expires_at"),
)

# -- audit ledger (migration 0003) ----------------------------------------------------------

# Entries written in the same transaction as the state change they describe; the chainer
# moves them into ``audit_ledger``. Rows cannot be changed, and a row can be deleted only
# once the ledger holds it (triggers in migration 0003).
audit_outbox = Table(
    "audit_outbox",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("body", Text, nullable=False),
    sqlite_autoincrement=True,
)

# Append-only (UPDATE, DELETE and TRUNCATE are refused by triggers). ``body`` holds the exact
# canonical bytes that were hashed; the other columns are copies for filtering.
audit_ledger = Table(
    "audit_ledger",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=False),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("outcome", Text, nullable=False),
    Column("principal", Text),
    Column("agent_id", Text),
    Column("session_id", Text),
    Column("user_id", Text),
    Column("outbox_id", BigInteger),
    Column("body", LargeBinary, nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_time", "time"),
    Index("ix_audit_type", "event_type"),
    Index("ux_audit_outbox", "outbox_id", unique=True),
)

# The ledger's agent/session/user lookups (migration 0014), filled in batches by the
# chainer: ``key`` is ``agent:<id>``, ``session:<id>`` or ``user:<id>``. Derived data, not
# evidence: complete up to ``audit_lookup_state.upto``, rebuilt from the ledger if need be.
audit_lookup = Table(
    "audit_lookup",
    metadata,
    Column("key", Text, primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    sqlite_with_rowid=False,
)

audit_lookup_state = Table(
    "audit_lookup_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("upto", BigInteger, nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("tree_size", SeqType, primary_key=True, autoincrement=False),
    Column("head_hash", String(64), nullable=False),
    Column("jws", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# -- relationship engine (migration 0004) ---------------------------------------------------

# Applied authorization models; exactly one row is active (the newest applied).
rebac_models = Table(
    "rebac_models",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("dsl", Text, nullable=False),
    Column("json", Text, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("seq", BigInteger, nullable=False),  # of its rebac.model_applied event
    Index("ix_rebac_models_active", "active"),
)

rebac_tuples = Table(
    "rebac_tuples",
    metadata,
    Column("object", String(256), primary_key=True),
    Column("relation", String(64), primary_key=True),
    Column("user", String(512), primary_key=True),
    Column("condition", String(64)),
    Column("context", Text),  # JSON object, only with a condition
    Column("expires_at", DateTime(timezone=True)),
    Column("written_at", DateTime(timezone=True), nullable=False),
    Index("ix_rebac_tuples_user", "user"),
)

# The changes of a large tuple batch, keyed by the sequence of its one event (small batches
# ride in the event payload instead).
rebac_changes = Table(
    "rebac_changes",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("op", String(8), nullable=False),  # write | delete
    Column("object", String(256), nullable=False),
    Column("relation", String(64), nullable=False),
    Column("user", String(512), nullable=False),
    Column("condition", String(64)),
    Column("context", Text),
    Column("expires_at", DateTime(timezone=True)),
)

# Policy bundle versions (policy-as-code); exactly one row is active at a time.
policy_bundles = Table(
    "policy_bundles",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("digest", String(80), nullable=False),
    Column("files", Text, nullable=False),  # JSON object: file name -> text
    Column("active", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("actor", String(256), nullable=False),
    Index("ix_policy_bundles_active", "active"),
)

# -- model attestors (migration 0006) -------------------------------------------------------

model_attestors = Table(
    "model_attestors",
    metadata,
    Column("spiffe_id", String(2048), primary_key=True),
    Column("model_id", String(32), ForeignKey("models.id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_model_attestors_model", "model_id"),
)
