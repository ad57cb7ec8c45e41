"""SQL side of the audit ledger: the outbox writer used inside write transactions, and the
chainer's store (one durable transaction per batch, under the chain lock).

The chain lock is SQLite's write lock (``BEGIN IMMEDIATE``) or, on PostgreSQL, the
transaction advisory lock ``AUDIT_LOCK_ID``; either way one chainer at a time, on any number
of nodes, reads the head, links the batch and commits it. On SQLite the chainer's commit
runs with ``synchronous=FULL``: the WAL fsync covers the batch *and* every earlier commit
(which run with ``synchronous=NORMAL``), so one fsync makes a whole group durable.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from tessera.audit.chain import GENESIS_HASH, ChainHead, LinkedRecord, extract, link
from tessera.audit.checkpoint import Checkpoint
from tessera.audit.ports import AuditQuery, ChainBatch
from tessera.audit.record import RECORD_VERSION, AuditEntry, entry_from_event
from tessera.clock import Clock, SystemClock
from tessera.errors import StoreUnavailable
from tessera.store import tables as t
from tessera.store.engine import translate_db_errors
from tessera.store.fastsql import pg_paramstyle, sqlite_timestamp

AUDIT_LOCK_ID = 0x7E55A0D  # pg_advisory_xact_lock key of the chainer
_L = t.audit_ledger


def _unavailable(exc: Exception) -> StoreUnavailable:
    return StoreUnavailable(
        "the audit ledger cannot be written; nothing was changed",
        code="audit_unavailable",
        detail=str(getattr(exc, "orig", exc))[:500],
    )


class SqlAuditOutbox:
    """``tx.audit``: evidence written in the caller's transaction (outbox).

    If the entry cannot be written the whole transaction fails with ``StoreUnavailable``
    (503): no state change without its record.
    """

    def __init__(self, conn: Connection, clock: Clock) -> None:
        self._c = conn
        self._clock = clock

    def append(self, entry: AuditEntry) -> None:
        now = self._clock.now()
        body = json.dumps(entry.body(now), sort_keys=True, separators=(",", ":"))
        try:
            # driver SQL: this runs on every state change (see store/fastsql.py)
            self._c.exec_driver_sql(
                _OUTBOX_INSERT_SQLITE if self._c.dialect.name == "sqlite" else _OUTBOX_INSERT_PG,
                (sqlite_timestamp(now) if self._c.dialect.name == "sqlite" else now, body),
            )
        except DBAPIError as exc:
            raise _unavailable(exc) from exc

    def append_event(self, type: str, subject: str, payload: dict[str, Any], actor: str) -> None:
        self.append(entry_from_event(type, subject, payload, actor))


_HEAD = "SELECT seq, hash FROM audit_ledger ORDER BY seq DESC LIMIT 1"
_OUTBOX_INSERT_SQLITE = "INSERT INTO audit_outbox (created_at, body) VALUES (?, ?)"
_OUTBOX_INSERT_PG = pg_paramstyle(_OUTBOX_INSERT_SQLITE)


# The hot path of group commit: driver-level executemany, no per-row SQL compilation.
_INSERT_SQLITE = (
    "INSERT INTO audit_ledger (seq, time, event_type, outcome, principal, agent_id, "
    "session_id, user_id, outbox_id, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_PG = pg_paramstyle(_INSERT_SQLITE)
_SCAN_SQLITE = "SELECT seq, body, hash FROM audit_ledger WHERE seq > ? ORDER BY seq"
_SCAN_PG = pg_paramstyle(_SCAN_SQLITE)


def _row(rec: LinkedRecord, outbox_id: int | None, sqlite: bool) -> tuple[Any, ...]:
    cols = extract(rec.record)
    when: Any = datetime.fromisoformat(str(rec.record["time"]))
    if sqlite:
        when = sqlite_timestamp(when)
    return (
        rec.seq,
        when,
        cols["event_type"],
        cols["outcome"],
        cols["principal"],
        cols["agent"],
        cols["session"],
        cols["user"],
        outbox_id,
        rec.body,
        rec.hash,
    )


def _outbox_body(outbox_id: int, text: str, clock: Clock) -> dict[str, Any]:
    """An outbox row's entry; a row that no longer parses is chained as a record saying so
    (the row cannot be dropped silently, and must not block the chain)."""
    try:
        body = json.loads(text)
        if isinstance(body, dict) and body.get("v") == RECORD_VERSION:
            return body
    except ValueError:
        pass
    return entry_from_event(
        "audit.outbox_unreadable", f"outbox:{outbox_id}", {"length": len(text)}, "system"
    ).body(clock.now())


class SqlAuditLedger:
    """The ``AuditLedgerStore`` of ``tessera.audit`` on SQLite or PostgreSQL."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self.engine = engine
        self._clock = clock or SystemClock()
        self._sqlite = engine.dialect.name == "sqlite"

    def chain(self, bodies: Sequence[dict[str, Any]], *, outbox_limit: int) -> ChainBatch:
        with translate_db_errors(), self.engine.connect() as raw:
            dbapi: Any = raw.connection.driver_connection
            if self._sqlite:
                dbapi.execute("PRAGMA synchronous=FULL")
            try:
                conn = raw.execution_options(tessera_write=True)
                try:
                    with conn.begin():
                        return self._chain(conn, bodies, outbox_limit)
                except (IntegrityError, DBAPIError) as exc:
                    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                        raise
                    raise _unavailable(exc) from exc
            finally:
                if self._sqlite and not raw.invalidated:
                    dbapi.execute("PRAGMA synchronous=NORMAL")

    def _chain(
        self, conn: Connection, bodies: Sequence[dict[str, Any]], outbox_limit: int
    ) -> ChainBatch:
        if not self._sqlite:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_ID})
        head = self._head(conn)
        outbox: list[tuple[int, str]] = []
        if outbox_limit > 0:
            outbox = [
                (int(r[0]), str(r[1]))
                for r in conn.execute(
                    select(t.audit_outbox.c.id, t.audit_outbox.c.body)
                    .order_by(t.audit_outbox.c.id)
                    .limit(outbox_limit + 1)
                )
            ]
        more = len(outbox) > outbox_limit
        outbox = outbox[:outbox_limit]
        all_bodies = [_outbox_body(oid, body, self._clock) for oid, body in outbox] + list(bodies)
        if not all_bodies:
            return ChainBatch([], 0, head, False)
        linked = link(head, all_bodies)
        ids = [oid for oid, _ in outbox]
        sqlite = self._sqlite
        rows = [_row(rec, ids[i] if i < len(ids) else None, sqlite) for i, rec in enumerate(linked)]
        conn.exec_driver_sql(_INSERT_SQLITE if sqlite else _INSERT_PG, rows)
        if ids:
            conn.execute(t.audit_outbox.delete().where(t.audit_outbox.c.id.in_(ids)))
        last = linked[-1]
        return ChainBatch(
            [rec.seq for rec in linked[len(ids) :]], len(ids), ChainHead(last.seq, last.hash), more
        )

    @staticmethod
    def _head(conn: Connection) -> ChainHead:
        row = conn.exec_driver_sql(_HEAD).first()
        return ChainHead(0, GENESIS_HASH) if row is None else ChainHead(int(row[0]), str(row[1]))

    def head(self) -> ChainHead:
        with translate_db_errors(), self.engine.connect() as conn:
            return self._head(conn)

    def pending(self) -> int:
        with translate_db_errors(), self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t.audit_outbox)).scalar_one())

    def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
        with translate_db_errors(), self.engine.connect() as raw:
            conn = raw.execution_options(tessera_write=True)
            try:
                with conn.begin():
                    conn.execute(
                        t.audit_checkpoints.insert().values(
                            tree_size=checkpoint.tree_size,
                            head_hash=checkpoint.head_hash,
                            jws=checkpoint.jws,
                            created_at=datetime.fromtimestamp(checkpoint.issued_at, tz=UTC),
                        )
                    )
            except IntegrityError:
                return False  # another node checkpointed this size first
        return True

    def checkpoint_jws(self) -> list[tuple[int, str]]:
        c = t.audit_checkpoints.c
        with translate_db_errors(), self.engine.connect() as conn:
            rows = conn.execute(select(c.tree_size, c.jws).order_by(c.tree_size))
            return [(int(r[0]), str(r[1])) for r in rows]

    def scan(self, after: int, batch: int) -> Iterator[list[tuple[int, bytes, str]]]:
        """Rows in order from one snapshot (one read transaction), through the driver's
        own cursor: verification runs at hashing speed, not at row-mapping speed."""
        sql = _SCAN_SQLITE if self._sqlite else _SCAN_PG
        with translate_db_errors(), self.engine.connect() as conn, conn.begin():
            cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(sql, (after,))
                while True:
                    rows = cursor.fetchmany(batch)
                    if not rows:
                        return
                    if type(rows[0][1]) is not bytes:  # PostgreSQL may hand out memoryviews
                        rows = [(s, bytes(b), h) for s, b, h in rows]
                    yield rows
            finally:
                cursor.close()

    def query(self, q: AuditQuery) -> list[dict[str, Any]]:
        stmt = select(_L.c.body, _L.c.hash)
        for col, value in (
            (_L.c.agent_id, q.agent),
            (_L.c.session_id, q.session),
            (_L.c.user_id, q.user),
            (_L.c.event_type, q.event_type),
            (_L.c.outcome, q.outcome),
        ):
            if value is not None:
                stmt = stmt.where(col == value)
        if q.since is not None:
            stmt = stmt.where(_L.c.time >= q.since)
        if q.until is not None:
            stmt = stmt.where(_L.c.time < q.until)
        if q.after:
            stmt = stmt.where(_L.c.seq > q.after)
        if q.before is not None:
            stmt = stmt.where(_L.c.seq < q.before)
        order = _L.c.seq.desc() if q.newest_first else _L.c.seq
        stmt = stmt.order_by(order).limit(q.limit)
        with translate_db_errors(), self.engine.connect() as conn:
            rows = conn.execute(stmt).fetchall()
        return [{**json.loads(bytes(body)), "hash": h} for body, h in rows]
