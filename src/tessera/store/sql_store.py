"""``SqlStore``: transactions over one engine, with the event log written in each (outbox)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, func, select, text

from tessera.clock import Clock, utc
from tessera.errors import StoreUnavailable, TesseraError
from tessera.signals.events import Event, encode_consistency_token
from tessera.store import tables as t
from tessera.store.engine import EVENT_LOCK_ID, sqlite_writer, translate_db_errors, writer_turn
from tessera.store.fastsql import event_types_after, insert_event, take_budgets_each
from tessera.store.sql_audit import SqlAuditOutbox
from tessera.store.sql_directory import SqlDirectoryRepo
from tessera.store.sql_identity import (
    SqlAgentRepo,
    SqlCredentialRepo,
    SqlModelRepo,
    SqlOperatorRepo,
    SqlServiceRepo,
    SqlUserRepo,
)
from tessera.store.sql_keys import SqlAdminTokenRepo, SqlSigningKeyRepo
from tessera.store.sql_policy import SqlPolicyRepo
from tessera.store.sql_rebac import SqlRebacRepo
from tessera.store.sql_sessions import SqlReplayCache, SqlSessionRepo

MAX_EVENT_PAYLOAD = 16384


class SqlEventLog:
    """Appends to and reads from the ``events`` table within one connection."""

    def __init__(self, conn: Connection, clock: Clock) -> None:
        self._c = conn
        self._clock = clock
        self._locked = False
        self.last_seq: int | None = None

    def append(self, type: str, subject: str, payload: dict[str, Any], actor: str) -> int:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        if len(body) > MAX_EVENT_PAYLOAD:
            raise ValueError("event payload too large")
        if self._c.dialect.name == "postgresql" and not self._locked:
            # Serialise event writers until commit: sequence order == commit order.
            self._c.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVENT_LOCK_ID})
            self._locked = True
        seq = insert_event(self._c, type, subject, body, actor, self._clock.now())
        if self._c.dialect.name == "postgresql":
            # A hint for tailing nodes, delivered at commit; never the data itself.
            self._c.execute(text("SELECT pg_notify('tessera_events', :s)"), {"s": str(seq)})
        # Every state change is also evidence, in the same transaction (audit outbox).
        SqlAuditOutbox(self._c, self._clock).append_event(type, subject, payload, actor)
        self.last_seq = seq
        return seq

    def read_after(self, seq: int, limit: int = 1000) -> list[Event]:
        rows = self._c.execute(
            select(t.events).where(t.events.c.seq > seq).order_by(t.events.c.seq).limit(limit)
        )
        return [
            Event(r.seq, r.type, r.subject, json.loads(r.payload), r.actor, utc(r.created_at))
            for r in rows
        ]

    def types_after(self, seq: int, limit: int = 1000) -> list[tuple[int, str]]:
        """(seq, type) after ``seq``, through driver SQL (the identity cache's hot path)."""
        return event_types_after(self._c, seq, limit)

    def head(self) -> int:
        return int(self._c.execute(select(func.coalesce(func.max(t.events.c.seq), 0))).scalar_one())


class SqlTx:
    """Repositories bound to one connection and transaction."""

    def __init__(self, conn: Connection, clock: Clock) -> None:
        self.connection = conn
        self.operators = SqlOperatorRepo(conn)
        self.users = SqlUserRepo(conn)
        self.services = SqlServiceRepo(conn)
        self.agents = SqlAgentRepo(conn)
        self.models = SqlModelRepo(conn)
        self.credentials = SqlCredentialRepo(conn)
        self.signing_keys = SqlSigningKeyRepo(conn)
        self.admin_tokens = SqlAdminTokenRepo(conn)
        self.sessions = SqlSessionRepo(conn)
        self.replay = SqlReplayCache(conn)
        self.events = SqlEventLog(conn, clock)
        self.audit = SqlAuditOutbox(conn, clock)
        self.rebac = SqlRebacRepo(conn)
        self.policy = SqlPolicyRepo(conn)
        self.directory = SqlDirectoryRepo(conn)  # the PDP's directory (migration 0013)
        self.consistency_token: str | None = None


class SqlStore:
    """The store of one Tessera node: SQLite or PostgreSQL behind the same interface."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        # SQLite has one writer at a time: shared with the audit ledger (engine.sqlite_writer).
        self._writer = sqlite_writer(engine)
        # The last event this node committed: the event tailer catches up to it before the
        # node's next read, so a node always sees its own writes (signals.tailer).
        self.last_written_seq = 0
        self._budget_lock = threading.Lock()
        self._budget_conn: Any = None  # take_budgets' connection (a pool checkout, kept)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def write(self) -> Iterator[SqlTx]:
        """A write transaction. On success every change and its events commit together and
        ``tx.consistency_token`` names the last event; on any error nothing is written."""
        with writer_turn(self._writer), translate_db_errors(), self.engine.connect() as raw:
            conn = raw.execution_options(tessera_write=True)
            tx = SqlTx(conn, self.clock)
            with conn.begin():
                yield tx
            if tx.events.last_seq is not None:
                tx.consistency_token = encode_consistency_token(tx.events.last_seq)
                self.last_written_seq = max(self.last_written_seq, tx.events.last_seq)

    def take_budgets(self, asks: Sequence[tuple[str, str, int]]) -> list[bool]:
        """The conditional decrement of each ``(sid, name, amount)`` in order, in one write
        transaction through the raw driver (the PDP's grouped budget writes,
        ``pdp.budgets``); each ask has its own answer. On any error nothing is spent and
        the error is raised (``StoreUnavailable`` for a driver error).

        The writes go through one connection kept checked out of the pool for them (pool
        checkout, reset and return cost about as much as the transaction): a driver error
        discards it, so after a database restart one group fails (fail closed: its
        decisions are denies) and the next one connects afresh."""
        sqlite = self.engine.dialect.name == "sqlite"
        with writer_turn(self._writer), self._budget_lock:
            kept = self._budget_conn
            if kept is None:
                with translate_db_errors():
                    kept = self._budget_conn = self.engine.raw_connection()
            try:
                return take_budgets_each(kept.driver_connection, sqlite, asks)
            except Exception as exc:
                self._budget_conn = None
                kept.invalidate()  # its state is unknown: never reused
                if isinstance(exc, TesseraError):
                    raise
                raise StoreUnavailable(detail=str(exc)[:500]) from exc

    def close(self) -> None:
        """Give back the connection kept for budget writes, then close the engine's pool."""
        with self._budget_lock:
            kept, self._budget_conn = self._budget_conn, None
        if kept is not None:
            kept.close()
        self.engine.dispose()

    @contextmanager
    def read(self) -> Iterator[SqlTx]:
        """A read-only transaction (a consistent snapshot on SQLite WAL)."""
        with translate_db_errors(), self.engine.connect() as conn, conn.begin():
            yield SqlTx(conn, self.clock)

    def read_events_after(self, seq: int, limit: int = 1000) -> list[Event]:
        with self.read() as tx:
            return tx.events.read_after(seq, limit)

    def event_head(self) -> int:
        with self.read() as tx:
            return tx.events.head()

    def ping(self) -> bool:
        with translate_db_errors(), self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
