"""The node's event tailer on real stores: order, subscribers, freshness (fail closed),
consistency tokens, own writes, and the PostgreSQL LISTEN wake-up."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine

from tessera.app import Tessera
from tessera.clock import ManualClock, SystemClock
from tessera.errors import InvalidInput, StoreUnavailable
from tessera.signals.events import Event
from tessera.signals.tailer import EventTailer, StaleState, TailerSettings
from tessera.store.sql_store import SqlStore


class FlakyStore:
    """A real store whose reads fail while ``down`` is set (a database outage)."""

    def __init__(self, inner: SqlStore) -> None:
        self.inner = inner
        self.down = False

    @contextmanager
    def read(self) -> Iterator[Any]:
        if self.down:
            raise StoreUnavailable(detail="connection refused")
        with self.inner.read() as tx:
            yield tx


def _append(store: SqlStore, n: int = 1, kind: str = "user.created") -> int:
    with store.write() as tx:
        for i in range(n):
            seq = tx.events.append(kind, f"usr_{i}", {"i": i}, "test")
    return seq


class Recorder:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, _tx: Any, events: Sequence[Event]) -> None:
        self.seen.extend(e.seq for e in events)


def test_subscribers_get_every_event_in_order_from_the_first_read(
    store: SqlStore, clock: ManualClock
) -> None:
    other = SqlStore(store.engine, clock)  # another node's writes
    before = _append(other)
    tailer = EventTailer(store, clock)
    rec = Recorder()
    tailer.subscribe("rec", rec)
    assert tailer.ensure_fresh() == before  # the first read starts at the head
    assert rec.seen == []
    last = _append(other, 1205)  # more than one read's worth
    assert tailer.catch_up() == last
    assert rec.seen == list(range(before + 1, last + 1))


def test_own_writes_are_seen_by_the_next_read(store: SqlStore, clock: ManualClock) -> None:
    tailer = EventTailer(store, clock)
    tailer.ensure_fresh()
    seq = _append(store)
    # within the poll interval, but this node wrote: it catches up first
    assert tailer.ensure_fresh() == seq


def test_a_consistency_token_is_reached_or_refused(store: SqlStore, clock: ManualClock) -> None:
    other = SqlStore(store.engine, clock)
    tailer = EventTailer(store, clock)
    tailer.ensure_fresh()
    seq = _append(other)
    assert tailer.seq < seq
    assert tailer.ensure_fresh(at_least=seq) == seq
    with pytest.raises(InvalidInput) as err:
        tailer.ensure_fresh(at_least=seq + 100)
    assert err.value.code == "invalid_consistency_token"


def test_a_node_that_cannot_read_the_log_turns_stale_and_recovers(
    sqlite_tessera: Tessera, clock: ManualClock
) -> None:
    flaky = FlakyStore(sqlite_tessera.store)
    tailer = EventTailer(flaky, clock, TailerSettings(staleness=1.0, poll_interval=0.2))
    tailer.ensure_fresh()
    flaky.down = True
    clock.advance(0.5)
    tailer.ensure_fresh()  # within the bound: served
    seq = _append(sqlite_tessera.store)
    with pytest.raises(StaleState):  # a token it cannot reach: refused, never guessed
        tailer.ensure_fresh(at_least=seq)
    clock.advance(0.6)
    with pytest.raises(StaleState) as err:
        tailer.ensure_fresh()
    assert (err.value.status, err.value.code) == (503, "stale_state")
    flaky.down = False
    assert tailer.ensure_fresh() == seq


def test_a_node_that_never_read_fails_closed(sqlite_tessera: Tessera, clock: ManualClock) -> None:
    flaky = FlakyStore(sqlite_tessera.store)
    flaky.down = True
    with pytest.raises(StaleState):
        EventTailer(flaky, clock).ensure_fresh()


def test_a_failing_subscriber_holds_the_position_and_the_node_turns_stale(
    store: SqlStore, clock: ManualClock
) -> None:
    tailer = EventTailer(store, clock)
    rec = Recorder()
    broken = {"on": True}

    def fragile(_tx: Any, events: Sequence[Event]) -> None:
        if broken["on"]:
            raise RuntimeError("cannot apply")

    tailer.subscribe("rec", rec)
    tailer.subscribe("fragile", fragile)
    start = tailer.ensure_fresh()
    other = SqlStore(store.engine, clock)
    seq = _append(other)
    clock.advance(1.5)
    with pytest.raises(StaleState):
        tailer.ensure_fresh()
    assert tailer.seq == start  # nothing skipped
    broken["on"] = False
    assert tailer.ensure_fresh() == seq
    assert rec.seen[-1] == seq


def test_tailing_disabled_is_stale_at_once(store: SqlStore, clock: ManualClock) -> None:
    tailer = EventTailer(store, clock, TailerSettings(enabled=False))
    with pytest.raises(StaleState):
        tailer.ensure_fresh()


def test_settings_keep_the_poll_under_the_bound() -> None:
    with pytest.raises(ValueError, match="poll interval"):
        TailerSettings(staleness=1.0, poll_interval=1.0)


def _wait_for(cond: Any, deadline: float = 15.0) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_the_background_thread_follows_another_node_by_polling(engine: Engine) -> None:
    clock = SystemClock()
    store = SqlStore(engine, clock)
    tailer = EventTailer(
        store, clock, TailerSettings(staleness=1.0, poll_interval=0.05, notify=False)
    )
    rec = Recorder()
    tailer.subscribe("rec", rec)
    tailer.start()
    try:
        assert _wait_for(lambda: tailer.seq >= 0)
        seq = _append(SqlStore(engine, clock))
        assert _wait_for(lambda: seq in rec.seen)
        assert tailer.is_fresh()
    finally:
        tailer.stop()
    assert not tailer.running


@pytest.mark.postgres
def test_postgres_notifications_wake_the_tailer_before_its_poll(
    pg_schema_url: tuple[str, str],
) -> None:
    from tessera.store.engine import make_engine, migrate
    from tessera.store.pg_listen import PgNotifyWake, libpq_conninfo

    url, schema = pg_schema_url
    engine = make_engine(url, schema=schema)
    migrate(engine)
    clock = SystemClock()
    store = SqlStore(engine, clock)
    wake = PgNotifyWake(libpq_conninfo(engine))
    # A poll interval far beyond the test's deadline: only a notification can wake it.
    tailer = EventTailer(
        store, clock, TailerSettings(staleness=600, poll_interval=300), wake_source=wake
    )
    rec = Recorder()
    tailer.subscribe("rec", rec)
    got = threading.Event()
    tailer.subscribe("flag", lambda _tx, _ev: got.set())
    tailer.start()
    try:
        assert wake.connected.wait(15)
        assert _wait_for(lambda: tailer.seq >= 0)
        seq = _append(SqlStore(engine, clock))
        assert got.wait(15), "no notification arrived"
        assert seq in rec.seen
        assert tailer.wakeups >= 1
    finally:
        tailer.stop()
        engine.dispose()
