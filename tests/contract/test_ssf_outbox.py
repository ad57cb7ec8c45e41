"""The SET outbox on both backends: nodes racing to map the same events create exactly one
delivery per (stream, event, SET), nothing before a stream's creation is delivered, and
events written while no node ran are mapped later."""

from __future__ import annotations

import threading

from sqlalchemy import Engine, func, select

from tessera.clock import ManualClock
from tessera.crypto.keys import generate_signing_key
from tessera.signals.caep import SESSION_REVOKED
from tessera.signals.model import POLL, SsfSettings
from tessera.signals.streams import SsfTransmitter
from tessera.store import tables_signals as ts
from tessera.store.sql_signals import SqlSignalsStore
from tessera.store.sql_store import SqlStore


def _node(engine: Engine, clock: ManualClock) -> tuple[SqlStore, SsfTransmitter]:
    store = SqlStore(engine, clock)  # each node: its own store object
    key = generate_signing_key()
    t = SsfTransmitter(SqlSignalsStore(store), clock, lambda: key, SsfSettings("https://t.example"))
    return store, t


def _suspensions(store: SqlStore, n: int, start: int = 0) -> None:
    with store.write() as tx:
        for i in range(start, start + n):
            tx.events.append("agent.suspended", f"agt_{i}", {"reason": None}, "test")


def _seqs(engine: Engine, stream_id: str) -> list[int]:
    d = ts.ssf_deliveries
    with engine.connect() as conn:
        rows = conn.execute(select(d.c.event_seq).where(d.c.stream_id == stream_id)).all()
    return sorted(int(r[0]) for r in rows)


def test_racing_nodes_map_every_event_exactly_once(engine: Engine, clock: ManualClock) -> None:
    (s1, t1), (s2, t2) = _node(engine, clock), _node(engine, clock)
    _suspensions(s1, 5)  # before the stream: never delivered
    body = {"delivery": {"method": POLL}, "events_requested": [SESSION_REVOKED]}
    stream = t1.create("svc_receiver", body)["stream_id"]
    with s1.read() as tx:
        first = tx.events.head() + 1
    _suspensions(s2, 1200)
    errors: list[BaseException] = []

    def pump(t: SsfTransmitter) -> None:
        try:
            for _ in range(5):
                t.pump()
        except BaseException as exc:  # collected: the test fails with it below
            errors.append(exc)

    threads = [threading.Thread(target=pump, args=(t,)) for t in (t1, t2, t1, t2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == []
    t2.pump()
    assert _seqs(engine, stream) == list(range(first, first + 1200))


def test_events_written_while_nobody_mapped_are_mapped_later(
    engine: Engine, clock: ManualClock
) -> None:
    store, t = _node(engine, clock)
    body = {"delivery": {"method": POLL}, "events_requested": [SESSION_REVOKED]}
    stream = t.create("svc_receiver", body)["stream_id"]
    _suspensions(store, 3)  # no pump ran ("every node was down")
    _, restarted = _node(engine, clock)
    assert restarted.pump() == 3
    assert restarted.pump() == 0
    d = ts.ssf_deliveries
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(d)).scalar_one() == 3
    assert len(_seqs(engine, stream)) == 3
