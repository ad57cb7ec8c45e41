"""Audit ledger segments (issue 6): archiving by export and a new, linked segment.

``audit_segments`` has one row per segment after the first (segment 1 starts at seq 1 from
64 zeros and needs none): its number, its first ``seq``, the archived head hash its first
record links to (``prev_hash``), and the archive the previous segment went to (file name,
SHA-256, record count). The table is append-only like the ledger.

The ledger's DELETE guard is replaced by one that still refuses every DELETE except the
controlled purge of an archived segment (``tessera audit purge``): only rows below the
newest segment's first ``seq``, and only

- on PostgreSQL: by a member of the ledger's owner role, in a transaction that set
  ``tessera.audit_purge = 'on'`` (the application role owns nothing and has no DELETE
  privilege on the ledger anyway: docs/audit.md);
- on SQLite: from a connection that registered the SQL function ``tessera_audit_purge_ok``
  (the purge command's own connection; SQL text alone cannot register one, so a DELETE
  from any other connection fails).

UPDATE and TRUNCATE stay refused without exception.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_SQLITE_UP = [
    """CREATE TRIGGER audit_segments_no_update BEFORE UPDATE ON audit_segments
       BEGIN SELECT RAISE(ABORT, 'audit_segments is append-only'); END""",
    """CREATE TRIGGER audit_segments_no_delete BEFORE DELETE ON audit_segments
       BEGIN SELECT RAISE(ABORT, 'audit_segments is append-only'); END""",
    "DROP TRIGGER audit_ledger_no_delete",
    """CREATE TRIGGER audit_ledger_no_delete BEFORE DELETE ON audit_ledger
       WHEN OLD.seq >= (SELECT COALESCE(MAX(first_seq), 0) FROM audit_segments)
         OR tessera_audit_purge_ok() IS NOT 1
       BEGIN SELECT RAISE(ABORT, 'audit_ledger is append-only'); END""",
]
_SQLITE_DOWN = [
    "DROP TRIGGER audit_ledger_no_delete",
    """CREATE TRIGGER audit_ledger_no_delete BEFORE DELETE ON audit_ledger
       BEGIN SELECT RAISE(ABORT, 'audit_ledger is append-only'); END""",
]

_PG_UP = [
    """CREATE FUNCTION tessera_audit_ledger_guard() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP = 'DELETE'
            AND current_setting('tessera.audit_purge', true) = 'on'
            AND OLD.seq < (SELECT COALESCE(MAX(first_seq), 0) FROM audit_segments)
            AND pg_has_role(current_user,
                            (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER')
         THEN
           RETURN OLD;
         END IF;
         RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = '42501';
       END $$""",
    "DROP TRIGGER audit_ledger_append_only ON audit_ledger",
    """CREATE TRIGGER audit_ledger_append_only BEFORE UPDATE OR DELETE ON audit_ledger
       FOR EACH ROW EXECUTE FUNCTION tessera_audit_ledger_guard()""",
    """CREATE TRIGGER audit_segments_append_only BEFORE UPDATE OR DELETE ON audit_segments
       FOR EACH ROW EXECUTE FUNCTION tessera_audit_append_only()""",
    """CREATE TRIGGER audit_segments_no_truncate BEFORE TRUNCATE ON audit_segments
       FOR EACH STATEMENT EXECUTE FUNCTION tessera_audit_append_only()""",
]
_PG_DOWN = [
    "DROP TRIGGER audit_ledger_append_only ON audit_ledger",
    """CREATE TRIGGER audit_ledger_append_only BEFORE UPDATE OR DELETE ON audit_ledger
       FOR EACH ROW EXECUTE FUNCTION tessera_audit_append_only()""",
    "DROP FUNCTION tessera_audit_ledger_guard()",
]


def upgrade() -> None:
    op.create_table(
        "audit_segments",
        sa.Column("segment", SEQ, primary_key=True, autoincrement=False),
        sa.Column("first_seq", SEQ, nullable=False, unique=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("archive_name", sa.Text, nullable=False),
        sa.Column("archive_sha256", sa.String(64), nullable=False),
        sa.Column("archived_records", SEQ, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    pg = op.get_bind().dialect.name == "postgresql"
    for statement in _PG_UP if pg else _SQLITE_UP:
        op.execute(statement)


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    for statement in _PG_DOWN if pg else _SQLITE_DOWN:
        op.execute(statement)
    op.drop_table("audit_segments")
