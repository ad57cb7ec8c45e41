"""The production PostgreSQL set-up of docs/audit.md ("Append-only"), on a real server:
``examples/postgres/roles.sql`` and ``grants.sql`` exactly as shipped, migrations as the
owner role, Tessera as an application role that owns nothing. The application role appends
and verifies, and is refused (by privileges, before any trigger runs) every way of changing
the ledger: UPDATE, DELETE, TRUNCATE, ALTER TABLE ... DISABLE TRIGGER, DROP TRIGGER."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from tests.conftest import PG_URL, make_config, require_postgres

from tessera.app import build, initialise
from tessera.audit import ActorLayers, AuditEntry
from tessera.store.engine import make_engine

pytestmark = pytest.mark.postgres

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "postgres"


def psql_script(path: Path, variables: dict[str, str]) -> list[str]:
    """The statements of a psql script with its ``-v`` variables interpolated the way psql
    does (``:"name"`` an identifier, ``:'name'`` a literal)."""
    sql = "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())

    def sub(m: re.Match[str]) -> str:
        value = variables[m.group(2)]
        quote = m.group(1)
        return quote + value.replace(quote, quote * 2) + quote

    sql = re.sub(r""":(["'])([a-z_]+)\1""", sub, sql)
    if re.search(r":[\"'a-z]", sql.replace("::", "")):
        raise AssertionError(f"{path.name}: a psql variable was not given")
    return [s.strip() for s in sql.split(";") if s.strip()]


@dataclass
class Roles:
    schema: str
    owner: str
    app: str

    def url(self, role: str) -> str:
        host = PG_URL.split("@", 1)[1]
        return f"postgresql+psycopg://{role}:{secrets.token_hex(4)}@{host}"


@pytest.fixture
def roles() -> Iterator[Roles]:
    require_postgres()
    suffix = secrets.token_hex(4)
    r = Roles(f"tessera_{suffix}", f"tessera_owner_{suffix}", f"tessera_app_{suffix}")
    admin = create_engine(PG_URL)
    variables = {
        "schema": r.schema,
        "owner": r.owner,
        "app": r.app,
        "owner_password": secrets.token_hex(16),
        "app_password": secrets.token_hex(16),
    }
    try:
        with admin.begin() as conn:
            for statement in psql_script(EXAMPLES / "roles.sql", variables):
                conn.execute(text(statement))
        yield r
    finally:
        with admin.begin() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE usename IN (:o, :a) AND pid <> pg_backend_pid()"
                ),
                {"o": r.owner, "a": r.app},
            )
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{r.schema}" CASCADE'))
            for role in (r.app, r.owner):
                exists = conn.execute(
                    text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}
                ).first()
                if exists:
                    conn.execute(text(f'DROP OWNED BY "{role}"'))
                    conn.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


def _refused(engine: Engine, statement: str) -> str:
    """Run ``statement`` and return the database's refusal (it must be refused)."""
    with engine.connect() as conn:
        try:
            conn.execute(text(statement))
        except DBAPIError as exc:
            conn.rollback()
            return str(exc.orig)
        conn.rollback()
    raise AssertionError(f"the application role was allowed to run: {statement}")


def test_the_application_role_appends_and_verifies_but_cannot_change_the_ledger(
    tmp_path: Path, roles: Roles
) -> None:
    # migrations (and the first key and admin token) as the owner role
    owner_config = make_config(tmp_path, TESSERA_DATABASE_URL=roles.url(roles.owner))
    initialise(owner_config)
    owner = make_engine(owner_config.database_url)
    with owner.begin() as conn:
        for statement in psql_script(
            EXAMPLES / "grants.sql", {"schema": roles.schema, "app": roles.app}
        ):
            conn.execute(text(statement))
        tables = conn.execute(
            text("SELECT tableowner FROM pg_tables WHERE schemaname = :s"), {"s": roles.schema}
        ).all()
    owner.dispose()
    assert tables
    assert {row[0] for row in tables} == {roles.owner}  # the owner role holds every table

    # Tessera as the application role: state changes, decisions, checkpoints, verify
    app_config = make_config(tmp_path, TESSERA_DATABASE_URL=roles.url(roles.app))
    t = build(app_config)
    try:
        t.identity.create_user("alice", actor="cli")
        seq = t.audit.record(
            AuditEntry("pdp.decision", ActorLayers("agent:a"), "docs/read", "doc:1", "allow")
        )
        assert seq > 0
        assert t.audit.chain_pending() >= 0
        assert t.audit.checkpoint() is not None
        report = t.audit.verify()
        assert report.ok, report.problems
        assert report.pending == 0
        assert report.records == t.audit.head().size >= 2
    finally:
        t.close()

    app = make_engine(app_config.database_url)
    try:
        with app.connect() as conn:
            who = conn.execute(text("SELECT current_user, current_schema()")).one()
        assert tuple(who) == (roles.app, roles.schema)
        for table in ("audit_ledger", "audit_checkpoints"):
            for statement in (
                f"UPDATE {table} SET tree_size = tree_size"  # noqa: S608 - fixed names
                if table == "audit_checkpoints"
                else f"UPDATE {table} SET hash = hash",  # noqa: S608
                f"DELETE FROM {table}",  # noqa: S608
                f"TRUNCATE {table}",
            ):
                error = _refused(app, statement)
                # refused by privileges, not by the triggers the owner could drop
                assert f"permission denied for table {table}" in error, error
            for statement in (
                f"ALTER TABLE {table} DISABLE TRIGGER ALL",
                f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only",
                f"DROP TRIGGER {table}_append_only ON {table}",
                f"DROP TRIGGER {table}_no_truncate ON {table}",
                f"DROP TABLE {table}",
            ):
                error = _refused(app, statement)
                assert re.search(f"must be owner of (table|relation) {table}$", error), error
        for statement in ("UPDATE audit_outbox SET body = body", "TRUNCATE audit_outbox"):
            assert "permission denied for table audit_outbox" in _refused(app, statement)
        assert "permission denied" in _refused(app, "UPDATE alembic_version SET version_num = 'x'")
        assert "permission denied for schema" in _refused(app, "CREATE TABLE sneaky (x int)")
        replaced = _refused(
            app,
            "CREATE OR REPLACE FUNCTION tessera_audit_append_only() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
        )
        assert re.search("permission denied for schema|must be owner of function", replaced)
        # the ledger is untouched by all of the above
        t = build(app_config)
        try:
            assert t.audit.verify().ok
        finally:
            t.close()
    finally:
        app.dispose()
