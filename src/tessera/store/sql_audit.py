"""SQL side of the audit ledger: the outbox writer used inside write transactions, and the
chainer's store (one durable transaction per batch, under the chain lock).

The chain lock is SQLite's write lock (``BEGIN IMMEDIATE``) or, on PostgreSQL, the
transaction advisory lock ``AUDIT_LOCK_ID``; either way one chainer at a time, on any number
of nodes, reads the head, links the batch and commits it. On SQLite the chainer's commit
runs with ``synchronous=FULL``: the WAL fsync covers the batch *and* every earlier commit
(which run with ``synchronous=NORMAL``), so one fsync makes a whole group durable.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    func,
    select,
    union_all,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from tessera.audit.chain import (
    GENESIS_HASH,
    ChainHead,
    LinkedRecord,
    PreparedBody,
    link,
    link_prepared,
)
from tessera.audit.checkpoint import Checkpoint
from tessera.audit.ports import AuditQuery, ChainBatch
from tessera.audit.record import RECORD_VERSION, AuditEntry, entry_from_event
from tessera.audit.segments import Segment
from tessera.audit.verify import RangeResult, check_range
from tessera.clock import Clock, SystemClock
from tessera.errors import Conflict, StoreUnavailable, TesseraError
from tessera.store import tables as t
from tessera.store.engine import make_engine, sqlite_writer, translate_db_errors, writer_turn
from tessera.store.fastsql import pg_paramstyle, sqlite_timestamp

AUDIT_LOCK_ID = 0x7E55A0D  # pg_advisory_xact_lock key of the chainer
_L = t.audit_ledger
_LK = t.audit_lookup
_LS = t.audit_lookup_state
SCAN_RANGE_BATCH = 5000  # rows per fetch of a ``check_ranges`` worker
LOOKUP_BATCH = 500  # records indexed per lookup transaction (a short write)
_LOOKUPS = (("agent:", "agent_id"), ("session:", "session_id"), ("user:", "user_id"))


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
_PG_LOCK = f"SELECT pg_advisory_xact_lock({AUDIT_LOCK_ID})"
_T = TypeVar("_T")
# audit_segments (migration 0012); kept here, next to the only code that uses it.
_SEG = Table(
    "audit_segments",
    MetaData(),
    Column("segment", BigInteger, primary_key=True, autoincrement=False),
    Column("first_seq", BigInteger, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("archive_name", Text, nullable=False),
    Column("archive_sha256", String(64), nullable=False),
    Column("archived_records", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def _purge_refused() -> int:
    """What ``tessera_audit_purge_ok()`` answers on the purge's connection afterwards."""
    return 0


def _sql(sqlite: bool, statement: str) -> str:
    return statement if sqlite else pg_paramstyle(statement)


_OUTBOX_INSERT_SQLITE = "INSERT INTO audit_outbox (created_at, body) VALUES (?, ?)"
_OUTBOX_INSERT_PG = pg_paramstyle(_OUTBOX_INSERT_SQLITE)


# The hot path of group commit: driver-level statements, no per-row SQL compilation.
_INSERT_SQLITE = (
    "INSERT INTO audit_ledger (seq, time, event_type, outcome, principal, agent_id, "
    "session_id, user_id, outbox_id, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_PG = pg_paramstyle(_INSERT_SQLITE)
# On SQLite a group's rows go in as multi-row INSERTs of up to this many rows (704
# parameters, below even the 999 of SQLite before 3.32): the driver releases the GIL
# around every sqlite3_step, so executemany would hand the GIL over once per row, and in
# a busy server each hand-over can wait a switch interval (docs/audit.md, round 6).
SQLITE_ROWS_PER_INSERT = 64


@functools.cache
def _sqlite_insert(n: int) -> str:
    """The INSERT of ``n`` ledger rows at once (one statement text per ``n``)."""
    return _INSERT_SQLITE + ", (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" * (n - 1)


def _insert_sqlite_rows(cur: Any, rows: Sequence[tuple[Any, ...]]) -> None:
    """``rows`` into the ledger on a DB-API cursor of SQLite, a statement per
    ``SQLITE_ROWS_PER_INSERT`` rows: one sqlite3_step (one GIL hand-over) each."""
    step = SQLITE_ROWS_PER_INSERT
    for i in range(0, len(rows), step):
        chunk = rows[i : i + step]
        cur.execute(_sqlite_insert(len(chunk)), [value for row in chunk for value in row])


_SCAN_SQLITE = "SELECT seq, body, hash FROM audit_ledger WHERE seq > ? AND seq <= ? ORDER BY seq"
_SCAN_PG = pg_paramstyle(_SCAN_SQLITE)
_SCAN_END = 2**63 - 1  # ``upto`` when the scan runs to the end


def _row(rec: LinkedRecord, outbox_id: int | None, sqlite: bool) -> tuple[Any, ...]:
    event_type, outcome, principal, agent, session, user = rec.columns
    when: Any = rec.time
    if sqlite:  # SQLAlchemy's DateTime storage form (fastsql.sqlite_timestamp), faster
        when = (
            when.replace(tzinfo=None).isoformat(" ", "microseconds")
            if when.tzinfo is UTC
            else sqlite_timestamp(when)
        )
    return (
        rec.seq,
        when,
        event_type,
        outcome,
        principal,
        agent,
        session,
        user,
        outbox_id,
        rec.body,
        rec.hash,
    )


def _sqlite_row(seq: int, raw: bytes, digest: str, body: PreparedBody) -> tuple[Any, ...]:
    """``_row`` of a prepared body on SQLite (no outbox id), without a ``LinkedRecord``."""
    return (seq, body.utc_text, *body.columns, None, raw, digest)


def _pg_row(seq: int, raw: bytes, digest: str, body: PreparedBody) -> tuple[Any, ...]:
    """``_row`` of a prepared body on PostgreSQL (no outbox id)."""
    return (seq, body.time, *body.columns, None, raw, digest)


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
        self._writer = sqlite_writer(engine)  # the store's own: one writer queue per process
        self._group_lock = threading.Lock()
        self._group_conn: Any = None  # group commit's connection (a pool checkout, kept)

    def chain(
        self, bodies: Sequence[dict[str, Any] | PreparedBody], *, outbox_limit: int
    ) -> ChainBatch:
        if outbox_limit == 0 and bodies:
            return self._append_group(bodies)
        return self._locked(lambda conn, _dbapi: self._chain(conn, bodies, outbox_limit))

    def _append_group(self, bodies: Sequence[dict[str, Any] | PreparedBody]) -> ChainBatch:
        """Group commit's hot path: the same transaction as ``_chain`` with no outbox rows,
        on the driver directly (BEGIN, lock, head, the rows' INSERTs, COMMIT): SQLAlchemy's
        per-statement work would cost more than the records' own.

        It runs on one connection kept checked out of the pool (checkout, reset and return
        cost about a fifth of a group's commit), on SQLite set to ``synchronous=FULL`` once
        for its lifetime. Any error discards it (its state is unknown), so the next group
        connects afresh: after a database restart one group fails, closed."""
        sqlite = self._sqlite
        with writer_turn(self._writer), self._group_lock, translate_db_errors():
            kept = self._group_conn
            fresh = kept is None
            if fresh:
                kept = self._group_conn = self.engine.raw_connection()
            dbapi: Any = kept.driver_connection
            try:
                cur = dbapi.cursor()
                if fresh and sqlite:
                    cur.execute("PRAGMA synchronous=FULL")  # for this connection's lifetime
                if sqlite:
                    cur.execute("BEGIN IMMEDIATE")
                else:
                    cur.execute(_PG_LOCK)  # psycopg opens the transaction itself
                row = cur.execute(_HEAD).fetchone()
                head = ChainHead(0, GENESIS_HASH) if row is None else ChainHead(int(row[0]), row[1])
                if all(type(b) is PreparedBody for b in bodies):
                    rows, new_head = link_prepared(
                        head,
                        bodies,  # type: ignore[arg-type]
                        _sqlite_row if sqlite else _pg_row,
                    )
                else:
                    linked = link(head, bodies)
                    rows = [_row(rec, None, sqlite) for rec in linked]
                    new_head = ChainHead(linked[-1].seq, linked[-1].hash)
                if sqlite:
                    _insert_sqlite_rows(cur, rows)
                    cur.execute("COMMIT")
                else:
                    cur.executemany(_INSERT_PG, rows)
                    dbapi.commit()
                cur.close()
            except Exception as exc:
                # Whatever failed, the connection's state is unknown: never reuse it.
                self._group_conn = None
                kept.invalidate(exc)
                if isinstance(exc, TesseraError):
                    raise
                raise _unavailable(exc) from exc
        first = new_head.size - len(bodies) + 1
        return ChainBatch(list(range(first, new_head.size + 1)), 0, new_head, False)

    def close(self) -> None:
        """Give back group commit's kept connection (the app closes it before the pool)."""
        with self._group_lock:
            kept, self._group_conn = self._group_conn, None
        if kept is not None:
            kept.close()

    def _locked(self, work: Callable[[Connection, Any], _T]) -> _T:
        """Run ``work`` in one durable write transaction under the chain lock."""
        with writer_turn(self._writer), translate_db_errors(), self.engine.connect() as raw:
            dbapi: Any = raw.connection.driver_connection
            if self._sqlite:
                dbapi.execute("PRAGMA synchronous=FULL")
            try:
                conn = raw.execution_options(tessera_write=True)
                try:
                    with conn.begin():
                        if not self._sqlite:
                            conn.exec_driver_sql(_PG_LOCK)
                        return work(conn, dbapi)
                except (IntegrityError, DBAPIError) as exc:
                    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                        raise
                    raise _unavailable(exc) from exc
            finally:
                if self._sqlite and not raw.invalidated:
                    dbapi.execute("PRAGMA synchronous=NORMAL")

    # -- segments ----------------------------------------------------------------------

    def segments(self) -> list[Segment]:
        """Every segment after the first, oldest first."""
        c = _SEG.c
        with translate_db_errors(), self.engine.connect() as conn:
            rows = conn.execute(select(_SEG).order_by(c.segment)).fetchall()
        return [
            Segment(
                int(r.segment),
                int(r.first_seq),
                str(r.prev_hash),
                str(r.archive_name),
                str(r.archive_sha256),
                int(r.archived_records),
                r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=UTC),
            )
            for r in rows
        ]

    def first_seq(self) -> int | None:
        """The oldest record the live ledger still holds (None when empty)."""
        with translate_db_errors(), self.engine.connect() as conn:
            value = conn.exec_driver_sql("SELECT MIN(seq) FROM audit_ledger").scalar()
        return None if value is None else int(value)

    def start_segment(self, segment: Segment, marker: dict[str, Any]) -> ChainBatch:
        """Record ``segment`` and chain ``marker`` (its evidence) in one transaction, under
        the chain lock; refused unless it is the next segment and links to the ledger's
        own hash at ``first_seq - 1``."""

        def work(conn: Connection, _dbapi: Any) -> ChainBatch:
            latest = conn.exec_driver_sql(
                "SELECT segment, first_seq FROM audit_segments ORDER BY segment DESC LIMIT 1"
            ).first()
            number, first = (1, 1) if latest is None else (int(latest[0]), int(latest[1]))
            if segment.number != number + 1 or segment.first_seq <= first:
                raise Conflict(
                    "another archive started a segment first", code="audit_segment_conflict"
                )
            row = conn.exec_driver_sql(
                _sql(self._sqlite, "SELECT hash FROM audit_ledger WHERE seq = ?"),
                (segment.first_seq - 1,),
            ).first()
            if row is None or str(row[0]) != segment.prev_hash:
                raise Conflict(
                    "the archived head is not the ledger's record", code="audit_segment_conflict"
                )
            conn.execute(
                _SEG.insert().values(
                    segment=segment.number,
                    first_seq=segment.first_seq,
                    prev_hash=segment.prev_hash,
                    archive_name=segment.archive_name,
                    archive_sha256=segment.archive_sha256,
                    archived_records=segment.archived_records,
                    created_at=segment.created_at,
                )
            )
            return self._chain(conn, [marker], 0)

        return self._locked(work)

    def index_pending(self, limit: int = LOOKUP_BATCH) -> int:
        """Add the next ``limit`` records above ``audit_lookup_state.upto`` to the agent,
        session and user lookup, in key order, and move ``upto``: one write transaction
        (under the chain lock on PostgreSQL, so two nodes never index the same records).
        Returns how many records it covered. Records are chained in ``seq`` order, so
        every record at or below the highest committed one is visible: none is skipped."""

        def work(conn: Connection, _dbapi: Any) -> int:
            sql = functools.partial(_sql, self._sqlite)
            upto = conn.exec_driver_sql("SELECT upto FROM audit_lookup_state WHERE id = 1").scalar()
            if upto is None:  # the state row is missing (restored by hand): start over
                conn.exec_driver_sql("DELETE FROM audit_lookup")
                conn.exec_driver_sql("INSERT INTO audit_lookup_state (id, upto) VALUES (1, 0)")
                upto = 0
            window = conn.exec_driver_sql(
                sql(
                    "SELECT COUNT(*), MAX(seq) FROM (SELECT seq FROM audit_ledger "
                    "WHERE seq > ? ORDER BY seq LIMIT ?) AS w"
                ),
                (upto, limit),
            ).one()
            count, top = int(window[0]), window[1]
            if not count:
                return 0
            for prefix, column in _LOOKUPS:
                conn.exec_driver_sql(
                    sql(
                        f"INSERT INTO audit_lookup (key, seq) SELECT '{prefix}' || {column}, seq "  # noqa: S608
                        f"FROM audit_ledger WHERE seq > ? AND seq <= ? AND {column} IS NOT NULL "
                        "ORDER BY 1, 2 ON CONFLICT DO NOTHING"
                    ),
                    (upto, top),
                )
            conn.exec_driver_sql(
                sql("UPDATE audit_lookup_state SET upto = ? WHERE id = 1"), (int(top),)
            )
            return count

        return self._locked(work)

    def purge(self, before_seq: int, marker: dict[str, Any]) -> tuple[int, ChainBatch]:
        """Delete the live rows below ``before_seq`` (a segment's first seq) and chain
        ``marker`` saying so, in one transaction: the only DELETE the ledger's guard lets
        through (see migration 0012). Returns how many rows left."""

        def work(conn: Connection, dbapi: Any) -> tuple[int, ChainBatch]:
            boundary = conn.exec_driver_sql(
                _sql(self._sqlite, "SELECT 1 FROM audit_segments WHERE first_seq = ?"),
                (before_seq,),
            ).first()
            if boundary is None:
                raise Conflict(
                    "records can only be purged up to a segment boundary",
                    code="audit_segment_conflict",
                )
            delete = _sql(self._sqlite, "DELETE FROM audit_ledger WHERE seq < ?")
            if self._sqlite:
                dbapi.create_function("tessera_audit_purge_ok", 0, lambda: 1)
                try:
                    removed = conn.exec_driver_sql(delete, (before_seq,)).rowcount
                finally:
                    dbapi.create_function("tessera_audit_purge_ok", 0, _purge_refused)
            else:
                conn.exec_driver_sql("SET LOCAL tessera.audit_purge = 'on'")
                removed = conn.exec_driver_sql(delete, (before_seq,)).rowcount
                conn.exec_driver_sql("SET LOCAL tessera.audit_purge = 'off'")
            conn.exec_driver_sql(
                _sql(self._sqlite, "DELETE FROM audit_lookup WHERE seq < ?"), (before_seq,)
            )
            return int(removed), self._chain(conn, [marker], 0)

        return self._locked(work)

    def _chain(
        self, conn: Connection, bodies: Sequence[dict[str, Any] | PreparedBody], outbox_limit: int
    ) -> ChainBatch:
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
        all_bodies: list[dict[str, Any] | PreparedBody] = [
            _outbox_body(oid, body, self._clock) for oid, body in outbox
        ]
        all_bodies += bodies
        if not all_bodies:
            return ChainBatch([], 0, head, False)
        linked = link(head, all_bodies)
        ids = [oid for oid, _ in outbox]
        sqlite = self._sqlite
        rows = [_row(rec, ids[i] if i < len(ids) else None, sqlite) for i, rec in enumerate(linked)]
        if sqlite:
            cur = conn.connection.cursor()  # the same connection, so the same transaction
            try:
                _insert_sqlite_rows(cur, rows)
            except sqlite3.Error as exc:
                raise _unavailable(exc) from exc
            finally:
                cur.close()
        else:
            conn.exec_driver_sql(_INSERT_PG, rows)
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
        with writer_turn(self._writer), translate_db_errors(), self.engine.connect() as raw:
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

    def scan(
        self, after: int, batch: int, upto: int | None = None
    ) -> Iterator[list[tuple[int, bytes, str]]]:
        """Rows in order from one snapshot (one read transaction), through the driver's
        own cursor: verification runs at hashing speed, not at row-mapping speed."""
        sql = _SCAN_SQLITE if self._sqlite else _SCAN_PG
        with translate_db_errors(), self.engine.connect() as conn, conn.begin():
            dbapi: Any = conn.connection.dbapi_connection
            # PostgreSQL: a server-side cursor streams (a client cursor would hold the whole
            # ledger in memory) in binary format (bytea arrives as bytes, not hex text to
            # decode: about 30% faster to verify).
            cursor: Any = (
                dbapi.cursor()
                if self._sqlite
                else dbapi.cursor(name="tessera_audit_scan", binary=True)
            )
            try:
                cursor.execute(sql, (after, _SCAN_END if upto is None else upto))
                while True:
                    rows = cursor.fetchmany(batch)
                    if not rows:
                        return
                    if type(rows[0][1]) is not bytes:  # PostgreSQL may hand out memoryviews
                        rows = [(s, bytes(b), h) for s, b, h in rows]
                    yield rows
            finally:
                cursor.close()

    def stored_hash(self, seq: int) -> str | None:
        c = _L.c
        with translate_db_errors(), self.engine.connect() as conn:
            found = conn.execute(select(c.hash).where(c.seq == seq)).scalar()
            return None if found is None else str(found)

    def check_ranges(
        self, ranges: Sequence[tuple[int, int, str | None]], wanted: frozenset[int]
    ) -> list[RangeResult] | None:
        """The first range here, each other in a forked process of its own; each with its
        own connection, so its own snapshot: ``join_ranges`` catches any difference."""
        if not _forkable():
            # Forking a process with other threads could copy a lock one of them holds;
            # a cold start (spawn) imports Tessera in every process and, below millions
            # of records, costs more than it saves. Such a process (a server) checks in
            # one pass; ``tessera audit verify`` has no other thread.
            return None
        url = self.engine.url
        if self._sqlite:
            if url.database in (None, "", ":memory:") or "mode=memory" in str(url):
                return None  # nothing another process could open
            search_path = None
        else:
            with translate_db_errors(), self.engine.connect() as conn:
                search_path = str(conn.execute(select(func.current_schema())).scalar_one())
        target = url.render_as_string(hide_password=False)
        fork = multiprocessing.get_context("fork")
        first, rest = ranges[0], ranges[1:]
        with ProcessPoolExecutor(max_workers=max(1, len(rest)), mp_context=fork) as pool:
            futures = [
                pool.submit(_check_range, target, search_path, after, upto, start, wanted)
                for after, upto, start in rest
            ]
            here = _check_range_in(self, *first, wanted)  # this process takes the first
            return [here, *(f.result() for f in futures)]

    def query(self, q: AuditQuery) -> list[dict[str, Any]]:
        stmt = select(_L.c.body, _L.c.hash)
        # Agent, session and user through the lookup (complete up to its ``upto``) and the
        # ledger's rows above ``upto``; one statement, so one snapshot of both.
        upto = select(_LS.c.upto).where(_LS.c.id == 1).scalar_subquery()
        for (prefix, column), value in zip(_LOOKUPS, (q.agent, q.session, q.user), strict=True):
            if value is None:
                continue
            col = _L.c[column]
            indexed = select(_LK.c.seq).where(_LK.c.key == prefix + value)
            if q.after:
                indexed = indexed.where(_LK.c.seq > q.after)
            if q.before is not None:
                indexed = indexed.where(_LK.c.seq < q.before)
            tail = select(_L.c.seq).where(_L.c.seq > func.coalesce(upto, 0), col == value)
            stmt = stmt.where(_L.c.seq.in_(union_all(indexed, tail)))
        for col, value in ((_L.c.event_type, q.event_type), (_L.c.outcome, q.outcome)):
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


def _forkable() -> bool:
    """True when this process may fork workers: Linux (elsewhere Python itself prefers
    not to fork, as system libraries may not survive it) and no other thread."""
    return sys.platform == "linux" and threading.active_count() == 1


def _check_range(
    url: str,
    search_path: str | None,
    after: int,
    upto: int,
    start_hash: str | None,
    wanted: frozenset[int],
) -> RangeResult:
    """A ``check_ranges`` worker: records ``after + 1 .. upto`` from its own connection."""
    engine = make_engine(url, schema=search_path, pool_size=1)
    try:
        return _check_range_in(SqlAuditLedger(engine), after, upto, start_hash, wanted)
    finally:
        engine.dispose()


def _check_range_in(
    ledger: SqlAuditLedger, after: int, upto: int, start_hash: str | None, wanted: frozenset[int]
) -> RangeResult:
    return check_range(
        after,
        upto,
        start_hash,
        wanted,
        stored_hash=ledger.stored_hash,
        scan=lambda a, u: ledger.scan(a, SCAN_RANGE_BATCH, u),
    )
