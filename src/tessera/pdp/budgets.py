"""Session budgets spent at decision time (DESIGN 5 "Budgets"; docs/pdp.md "Budgets at
decision time"), with group commit: DESIGN 5 says writes such as budget reservations are
batched, and one write transaction per allowed decision was the serialising cost of the
HTTP evaluation path (each waited for SQLite's single writer, behind the audit ledger's
fsyncs).

Callers that arrive while a group is being written queue up; the next group is written by
one of them (the first queued), in one transaction, one conditional update per request in
arrival order. Each request keeps its own answer: a short counter is a failed conditional
update that changes nothing, so the others in the group are unaffected. A request that
names several counters (all or nothing) is written alone, in its own transaction, as
before. If a group's transaction fails, every request in it fails (the decision is then a
deny with the error as reason: fail closed) and nothing in it was spent. On the SQL store
a group is written through the raw driver (``SqlStore.take_budgets``), the same conditional
update per request.

Coroutines spend without a thread of their own (``consume_async``, decisions.md 91): they
queue beside the threads, and when a group is theirs to write, the budget writer thread
writes it; the asks a loop makes in one turn join one group, and the answers of a group's
coroutines reach their event loop in one call. A group
is led by whoever is first in the queue when the previous group is done: a thread writes
it itself, a coroutine's group is written by the writer thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

log = logging.getLogger("tessera.pdp")
MAX_GROUP: Final = 256
WRITER_IDLE: Final = 5.0  # seconds without a group before the writer thread exits


class _BudgetShort(Exception):
    pass


class _Ask:
    """One conditional decrement and how its caller learns the answer: a thread waits on
    ``done``, a coroutine awaits ``future`` (then ``done`` is None)."""

    __slots__ = ("amount", "done", "error", "future", "lead", "name", "ok", "sid")

    def __init__(
        self, sid: str, name: str, amount: int, future: asyncio.Future[bool] | None = None
    ) -> None:
        self.sid, self.name, self.amount = sid, name, amount
        self.ok = False
        self.error: BaseException | None = None
        self.lead = False  # handed the next group to write
        self.future = future
        self.done = threading.Event() if future is None else None


def _settle(asks: list[_Ask]) -> None:
    """On the askers' event loop: resolve their futures (one call per group and loop)."""
    for ask in asks:
        fut = ask.future
        if fut is None or fut.done():
            continue  # cancelled: its unit was spent (or not) all the same, as for a thread
        if ask.error is not None:
            fut.set_exception(ask.error)
        else:
            fut.set_result(ask.ok)


class GroupedSessionBudgets:
    """``BudgetLedger`` over the stored session counters (``tx.sessions.carve``)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        # ``SqlStore.take_budgets``: the group's conditional updates in one transaction
        # through the driver; a store without it is written through ``tx.sessions.carve``.
        self._take: Callable[[list[tuple[str, str, int]]], list[bool]] | None = getattr(
            store, "take_budgets", None
        )
        self._lock = threading.Lock()
        self._queue: list[_Ask] = []
        self._busy = False  # a group is being written (or handed to its next writer)
        self._wake = threading.Event()  # set: the writer thread leads the next group
        self._writer: threading.Thread | None = None
        self._flushing: set[asyncio.AbstractEventLoop] = set()  # a _flush is scheduled

    def consume(self, sid: str, amounts: Mapping[str, int]) -> bool:
        wanted = [(n, a) for n, a in sorted(amounts.items()) if a > 0]
        if not wanted:
            return True
        if len(wanted) > 1:
            return self._alone(sid, dict(wanted))
        ask = _Ask(sid, *wanted[0])
        with self._lock:
            self._queue.append(ask)
            lead = not self._busy
            self._busy = True
        done = ask.done
        if done is None:  # pragma: no cover - a thread's ask always has its event
            raise RuntimeError("a thread's budget ask without an event")
        while True:
            if lead:
                self._write_next_group()
            done.wait()
            if not ask.lead:
                break
            # INVARIANT: leadership is handed to a request still queued, so it is written
            # by the group its new leader takes (which includes it).
            ask.lead, lead = False, True
            done.clear()
        if ask.error is not None:
            raise ask.error
        return ask.ok

    async def consume_async(self, sid: str, amounts: Mapping[str, int]) -> bool:
        """``consume`` for coroutines: the same queue, groups and answers, awaited on the
        event loop instead of in a blocked thread."""
        wanted = [(n, a) for n, a in sorted(amounts.items()) if a > 0]
        if not wanted:
            return True
        if len(wanted) > 1:  # all or nothing, alone (rare: the PDP spends one counter)
            return await asyncio.to_thread(self._alone, sid, dict(wanted))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        ask = _Ask(sid, *wanted[0], future=future)
        with self._lock:
            self._queue.append(ask)
            flush = not self._busy and loop not in self._flushing
            if flush:
                self._flushing.add(loop)
        if flush:
            # Every coroutine this loop runs before its next turn joins the same group:
            # one hand-over and one transaction for all of them, not one each.
            loop.call_soon(self._flush, loop)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """At the end of the loop's turn: the writer thread writes what is queued, unless
        a group is already being written (its writer takes the queue next)."""
        with self._lock:
            self._flushing.discard(loop)
            if self._busy or not self._queue:
                return
            self._busy = True
            self._lead_writer()

    def _lead_writer(self) -> None:
        """Hand the next group to the writer thread (started when there is none). Called
        holding ``_lock``."""
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._writer_loop, name="tessera-budget-writer", daemon=True
            )
            self._writer.start()
        self._wake.set()

    def _writer_loop(self) -> None:
        # INVARIANT: ``_wake`` is set only by whoever hands the writer the lead, and the
        # writer clears it before writing, so each hand-over writes exactly one group.
        while True:
            if not self._wake.wait(timeout=WRITER_IDLE):
                with self._lock:
                    if not self._wake.is_set():
                        self._writer = None  # idle: the next coroutine starts a new one
                        return
                continue
            self._wake.clear()
            self._write_next_group()

    def _write_next_group(self) -> None:
        with self._lock:
            group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
        try:
            if self._take is not None:  # the raw driver: ~20 µs per group instead of ~75 µs
                oks = self._take([(ask.sid, ask.name, ask.amount) for ask in group])
                for ask, ok in zip(group, oks, strict=True):
                    ask.ok = ok
            else:
                with self._store.write() as tx:
                    for ask in group:
                        ask.ok = tx.sessions.carve(ask.sid, {ask.name: ask.amount})
        except BaseException as exc:  # fail closed: nobody in the group spent anything
            for ask in group:
                ask.ok, ask.error = False, exc
        finally:
            with self._lock:
                following = self._queue[0] if self._queue else None
                if following is None:
                    self._busy = False
                elif following.done is None:  # a coroutine: the writer thread writes it
                    self._lead_writer()
                    following = None
                else:
                    following.lead = True
            loops: dict[asyncio.AbstractEventLoop, list[_Ask]] = {}
            for ask in group:
                if ask.done is not None:
                    ask.done.set()
                elif ask.future is not None:
                    loops.setdefault(ask.future.get_loop(), []).append(ask)
            for loop, asks in loops.items():
                try:
                    loop.call_soon_threadsafe(_settle, asks)
                except RuntimeError:  # the loop was closed: nobody is waiting any more
                    log.debug("budget answers for a closed event loop")
            if following is not None and following.done is not None:
                following.done.set()

    def _alone(self, sid: str, amounts: Mapping[str, int]) -> bool:
        try:
            with self._store.write() as tx:
                if not tx.sessions.carve(sid, amounts):
                    raise _BudgetShort  # roll back any counter already decremented
        except _BudgetShort:
            return False
        return True
