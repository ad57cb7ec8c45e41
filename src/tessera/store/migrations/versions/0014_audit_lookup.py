"""The audit ledger's agent, session and user lookups, indexed in batches (issue 6).

The ledger's per-agent, per-session and per-user indexes took one B-tree page write per
index per record at group commit (concurrent decisions come from different sessions, so
their keys land on different pages): most of a group's commit. They move to
``audit_lookup`` (``key`` = ``agent:<id>`` | ``session:<id>`` | ``user:<id>``, ``seq``),
filled by the chainer in batches of thousands of records in key order, and
``audit_lookup_state.upto`` says up to which ``seq`` it is complete; queries read the
lookup below it and the (short) rest of the ledger above it.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_COLUMNS = (("agent:", "agent_id"), ("session:", "session_id"), ("user:", "user_id"))
_OLD = (
    ("ix_audit_agent", "agent_id"),
    ("ix_audit_session", "session_id"),
    ("ix_audit_user", "user_id"),
)


def upgrade() -> None:
    op.create_table(
        "audit_lookup",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "audit_lookup_state",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("upto", sa.BigInteger, nullable=False),
    )
    for prefix, column in _COLUMNS:
        op.execute(
            f"INSERT INTO audit_lookup (key, seq) SELECT '{prefix}' || {column}, seq "  # noqa: S608
            f"FROM audit_ledger WHERE {column} IS NOT NULL"
        )
    op.execute(
        "INSERT INTO audit_lookup_state (id, upto) "
        "SELECT 1, COALESCE(MAX(seq), 0) FROM audit_ledger"
    )
    for name, _column in _OLD:
        op.drop_index(name, table_name="audit_ledger")


def downgrade() -> None:
    for name, column in _OLD:
        op.create_index(name, "audit_ledger", [column])
    op.drop_table("audit_lookup_state")
    op.drop_table("audit_lookup")
