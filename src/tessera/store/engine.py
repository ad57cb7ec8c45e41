"""Engines, migrations and transactions for SQLite (WAL) and PostgreSQL (psycopg 3).

Both backends behave the same: write transactions are serialised where the event log needs
it (SQLite ``BEGIN IMMEDIATE``; PostgreSQL an advisory transaction lock taken when the first
event is appended, so event sequence order equals commit order and a tailing node never
skips a row that commits late).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import NullPool

from tessera.errors import Conflict, StoreUnavailable, TesseraError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
EVENT_LOCK_ID = 0x7E55E7A  # pg_advisory_xact_lock key for the event log
WRITER_WAIT_S = 30.0  # as long as SQLite's busy_timeout: the same failure, not a new one

_writers: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_writers_guard = threading.Lock()


def sqlite_writer(engine: Engine) -> threading.Lock | None:
    """The one lock every writer of this process takes before ``BEGIN IMMEDIATE`` on this
    SQLite engine (None on PostgreSQL). SQLite has one writer at a time: threads queue on a
    lock instead of polling in SQLite's busy handler, whose growing sleeps (1, 2, 5, 10 ms
    ...) turn two colliding writers into a convoy. The store's transactions and the audit
    ledger's group commits share it; other processes (the CLI) still wait through
    busy_timeout."""
    if engine.dialect.name != "sqlite":
        return None
    with _writers_guard:
        lock = _writers.get(engine)
        if lock is None:
            lock = _writers[engine] = threading.Lock()
        return lock


@contextmanager
def writer_turn(lock: threading.Lock | None) -> Iterator[None]:
    """Hold ``lock`` (from ``sqlite_writer``) for one write transaction. Waiting longer
    than SQLite itself would is ``StoreUnavailable`` (503), as the busy handler's timeout is."""
    if lock is None:
        yield
        return
    if not lock.acquire(timeout=WRITER_WAIT_S):
        raise StoreUnavailable(detail="timed out waiting for the SQLite write lock")
    try:
        yield
    finally:
        lock.release()


def make_engine(url: str, *, schema: str | None = None, pool_size: int = 20) -> Engine:
    """Create an engine with Tessera's connection settings for the URL's backend."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=10,
        )
        _configure_sqlite(engine)
        return engine
    connect_args: dict[str, Any] = {"connect_timeout": 5}
    if schema:
        connect_args["options"] = f"-csearch_path={schema}"
    return create_engine(
        url,
        connect_args=connect_args,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=10,
    )


def make_null_pool_engine(url: str) -> Engine:
    """An engine that holds no connections between uses (CLI one-shots)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, poolclass=NullPool
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 5})


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook issue BEGIN itself (pysqlite's own is wrong here).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get("tessera_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


def _alembic_config(conn: Connection) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = conn
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn = conn.execution_options(tessera_write=True)
        command.upgrade(_alembic_config(conn), "head")
        conn.commit()


def schema_is_current(engine: Engine) -> bool:
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        head = ScriptDirectory.from_config(_alembic_config(conn)).get_current_head()
    return current is not None and current == head


@contextmanager
def translate_db_errors() -> Iterator[None]:
    """Map driver errors to Tessera's tree: constraint → Conflict, outage → StoreUnavailable."""
    try:
        yield
    except TesseraError:
        raise
    except IntegrityError as exc:
        raise Conflict(
            "the change conflicts with existing data", code="conflict", detail=str(exc.orig)[:500]
        ) from exc
    except OperationalError as exc:
        raise StoreUnavailable(detail=str(exc.orig)[:500]) from exc
    except PoolTimeoutError as exc:
        raise StoreUnavailable(detail="connection pool exhausted") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable(detail=str(exc.orig)[:500]) from exc
        raise
