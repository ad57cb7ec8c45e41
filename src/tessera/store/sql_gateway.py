"""SQL parts of the MCP gateway: durable session taint (``SessionTaint``) and the release
half of budget reservations.

Taint is shared across nodes through the store: marking writes a ``session_taints`` row and
a ``session.tainted`` event in one transaction. Reads are served from memory: a positive
answer is kept for good (taint is never lifted), a negative one only while the event log
head has not moved (every mark appends an event, so a mark written by another node moves
the head and the next read sees it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from tessera.store.fastsql import give_budget, take_budget
from tessera.store.tables_gateway import session_taints

TAINTED_EVENT: Final = "session.tainted"
MAX_CACHE: Final = 100_000


class SqlSessionTaint:
    """``tessera.pdp.ports.SessionTaint`` over the ``session_taints`` table."""

    def __init__(self, store: Any, event_head: Callable[[], int]) -> None:
        self._store = store
        self._head = event_head
        self._tainted: set[str] = set()
        self._clean: dict[str, int] = {}  # sid -> event head at which it was untainted
        self._lock = threading.Lock()

    def is_tainted(self, sid: str) -> bool:
        if sid in self._tainted:
            return True
        head = self._head()
        if self._clean.get(sid) == head:
            return False
        with self._store.read() as tx:
            row = tx.connection.execute(
                select(session_taints.c.sid).where(session_taints.c.sid == sid)
            ).first()
        with self._lock:
            if len(self._clean) >= MAX_CACHE:
                self._clean.clear()
            if row is not None:
                self._remember(sid)
            else:
                self._clean[sid] = head
        return row is not None

    def taint(self, sid: str, cause: str) -> None:
        """Mark ``sid`` tainted by ``cause`` (``server/tool``); a repeated mark is a no-op."""
        if sid in self._tainted:
            return
        try:
            with self._store.write() as tx:
                exists = tx.connection.execute(
                    select(session_taints.c.sid).where(session_taints.c.sid == sid)
                ).first()
                if exists is None:
                    tx.connection.execute(
                        session_taints.insert().values(
                            sid=sid, cause=cause[:256], tainted_at=self._store.clock.now()
                        )
                    )
                    tx.events.append(TAINTED_EVENT, sid, {"cause": cause[:256]}, "gateway")
        except IntegrityError:  # another node marked it at the same moment
            pass
        with self._lock:
            self._remember(sid)

    def _remember(self, sid: str) -> None:
        if len(self._tainted) >= MAX_CACHE:
            self._tainted.clear()
        self._tainted.add(sid)
        self._clean.pop(sid, None)

    def cause(self, sid: str) -> str | None:
        with self._store.read() as tx:
            row = tx.connection.execute(
                select(session_taints.c.cause).where(session_taints.c.sid == sid)
            ).first()
        return None if row is None else str(row.cause)


class SqlBudgetReservations:
    """Give back units a decision reserved when the call it allowed did not run (DESIGN 5:
    "released if the call does not run"). Never raises a counter above what was granted."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def release(self, sid: str, amounts: Mapping[str, int]) -> None:
        with self._store.write() as tx:
            for name, amount in sorted(amounts.items()):
                if amount > 0:
                    give_budget(tx.connection, sid, name, amount)

    def reserve(self, sid: str, amounts: Mapping[str, int]) -> bool:
        """Conditional decrement of every counter, all or nothing."""
        try:
            with self._store.write() as tx:
                for name, amount in sorted(amounts.items()):
                    if amount > 0 and not take_budget(tx.connection, sid, name, amount):
                        raise _Short  # roll back any counter already taken
        except _Short:
            return False
        return True


class _Short(Exception):
    pass
