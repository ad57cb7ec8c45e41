"""SQL for Shared Signals: streams, subjects, the SET outbox and its cursor, received SETs.

``SqlSignalsStore`` wraps the node's ``SqlStore``: every transaction also carries the
store's own repositories (events, sessions), so a receiver's revocation and its events
commit together (the outbox rule, DESIGN 6)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from tessera.clock import utc
from tessera.signals.model import DeliveryRow, StreamRow
from tessera.store import tables_signals as ts
from tessera.store.sql_store import SqlStore, SqlTx


def _stream(r: Any) -> StreamRow:
    return StreamRow(
        r.id,
        r.service_id,
        json.loads(r.config),
        r.method,
        r.endpoint_url,
        r.status,
        r.status_reason,
        int(r.created_seq),
        utc(r.created_at),
        utc(r.updated_at),
        r.auth_sealed,
    )


OUTBOX_LOCK_ID = 0x55F0B0C  # int4 (the two-key advisory lock form)


class SqlSignalsRepo:
    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def _insert_ignore(self, table: Any, rows: Sequence[dict[str, Any]], key: list[str]) -> int:
        if not rows:
            return 0
        dialect = postgresql if self._c.dialect.name == "postgresql" else sqlite
        stmt = (
            dialect.insert(table)
            .values(list(rows))
            .on_conflict_do_nothing(index_elements=key)
            .returning(table.c[key[0]])  # rowcount is not reliable for upserts on every driver
        )
        return len(self._c.execute(stmt).all())

    # -- streams ----------------------------------------------------------------------------

    def add_stream(self, row: StreamRow) -> None:
        self._c.execute(
            insert(ts.ssf_streams).values(
                id=row.id,
                service_id=row.service_id,
                config=json.dumps(row.config, sort_keys=True),
                method=row.method,
                endpoint_url=row.endpoint_url,
                auth_sealed=row.auth_sealed,
                status=row.status,
                status_reason=row.status_reason,
                created_seq=row.created_seq,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )
        )

    def get_stream(self, stream_id: str) -> StreamRow | None:
        r = self._c.execute(select(ts.ssf_streams).where(ts.ssf_streams.c.id == stream_id)).first()
        return None if r is None else _stream(r)

    def list_streams(self, service_id: str | None = None) -> list[StreamRow]:
        q = select(ts.ssf_streams).order_by(ts.ssf_streams.c.created_at, ts.ssf_streams.c.id)
        if service_id is not None:
            q = q.where(ts.ssf_streams.c.service_id == service_id)
        return [_stream(r) for r in self._c.execute(q)]

    def save_stream(self, row: StreamRow) -> None:
        self._c.execute(
            update(ts.ssf_streams)
            .where(ts.ssf_streams.c.id == row.id)
            .values(
                config=json.dumps(row.config, sort_keys=True),
                method=row.method,
                endpoint_url=row.endpoint_url,
                auth_sealed=row.auth_sealed,
                status=row.status,
                status_reason=row.status_reason,
                updated_at=row.updated_at,
            )
        )

    def delete_stream(self, stream_id: str) -> bool:
        gone = self._c.execute(delete(ts.ssf_streams).where(ts.ssf_streams.c.id == stream_id))
        self._c.execute(delete(ts.ssf_subjects).where(ts.ssf_subjects.c.stream_id == stream_id))
        self._c.execute(delete(ts.ssf_deliveries).where(ts.ssf_deliveries.c.stream_id == stream_id))
        return bool(gone.rowcount)

    # -- subjects ---------------------------------------------------------------------------

    def set_subject(
        self, stream_id: str, key: str, subject: dict[str, Any], included: bool, now: datetime
    ) -> None:
        t = ts.ssf_subjects
        self._c.execute(delete(t).where(and_(t.c.stream_id == stream_id, t.c.subject_key == key)))
        self._c.execute(
            insert(t).values(
                stream_id=stream_id,
                subject_key=key,
                subject=json.dumps(subject, sort_keys=True),
                included=included,
                updated_at=now,
            )
        )

    def excluded_subjects(self) -> dict[str, set[str]]:
        t = ts.ssf_subjects
        out: dict[str, set[str]] = {}
        for r in self._c.execute(select(t.c.stream_id, t.c.subject_key).where(~t.c.included)):
            out.setdefault(r.stream_id, set()).add(r.subject_key)
        return out

    # -- the outbox -------------------------------------------------------------------------

    def try_lock_outbox(self) -> bool:
        """PostgreSQL: one mapper at a time across nodes (released at commit); the cursor's
        compare-and-set stays the guarantee. SQLite has one writer anyway."""
        if self._c.dialect.name != "postgresql":
            return True
        # keyed by schema too: deployments sharing one database never wait on each other
        lock = func.pg_try_advisory_xact_lock(OUTBOX_LOCK_ID, func.hashtext(func.current_schema()))
        return bool(self._c.execute(select(lock)).scalar())

    def last_delivery_at(self, stream_id: str, event_type: str) -> datetime | None:
        d = ts.ssf_deliveries
        q = select(func.max(d.c.created_at)).where(
            d.c.stream_id == stream_id, d.c.event_type == event_type
        )
        value = self._c.execute(q).scalar()
        return None if value is None else utc(value)

    def cursor(self, name: str) -> int | None:
        t = ts.ssf_cursor
        value = self._c.execute(select(t.c.seq).where(t.c.name == name)).scalar()
        return None if value is None else int(value)

    def init_cursor(self, name: str, seq: int) -> None:
        self._insert_ignore(ts.ssf_cursor, [{"name": name, "seq": seq}], ["name"])

    def move_cursor(self, name: str, old: int, new: int) -> bool:
        """Compare-and-set: only one node maps a given range of the log."""
        t = ts.ssf_cursor
        r = self._c.execute(update(t).where(and_(t.c.name == name, t.c.seq == old)).values(seq=new))
        return bool(r.rowcount)

    def add_deliveries(self, rows: Sequence[dict[str, Any]]) -> int:
        return self._insert_ignore(ts.ssf_deliveries, rows, ["dedupe"])

    def due_pushes(self, now: datetime, limit: int) -> list[DeliveryRow]:
        d, s = ts.ssf_deliveries, ts.ssf_streams
        q = (
            select(
                d.c.id,
                d.c.stream_id,
                d.c.jti,
                d.c.set_jwt,
                d.c.attempts,
                s.c.endpoint_url,
                s.c.auth_sealed,
            )
            .join(s, s.c.id == d.c.stream_id)
            .where(
                d.c.state == "pending",
                d.c.next_attempt_at <= now,
                or_(d.c.lease_until.is_(None), d.c.lease_until < now),
                s.c.method == "urn:ietf:rfc:8935",
                s.c.status == "enabled",
            )
            .order_by(d.c.id)
            .limit(limit)
        )
        return [DeliveryRow(*r) for r in self._c.execute(q)]

    def claim(self, delivery_id: int, now: datetime, lease_until: datetime) -> bool:
        d = ts.ssf_deliveries
        r = self._c.execute(
            update(d)
            .where(
                d.c.id == delivery_id,
                d.c.state == "pending",
                or_(d.c.lease_until.is_(None), d.c.lease_until < now),
            )
            .values(lease_until=lease_until, attempts=d.c.attempts + 1)
        )
        return bool(r.rowcount)

    def finish(self, delivery_id: int, state: str, now: datetime, error: str | None) -> None:
        d = ts.ssf_deliveries
        self._c.execute(
            update(d)
            .where(d.c.id == delivery_id)
            .values(state=state, done_at=now, lease_until=None, last_error=error)
        )

    def retry_at(self, delivery_id: int, when: datetime, error: str) -> None:
        d = ts.ssf_deliveries
        self._c.execute(
            update(d)
            .where(d.c.id == delivery_id)
            .values(next_attempt_at=when, lease_until=None, last_error=error[:300])
        )

    def purge_done(self, before: datetime) -> int:
        """Forget finished deliveries (delivered, acked, failed) older than ``before``."""
        d = ts.ssf_deliveries
        r = self._c.execute(
            delete(d).where(d.c.state.in_(("delivered", "acked", "failed")), d.c.done_at < before)
        )
        return int(r.rowcount or 0)

    def pending_for_poll(self, stream_id: str, limit: int) -> list[tuple[str, str]]:
        d = ts.ssf_deliveries
        q = (
            select(d.c.jti, d.c.set_jwt)
            .where(d.c.stream_id == stream_id, d.c.state.in_(("pending", "delivered")))
            .order_by(d.c.id)
            .limit(limit)
        )
        return [(r.jti, r.set_jwt) for r in self._c.execute(q)]

    def count_pending(self, stream_id: str) -> int:
        d = ts.ssf_deliveries
        q = select(func.count()).where(
            d.c.stream_id == stream_id, d.c.state.in_(("pending", "delivered"))
        )
        return int(self._c.execute(q).scalar_one())

    def acknowledge(
        self, stream_id: str, jtis: Sequence[str], state: str, now: datetime, error: str | None
    ) -> int:
        if not jtis:
            return 0
        d = ts.ssf_deliveries
        r = self._c.execute(
            update(d)
            .where(d.c.stream_id == stream_id, d.c.jti.in_(list(jtis)))
            .values(state=state, done_at=now, last_error=error)
        )
        return int(r.rowcount or 0)

    def delivery_states(self, stream_id: str) -> dict[str, int]:
        d = ts.ssf_deliveries
        q = select(d.c.state, func.count()).where(d.c.stream_id == stream_id).group_by(d.c.state)
        return {str(r[0]): int(r[1]) for r in self._c.execute(q)}

    def user_by_email(self, email: str) -> Any:
        """The one active user with this e-mail address (case-insensitive), else None."""
        from tessera.store import tables as t
        from tessera.store.sql_identity import SqlUserRepo

        rows = self._c.execute(
            select(t.users.c.id)
            .where(func.lower(t.users.c.email) == email.lower(), t.users.c.status == "active")
            .limit(2)
        ).all()
        if len(rows) != 1:
            return None
        return SqlUserRepo(self._c).get(str(rows[0].id))

    # -- received SETs ----------------------------------------------------------------------

    def remember_received(
        self, iss: str, jti: str, events: list[str], outcome: str, now: datetime
    ) -> bool:
        """Record a SET's (iss, jti) once; False when it was already received."""
        row = {
            "iss": iss,
            "jti": jti,
            "events": json.dumps(events),
            "outcome": outcome[:300],
            "received_at": now,
        }
        return self._insert_ignore(ts.ssf_received, [row], ["iss", "jti"]) == 1


class SignalsTx:
    """One transaction: the signals tables plus the store's own repositories."""

    def __init__(self, tx: SqlTx) -> None:
        self.signals = SqlSignalsRepo(tx.connection)
        self.events = tx.events
        self.sessions = tx.sessions
        self.users = tx.users
        self.agents = tx.agents
        self.services = tx.services
        self.consistency_token: str | None = None


class SqlSignalsStore:
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    @contextmanager
    def write(self) -> Iterator[SignalsTx]:
        with self._store.write() as tx:
            yield SignalsTx(tx)

    @contextmanager
    def read(self) -> Iterator[SignalsTx]:
        with self._store.read() as tx:
            yield SignalsTx(tx)
