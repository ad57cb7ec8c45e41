"""One event-log tailer per node (DESIGN 6): every in-memory cache subscribes to it.

The tailer reads the events after its last sequence number, in order, inside one read
transaction, and hands each batch to every subscriber (the identity cache, the session
liveness cache, the relationship index, the SSF delivery worker). Subscribers are called
with the read transaction so they can load related rows from the same snapshot.

Freshness rules (fail closed):

* ``last_read`` is the time a catch-up that reached the end of the log *started*; when it is
  older than the staleness bound, ``ensure_fresh`` raises ``StaleState`` (reason code
  ``stale_state``) and the decision point denies, introspection answers inactive.
* A caller presenting a consistency token (a sequence number) gets an answer at least that
  fresh: the tailer catches up to it, waiting at most ``wait_timeout`` for a catch-up in
  progress; a token beyond the log is ``invalid_consistency_token``.
* The node's own writes (``store.last_written_seq``) are visible to its next read.

Wake-ups: a background thread polls every ``poll_interval`` seconds (well under the bound,
so a node that misses notifications still catches up in time); on PostgreSQL a LISTEN on
channel ``tessera_events`` (``WakeSource``) wakes it at once. Notifications are only hints:
correctness never depends on them. Without ``start()`` (the CLI, unit tests) the tailer
runs *inline*: ``ensure_fresh`` catches up on the caller's thread when the last read is
older than ``poll_interval``, the node wrote, or a token asks for more.

Each subscriber has its own position: it gets every event once, in order. One that raises
keeps its position (the tailer's stays there too, so the events come again for it alone),
and if it keeps failing the node turns stale and fails closed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tessera.clock import Clock
from tessera.errors import InvalidInput, Unavailable
from tessera.signals.events import Event

log = logging.getLogger("tessera.signals")

EVENTS_PER_READ = 1000
MAX_ROUNDS = 200  # 200k events per catch-up; a node further behind stays stale

# (read transaction, events in sequence order)
EventHandler = Callable[[Any, Sequence[Event]], None]


class StaleState(Unavailable):
    """This node's view of the event log is older than the staleness bound (DESIGN 6)."""

    code = "stale_state"
    title = "State is stale"


class EventStore(Protocol):
    """What the tailer needs from the store: read transactions whose ``events`` read the log.
    ``last_written_seq`` (optional attribute) names the node's own last committed event."""

    def read(self) -> contextlib.AbstractContextManager[Any]: ...


class WakeSource(Protocol):
    """Something that calls ``wake`` when the log may have moved (PostgreSQL LISTEN)."""

    def run(self, wake: Callable[[], None], stopped: threading.Event) -> None: ...


@dataclass(frozen=True)
class TailerSettings:
    """``TESSERA_STALENESS_BOUND``, ``TESSERA_EVENT_POLL_INTERVAL``, ``TESSERA_EVENT_NOTIFY``,
    ``TESSERA_EVENT_TAILING`` (the last is only for the multi-node negative control)."""

    staleness: float = 1.0
    poll_interval: float = 0.2
    notify: bool = True
    enabled: bool = True
    wait_timeout: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.poll_interval < self.staleness:
            raise ValueError("the poll interval must be positive and under the staleness bound")


@dataclass
class _Subscriber:
    name: str
    handler: EventHandler
    seq: int  # the last event this subscriber applied (-1: not positioned yet)


class EventTailer:
    """Follows the event log for every cache of this node."""

    def __init__(
        self,
        store: EventStore,
        clock: Clock,
        settings: TailerSettings | None = None,
        *,
        wake_source: WakeSource | None = None,
        start_at: int | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self.settings = settings or TailerSettings()
        self._wake_source = wake_source if self.settings.notify else None
        self._subscribers: list[_Subscriber] = []
        self._lock = threading.RLock()  # one catch-up (and dispatch) at a time
        # -1: never read, the first read starts at the head; ``start_at`` replays from there
        self._seq = -1 if start_at is None else start_at
        self._last_read = float("-inf")
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self.wakeups = 0  # notifications received (observability, tests)

    # -- subscription ---------------------------------------------------------------------

    def subscribe(self, name: str, handler: EventHandler) -> None:
        """Call ``handler(tx, events)`` for every batch read from now on."""
        with self._lock:
            self._subscribers.append(_Subscriber(name, handler, self._seq))

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[int]:
        """Hold off dispatching while a subscriber loads a snapshot; yields the sequence the
        subscribers have seen (events after it will still be delivered)."""
        with self._lock:
            yield self._seq

    # -- state ------------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The last sequence number handed to every subscriber (-1 before the first read)."""
        return self._seq

    @property
    def last_read(self) -> float:
        """Clock time at which the last complete catch-up started."""
        return self._last_read

    @property
    def running(self) -> bool:
        return bool(self._threads)

    def age(self) -> float:
        return self._clock.timestamp() - self._last_read

    def is_fresh(self) -> bool:
        return self.age() < self.settings.staleness

    # -- reading ------------------------------------------------------------------------------

    def catch_up(self, timeout: float | None = None) -> int:
        """Read and dispatch everything after the current sequence; return the new one.
        Raises whatever the store raises (``StoreUnavailable``) and leaves the state as it
        was; raises ``StaleState`` if another catch-up holds the lock beyond ``timeout``."""
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            raise StaleState("the event log is being read by another request")
        try:
            started = self._clock.timestamp()
            rounds = 0
            while True:
                with self._store.read() as tx:
                    if self._seq < 0:
                        self._seq = int(tx.events.head())
                        for sub in self._subscribers:
                            sub.seq = max(sub.seq, self._seq)
                        events: list[Event] = []
                    else:
                        events = tx.events.read_after(self._seq, EVENTS_PER_READ)
                    if events:
                        self._dispatch(tx, events)
                if len(events) < EVENTS_PER_READ:
                    break
                rounds += 1
                if rounds >= MAX_ROUNDS:
                    raise StaleState("this node is too far behind the event log")
            self._last_read = max(self._last_read, started)
            return self._seq
        finally:
            self._lock.release()

    def _dispatch(self, tx: Any, events: list[Event]) -> None:
        # INVARIANT: each subscriber gets each event once, in order; one that raises keeps
        # its position (and holds the tailer's) while the others move on.
        failed: Exception | None = None
        for sub in self._subscribers:
            batch = [e for e in events if e.seq > sub.seq]
            if not batch:
                continue
            try:
                sub.handler(tx, batch)
            except Exception as exc:
                log.warning("event subscriber %s failed: %s", sub.name, type(exc).__name__)
                failed = failed or exc
                continue
            sub.seq = batch[-1].seq
        self._seq = min([s.seq for s in self._subscribers] + [events[-1].seq])
        if failed is not None:
            raise failed

    def ensure_fresh(self, at_least: int = 0) -> int:
        """Make sure this node's state may be served (DESIGN 6): not older than the bound,
        including the node's own writes, and at least ``at_least`` (a consistency token's
        sequence). Returns the sequence the caches reflect."""
        if not self.settings.enabled:
            # Negative control only: nothing is read, so the node turns stale and denies.
            if self._seq < 0 or not self.is_fresh():
                raise StaleState("event log tailing is disabled on this node")
            return self._seq
        want = max(at_least, int(getattr(self._store, "last_written_seq", 0) or 0))
        seq = self._seq
        if seq >= 0 and want <= seq:
            # The common case (every decision asks several times), decided on one clock
            # reading: caught up, within the bound and, inline, within the poll interval.
            age = self._clock.timestamp() - self._last_read
            if age < self.settings.staleness and (
                bool(self._threads) or age < self.settings.poll_interval
            ):
                return seq
        read_ok = True
        if self._seq < 0 or want > self._seq or not self.is_fresh():
            # behind, or the background thread is late: read on this thread
            read_ok = self._try_catch_up()
        elif not self.running and self.age() >= self.settings.poll_interval:
            read_ok = self._try_catch_up()  # inline mode polls on the caller's thread
        if not self.is_fresh():
            raise StaleState("this node could not read the event log within the bound")
        if at_least > self._seq:
            if not read_ok:
                raise StaleState("the event log could not be read up to the consistency token")
            raise InvalidInput(
                "the consistency token is ahead of this store's event log",
                code="invalid_consistency_token",
            )
        return self._seq

    def _try_catch_up(self) -> bool:
        try:
            self.catch_up(timeout=self.settings.wait_timeout)
        except StaleState:
            raise
        except Exception as exc:  # the store is down: the bound decides (fail closed)
            log.warning("event log read failed: %s", type(exc).__name__)
            if self._seq < 0:
                raise StaleState("the event log cannot be read", detail=type(exc).__name__) from exc
            return False
        return True

    # -- background ---------------------------------------------------------------------------

    def wake(self) -> None:
        """A hint that the log moved (a notification); the thread reads at once."""
        self.wakeups += 1
        self._wake.set()

    def start(self) -> None:
        """Start the poll thread and, if configured, the notification listener."""
        if self._threads or not self.settings.enabled:
            return
        self._stopped.clear()
        poll = threading.Thread(target=self._poll_loop, name="tessera-event-tailer", daemon=True)
        self._threads.append(poll)
        if self._wake_source is not None:
            source = self._wake_source
            listen = threading.Thread(
                target=source.run,
                args=(self.wake, self._stopped),
                name="tessera-event-listener",
                daemon=True,
            )
            self._threads.append(listen)
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def _poll_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                self.catch_up()
            except Exception as exc:  # keep tailing; staleness makes readers fail closed
                log.warning("event log catch-up failed: %s", type(exc).__name__)
            self._wake.wait(self.settings.poll_interval)
            self._wake.clear()
