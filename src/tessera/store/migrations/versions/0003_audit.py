"""Audit ledger: outbox, append-only hash-chained ledger, signed checkpoints.

Triggers make the ledger and its checkpoints append-only on both backends (UPDATE, DELETE
and, on PostgreSQL, TRUNCATE are refused) and let an outbox row be deleted only once the
ledger holds it. A table owner can still drop triggers; production runs Tessera as a role
that owns none of these tables (docs/audit.md), and signed checkpoints outside the database
detect what a superuser might do.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_SQLITE_TRIGGERS = [
    """CREATE TRIGGER audit_ledger_no_update BEFORE UPDATE ON audit_ledger
       BEGIN SELECT RAISE(ABORT, 'audit_ledger is append-only'); END""",
    """CREATE TRIGGER audit_ledger_no_delete BEFORE DELETE ON audit_ledger
       BEGIN SELECT RAISE(ABORT, 'audit_ledger is append-only'); END""",
    """CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
       BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END""",
    """CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
       BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END""",
    """CREATE TRIGGER audit_outbox_no_update BEFORE UPDATE ON audit_outbox
       BEGIN SELECT RAISE(ABORT, 'audit_outbox rows cannot be changed'); END""",
    """CREATE TRIGGER audit_outbox_delete_chained BEFORE DELETE ON audit_outbox
       WHEN NOT EXISTS (SELECT 1 FROM audit_ledger WHERE outbox_id = OLD.id)
       BEGIN SELECT RAISE(ABORT, 'audit_outbox rows may be deleted only once chained'); END""",
]

_PG_TRIGGERS = [
    """CREATE FUNCTION tessera_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = '42501';
       END $$""",
    """CREATE FUNCTION tessera_audit_outbox_guard() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP <> 'DELETE' THEN
           RAISE EXCEPTION 'audit_outbox rows cannot be changed' USING ERRCODE = '42501';
         END IF;
         IF NOT EXISTS (SELECT 1 FROM audit_ledger WHERE outbox_id = OLD.id) THEN
           RAISE EXCEPTION 'audit_outbox rows may be deleted only once chained'
             USING ERRCODE = '42501';
         END IF;
         RETURN OLD;
       END $$""",
    """CREATE TRIGGER audit_ledger_append_only BEFORE UPDATE OR DELETE ON audit_ledger
       FOR EACH ROW EXECUTE FUNCTION tessera_audit_append_only()""",
    """CREATE TRIGGER audit_ledger_no_truncate BEFORE TRUNCATE ON audit_ledger
       FOR EACH STATEMENT EXECUTE FUNCTION tessera_audit_append_only()""",
    """CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE
       ON audit_checkpoints FOR EACH ROW EXECUTE FUNCTION tessera_audit_append_only()""",
    """CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
       FOR EACH STATEMENT EXECUTE FUNCTION tessera_audit_append_only()""",
    """CREATE TRIGGER audit_outbox_guard BEFORE UPDATE OR DELETE ON audit_outbox
       FOR EACH ROW EXECUTE FUNCTION tessera_audit_outbox_guard()""",
    """CREATE TRIGGER audit_outbox_no_truncate BEFORE TRUNCATE ON audit_outbox
       FOR EACH STATEMENT EXECUTE FUNCTION tessera_audit_append_only()""",
]


def upgrade() -> None:
    op.create_table(
        "audit_outbox",
        sa.Column("id", SEQ, primary_key=True, autoincrement=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "audit_ledger",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=False),
        sa.Column("time", TS, nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("principal", sa.Text),
        sa.Column("agent_id", sa.Text),
        sa.Column("session_id", sa.Text),
        sa.Column("user_id", sa.Text),
        sa.Column("outbox_id", sa.BigInteger),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    for name, col in (
        ("ix_audit_time", "time"),
        ("ix_audit_type", "event_type"),
        ("ix_audit_agent", "agent_id"),
        ("ix_audit_session", "session_id"),
        ("ix_audit_user", "user_id"),
    ):
        op.create_index(name, "audit_ledger", [col])
    op.create_index("ux_audit_outbox", "audit_ledger", ["outbox_id"], unique=True)
    op.create_table(
        "audit_checkpoints",
        sa.Column("tree_size", SEQ, primary_key=True, autoincrement=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("jws", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    triggers = _PG_TRIGGERS if op.get_bind().dialect.name == "postgresql" else _SQLITE_TRIGGERS
    for statement in triggers:
        op.execute(statement)


def downgrade() -> None:
    # The append-only triggers go with their tables; on PostgreSQL the functions too.
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_ledger")
    op.drop_table("audit_outbox")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS tessera_audit_outbox_guard()")
        op.execute("DROP FUNCTION IF EXISTS tessera_audit_append_only()")
