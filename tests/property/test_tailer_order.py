"""The event tailer hands every subscriber every event exactly once, in sequence order,
whatever the write batches, read boundaries, failing reads and failing subscribers
(DESIGN 6): a subscriber that fails gets its events again, nobody else does."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.clock import ManualClock
from tessera.errors import StoreUnavailable
from tessera.signals import tailer as tailer_module
from tessera.signals.events import Event
from tessera.signals.tailer import EventTailer, TailerSettings
from tessera.store.engine import make_engine, migrate
from tessera.store.sql_store import SqlStore

# a step: write n events (n > 0), catch up (0), or a failed read (-1)
steps = st.lists(st.integers(min_value=-1, max_value=7), min_size=1, max_size=25)


class Flaky:
    def __init__(self, inner: SqlStore) -> None:
        self.inner = inner
        self.down = False

    @contextmanager
    def read(self) -> Iterator[Any]:
        if self.down:
            raise StoreUnavailable(detail="down")
        with self.inner.read() as tx:
            yield tx


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=steps, page=st.integers(min_value=1, max_value=5), flaky_handler=st.booleans())
def test_every_event_once_in_order(
    tmp_path_factory: Any, plan: list[int], page: int, flaky_handler: bool
) -> None:
    path: Path = tmp_path_factory.mktemp("tail") / "t.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    clock = ManualClock()
    writer = SqlStore(engine, clock)  # another node: this tailer only learns by reading
    flaky = Flaky(SqlStore(engine, clock))
    tailer = EventTailer(flaky, clock, TailerSettings())
    seen: list[int] = []
    steady: list[int] = []
    calls = {"n": 0}

    def record(_tx: Any, events: Sequence[Event]) -> None:
        calls["n"] += 1
        if flaky_handler and calls["n"] % 3 == 0:
            raise RuntimeError("subscriber failed")  # its events come again, to it alone
        seen.extend(e.seq for e in events)

    tailer.subscribe("steady", lambda _tx, events: steady.extend(e.seq for e in events))
    tailer.subscribe("rec", record)
    old_page = tailer_module.EVENTS_PER_READ
    tailer_module.EVENTS_PER_READ = page  # small pages: many read boundaries
    try:
        tailer.catch_up()
        start = tailer.seq
        written: list[int] = []
        for step in plan:
            if step > 0:
                with writer.write() as tx:
                    written += [tx.events.append("user.created", "u", {}, "t") for _ in range(step)]
            elif step == 0:
                with suppress(RuntimeError):
                    tailer.catch_up()
            else:
                flaky.down = True
                with suppress(StoreUnavailable):
                    tailer.catch_up()
                flaky.down = False
        for _ in range(3 * len(written) + 3):  # drain, retrying the failed batches
            try:
                tailer.catch_up()
                break
            except RuntimeError:
                continue
    finally:
        tailer_module.EVENTS_PER_READ = old_page
        engine.dispose()
    assert start == 0
    assert seen == written  # nothing lost, nothing twice, in order
    assert steady == written  # another subscriber's failures never replay events to it
    assert tailer.seq == (written[-1] if written else start)
