"""Durable session taint and budget release on SQLite and PostgreSQL (migration 0011)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from tessera.clock import ManualClock
from tessera.signals.tailer import EventTailer
from tessera.store import tables as t
from tessera.store.sql_gateway import TAINTED_EVENT, SqlBudgetReservations, SqlSessionTaint
from tessera.store.sql_store import SqlStore
from tessera.tokens.sessions import SessionRecord


def _session(store: SqlStore, sid: str, budgets: dict[str, int]) -> None:
    now = store.clock.now()
    rec = SessionRecord(
        sid=sid,
        jti="jti_" + sid,
        token_hash="h_" + sid,
        agent_id="agt_x",
        user_id=None,
        operator_id="op_x",
        model_id=None,
        model_digest=None,
        parent_sid=None,
        root_sid=sid,
        depth=0,
        audience=("https://x",),
        grant={},
        act=None,
        cnf_jkt=None,
        issued_at=now,
        expires_at=now + timedelta(minutes=5),
        status="active",
    )
    with store.write() as tx:
        tx.sessions.add(rec, budgets)


def test_taint_is_shared_between_nodes_and_written_once(store: SqlStore) -> None:
    # Each node follows the log with its own tailer (the caches key on its position).
    tail_a, tail_b = EventTailer(store, store.clock), EventTailer(store, store.clock)
    node_a = SqlSessionTaint(store, tail_a.ensure_fresh)
    node_b = SqlSessionTaint(store, tail_b.ensure_fresh)
    assert not node_b.is_tainted("ses_1")  # node B caches "clean" at this head
    node_a.taint("ses_1", "tools/fetch_url")
    node_a.taint("ses_1", "tools/other")  # a second mark changes nothing
    node_b.taint("ses_1", "tools/again")  # nor does one from another node
    assert node_b.is_tainted("ses_1")  # the event moved the head: B reads the mark
    assert node_a.cause("ses_1") == "tools/fetch_url"
    assert not node_a.is_tainted("ses_2")
    with store.read() as tx:
        types = [e.type for e in tx.events.read_after(0) if e.subject == "ses_1"]
    assert types == [TAINTED_EVENT]


def test_release_gives_back_only_what_was_taken(store: SqlStore, clock: ManualClock) -> None:
    _session(store, "ses_b", {"tool_calls": 2, "external_calls": 1})
    budgets = SqlBudgetReservations(store)
    assert budgets.reserve("ses_b", {"tool_calls": 1, "external_calls": 1})
    assert not budgets.reserve("ses_b", {"tool_calls": 1, "external_calls": 1})  # all or none
    with store.read() as tx:
        assert tx.sessions.remaining_budgets("ses_b") == {"tool_calls": 1, "external_calls": 0}
    budgets.release("ses_b", {"tool_calls": 1, "external_calls": 1})
    budgets.release("ses_b", {"tool_calls": 5})  # never above what was granted
    with store.read() as tx:
        rows = tx.connection.execute(
            select(t.session_budgets.c.name, t.session_budgets.c.remaining).where(
                t.session_budgets.c.sid == "ses_b"
            )
        ).all()
    assert dict((r.name, r.remaining) for r in rows) == {"tool_calls": 2, "external_calls": 1}
