"""The audit ledger on SQLite and PostgreSQL: outbox with every state change, chaining,
group commit, append-only triggers, fail-closed writes, and tamper detection end to end."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from tessera.app import Tessera
from tessera.audit import ActorLayers, AuditEntry, AuditQuery, AuditService, AuditSettings
from tessera.audit import service as audit_service
from tessera.audit.chain import prepare_entry
from tessera.audit.verify import RangeResult
from tessera.errors import StoreUnavailable
from tessera.store import sql_audit
from tessera.store.sql_audit import SqlAuditLedger


def _entry(i: int, agent: str = "agt_a", outcome: str = "allow") -> AuditEntry:
    return AuditEntry(
        event_type="pdp.decision",
        actor=ActorLayers("agent:" + agent, operator="op_1", agent=agent, session="ses_1"),
        action="docs/read",
        resource=f"doc:{i}",
        outcome=outcome,
        reasons=("within ceiling",),
        policy_version="v1",
        jti=f"jti-{i}",
    )


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608


def test_every_state_change_is_recorded_with_its_actor(tessera: Tessera) -> None:
    tessera.identity.create_operator("acme", None, actor="admin:adm_1")
    tessera.identity.suspend_operator("acme", "drill", actor="admin:adm_1")
    assert tessera.audit.pending() >= 2  # written in the same transactions, not chained yet
    tessera.audit.chain_pending()
    assert tessera.audit.pending() == 0
    records = tessera.audit.query(AuditQuery(event_type="operator.suspended"))
    assert len(records) == 1
    rec = records[0]
    assert rec["actor"]["principal"] == "admin:adm_1"
    assert rec["details"]["reason"] == "drill"
    assert rec["outcome"] == "success"
    types = [r["event_type"] for r in tessera.audit.query(AuditQuery())]
    assert types[:2] == ["key.created", "admin_token.created"]  # from `tessera init`
    assert tessera.audit.verify().ok


def test_group_commit_gives_every_caller_a_distinct_durable_seq(tessera: Tessera) -> None:
    tessera.identity.create_operator("acme", None, actor="cli")  # an outbox row too
    seqs: list[int] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        for i in range(25):
            seq = tessera.audit.record(_entry(w * 100 + i))
            with lock:
                seqs.append(seq)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    tessera.audit.chain_pending()
    head = tessera.audit.head()
    assert len(set(seqs)) == 200
    assert max(seqs) <= head.size
    report = tessera.audit.verify()
    assert report.ok, report.problems
    assert report.records == head.size


def test_coroutines_share_the_group_commit_too(tessera: Tessera) -> None:
    async def main() -> list[int]:
        return await asyncio.gather(*(tessera.audit.record_async(_entry(i)) for i in range(40)))

    seqs = asyncio.run(main())
    assert len(set(seqs)) == 40
    records = tessera.audit.query(AuditQuery(event_type="pdp.decision", limit=100))
    assert sorted(r["seq"] for r in records) == sorted(seqs)
    assert tessera.audit.verify().ok


def test_groups_and_outbox_batches_larger_than_one_insert_statement(
    tessera: Tessera, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a group goes in as multi-row INSERTs of ``SQLITE_ROWS_PER_INSERT`` rows;
    a group and an outbox batch of several statements and a remainder keep every record,
    in order, byte for byte what verify recomputes."""
    monkeypatch.setattr(sql_audit, "SQLITE_ROWS_PER_INSERT", 7)
    now = tessera.clock.now()
    ledger = SqlAuditLedger(engine)
    before = tessera.audit.head().size
    batch = ledger.chain([prepare_entry(_entry(i), now) for i in range(23)], outbox_limit=0)
    assert batch.seqs == list(range(before + 1, before + 24))
    for i in range(17):  # state changes: outbox rows, chained 10 at a time below
        tessera.identity.create_operator(f"op-{i}", None, actor="cli")
    moved = ledger.chain([], outbox_limit=10)
    assert moved.chained_outbox == 10
    assert moved.more_pending
    ledger.close()
    tessera.audit.chain_pending()
    records = tessera.audit.query(AuditQuery(event_type="pdp.decision", limit=100))
    assert sorted(int(r["resource"].split(":")[1]) for r in records) == list(range(23))
    assert len(tessera.audit.query(AuditQuery(event_type="operator.created", limit=100))) == 17
    report = tessera.audit.verify()
    assert report.ok, report.problems
    assert report.records == tessera.audit.head().size


def test_query_filters_and_pages(tessera: Tessera) -> None:
    for i in range(5):
        tessera.audit.record(_entry(i, agent="agt_a", outcome="allow"))
    for i in range(3):
        tessera.audit.record(_entry(i, agent="agt_b", outcome="deny"))
    assert len(tessera.audit.query(AuditQuery(agent="agt_b"))) == 3
    assert len(tessera.audit.query(AuditQuery(outcome="allow", agent="agt_a"))) == 5
    assert tessera.audit.query(AuditQuery(session="ses_1", user="nobody")) == []
    page1 = tessera.audit.query(AuditQuery(event_type="pdp.decision", limit=4))
    page2 = tessera.audit.query(AuditQuery(event_type="pdp.decision", after=page1[-1]["seq"]))
    assert [r["resource"] for r in page1 + page2][:5] == [f"doc:{i}" for i in range(5)]
    assert len(page1 + page2) == 8
    newest = tessera.audit.query(AuditQuery(limit=1, newest_first=True))[0]
    assert newest["seq"] == tessera.audit.head().size
    assert newest["jti"] == "jti-2"
    assert newest["policy_version"] == "v1"
    t = tessera.clock.now()
    assert len(tessera.audit.query(AuditQuery(since=t, event_type="pdp.decision"))) == 8
    assert tessera.audit.query(AuditQuery(until=t, event_type="pdp.decision")) == []


def _paged(tessera: Tessera, q: AuditQuery, *, newest_first: bool) -> list[int]:
    """Every seq ``q`` matches, page by page (``after`` forwards, ``before`` backwards)."""
    seqs: list[int] = []
    while True:
        last = seqs[-1] if seqs else None
        if newest_first:
            page = tessera.audit.query(replace(q, newest_first=True, before=last))
        else:
            page = tessera.audit.query(replace(q, after=last or 0))
        if not page:
            return seqs
        seqs += [r["seq"] for r in page]


def _by_filter(tessera: Tessera) -> dict[str, list[list[int]]]:
    """Every agent/session/user query's seqs, whole and in pages both ways."""
    out: dict[str, list[list[int]]] = {}
    for name, q in (
        ("agent a", AuditQuery(agent="agt_a", limit=500)),
        ("agent b", AuditQuery(agent="agt_b", limit=500)),
        ("session 2", AuditQuery(session="ses_2", limit=500)),
        ("user u", AuditQuery(user="usr_u", limit=500)),
        ("agent a + session 2", AuditQuery(agent="agt_a", session="ses_2", limit=500)),
        ("agent a, allow", AuditQuery(agent="agt_a", outcome="allow", limit=500)),
        ("nobody", AuditQuery(agent="agt_none", limit=500)),
    ):
        whole = [r["seq"] for r in tessera.audit.query(q)]
        out[name] = [
            whole,
            _paged(tessera, replace(q, limit=7), newest_first=False),
            _paged(tessera, replace(q, limit=5), newest_first=True)[::-1],
        ]
    return out


def test_agent_session_and_user_queries_are_exact_however_far_the_lookup_lags(
    tessera: Tessera,
) -> None:
    """The agent/session/user lookup is filled in batches behind the head; a query reads
    the lookup below its end and the ledger above it, so its answer never depends on the
    lag: nothing indexed, part of it, all of it, and after an archive's purge."""
    expected: dict[str, list[int]] = {
        k: []
        for k in (
            "agent a",
            "agent b",
            "session 2",
            "user u",
            "agent a + session 2",
            "agent a, allow",
            "nobody",
        )
    }
    for i in range(60):
        agent = "agt_a" if i % 3 else "agt_b"
        session = f"ses_{i % 4}"
        outcome = "allow" if i % 5 else "deny"
        entry = AuditEntry(
            event_type="pdp.decision",
            actor=ActorLayers(
                "agent:" + agent,
                agent=agent,
                session=session,
                user="usr_u" if i % 2 else None,
            ),
            action="docs/read",
            resource=f"doc:{i}",
            outcome=outcome,
        )
        seq = tessera.audit.record(entry)
        for name, hit in (
            ("agent a", agent == "agt_a"),
            ("agent b", agent == "agt_b"),
            ("session 2", session == "ses_2"),
            ("user u", bool(i % 2)),
            ("agent a + session 2", agent == "agt_a" and session == "ses_2"),
            ("agent a, allow", agent == "agt_a" and outcome == "allow"),
        ):
            if hit:
                expected[name].append(seq)
    ledger = tessera.audit._store
    assert isinstance(ledger, SqlAuditLedger)
    want = {k: [v, v, v] for k, v in expected.items()}
    assert _by_filter(tessera) == want  # nothing of these 60 indexed yet
    covered = ledger.index_pending(limit=25)
    assert covered == 25
    assert _by_filter(tessera) == want  # partly indexed
    assert tessera.audit.index_pending() > 0
    assert ledger.index_pending() == 0  # complete
    assert _by_filter(tessera) == want
    tessera.audit.record(
        AuditEntry(
            event_type="pdp.decision",
            actor=ActorLayers("agent:agt_b", agent="agt_b"),
            action="docs/read",
            resource="doc:late",
            outcome="allow",
        )
    )
    late = tessera.audit.query(AuditQuery(agent="agt_b", newest_first=True, limit=1))
    assert late[0]["resource"] == "doc:late"  # above the lookup's end: read from the ledger


def test_migration_0014_fills_the_lookup_from_an_existing_ledger(
    tessera: Tessera, engine: Engine
) -> None:
    """An existing deployment upgrading to 0014: its records are in the lookup at once."""
    from alembic import command

    from tessera.store.engine import _alembic_config

    for i in range(12):
        tessera.audit.record(_entry(i, agent="agt_a" if i % 2 else "agt_b"))
    tessera.audit.close()
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn = conn.execution_options(tessera_write=True)
        command.downgrade(_alembic_config(conn), "0013")
        command.upgrade(_alembic_config(conn), "head")
        conn.commit()
    with engine.connect() as conn:
        upto = conn.execute(text("SELECT upto FROM audit_lookup_state")).scalar_one()
        keys = conn.execute(text("SELECT count(*) FROM audit_lookup WHERE key = 'agent:agt_a'"))
        assert keys.scalar_one() == 6
    assert upto == tessera.audit.head().size
    assert tessera.audit.index_pending() == 0
    assert len(tessera.audit.query(AuditQuery(agent="agt_b", session="ses_1"))) == 6


def test_ledger_and_checkpoints_are_append_only(tessera: Tessera, engine: Engine) -> None:
    tessera.audit.record(_entry(1))
    tessera.audit.checkpoint()
    for statement in (
        "UPDATE audit_ledger SET outcome = 'deny'",
        "DELETE FROM audit_ledger",
        "UPDATE audit_checkpoints SET tree_size = 99",
        "DELETE FROM audit_checkpoints",
    ):
        with pytest.raises(DBAPIError), engine.begin() as conn:
            conn.execute(text(statement))
    if engine.dialect.name == "postgresql":
        with pytest.raises(DBAPIError), engine.begin() as conn:
            conn.execute(text("TRUNCATE audit_ledger"))
    assert _count(engine, "audit_ledger") == 1
    assert tessera.audit.verify().ok


def test_an_outbox_entry_can_only_leave_by_being_chained(tessera: Tessera, engine: Engine) -> None:
    tessera.identity.create_operator("acme", None, actor="cli")
    pending = _count(engine, "audit_outbox")
    assert pending >= 1
    for statement in ("DELETE FROM audit_outbox", "UPDATE audit_outbox SET body = '{}'"):
        with pytest.raises(DBAPIError), engine.begin() as conn:
            conn.execute(text(statement))
    assert _count(engine, "audit_outbox") == pending
    tessera.audit.chain_pending()
    assert _count(engine, "audit_outbox") == 0


def test_an_unreadable_outbox_row_is_chained_as_such(tessera: Tessera, engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO audit_outbox (created_at, body) VALUES (:t, :b)"),
            {"t": tessera.clock.now(), "b": "{not json"},
        )
    tessera.audit.chain_pending()
    assert _count(engine, "audit_outbox") == 0
    [rec] = tessera.audit.query(AuditQuery(event_type="audit.outbox_unreadable"))
    assert rec["resource"].startswith("outbox:")
    assert tessera.audit.verify().ok


def test_fails_closed_when_the_ledger_cannot_be_written(tessera: Tessera, engine: Engine) -> None:
    tessera.audit.chain_pending()
    events_before = tessera.store.event_head()
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_outbox RENAME TO audit_outbox_gone"))
    with pytest.raises(StoreUnavailable) as err:
        tessera.identity.create_operator("ghost", None, actor="cli")
    assert err.value.status == 503
    assert [o.name for o in tessera.identity.list_operators()] == []
    assert tessera.store.event_head() == events_before  # no event, no state change
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_outbox_gone RENAME TO audit_outbox"))
        conn.execute(text("ALTER TABLE audit_ledger RENAME TO audit_ledger_gone"))
    with pytest.raises(StoreUnavailable):
        tessera.audit.record(_entry(1))  # a decision is not answered without its record
    with pytest.raises(StoreUnavailable):
        asyncio.run(tessera.audit.record_async(_entry(2)))


def test_group_commit_recovers_after_its_connection_fails(tessera: Tessera, engine: Engine) -> None:
    """Group commit keeps one connection; when it breaks (here: closed under it, as a
    database restart would) that group fails closed, the connection is discarded, and the
    next group connects afresh. Nothing half-written reaches the chain."""
    first = tessera.audit.record(_entry(1))
    ledger = tessera.audit._store
    assert isinstance(ledger, SqlAuditLedger)
    kept = ledger._group_conn
    assert kept is not None  # the same connection serves every group
    if engine.dialect.name == "sqlite":  # durability: an fsync of the WAL at every commit
        assert kept.driver_connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert tessera.audit.record(_entry(2)) == first + 1
    assert ledger._group_conn is kept
    kept.driver_connection.close()
    with pytest.raises(StoreUnavailable):
        tessera.audit.record(_entry(3))
    assert ledger._group_conn is None
    assert tessera.audit.record(_entry(4)) == first + 2
    assert asyncio.run(tessera.audit.record_async(_entry(5))) == first + 3
    report = tessera.audit.verify()
    assert report.ok, report.problems
    assert [r["resource"] for r in tessera.audit.query(AuditQuery(after=first - 1))] == [
        "doc:1",
        "doc:2",
        "doc:4",
        "doc:5",
    ]
    tessera.audit.close()
    assert ledger._group_conn is None


def _disable_triggers(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_ledger DISABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER audit_ledger_no_update"))
            conn.execute(text("DROP TRIGGER audit_ledger_no_delete"))


def test_verify_names_an_altered_record(tessera: Tessera, engine: Engine) -> None:
    for i in range(10):
        tessera.audit.record(_entry(i))
    tessera.audit.checkpoint()
    target = tessera.audit.query(AuditQuery(event_type="pdp.decision"))[4]["seq"]
    _disable_triggers(engine)
    with engine.begin() as conn:
        body = conn.execute(
            text("SELECT body FROM audit_ledger WHERE seq = :s"), {"s": target}
        ).scalar_one()
        forged = bytes(body).replace(b'"allow"', b'"deny"')
        conn.execute(
            text("UPDATE audit_ledger SET body = :b WHERE seq = :s"), {"b": forged, "s": target}
        )
    report = tessera.audit.verify()
    assert not report.ok
    assert report.first_bad_seq == target
    assert report.problems[0].kind == "record_altered"


def _in_ranges(monkeypatch: pytest.MonkeyPatch, ledger: SqlAuditLedger) -> list[list[RangeResult]]:
    """Make verify check 10-record ranges in forked processes, as ``tessera audit verify``
    does from 50,000 (a test process has threads, which verify otherwise respects); returns
    each call's results."""
    monkeypatch.setattr(audit_service, "PARALLEL_RANGE_MIN", 10)
    monkeypatch.setattr(sql_audit, "_forkable", lambda: True)
    calls: list[list[RangeResult]] = []
    real = ledger.check_ranges

    def spy(ranges: list[tuple[int, int, str | None]], wanted: frozenset[int]) -> object:
        found = real(ranges, wanted)
        calls.append(found or [])
        return found

    monkeypatch.setattr(ledger, "check_ranges", spy)
    return calls


def test_verify_in_parallel_ranges_reports_what_one_pass_does(
    tessera: Tessera, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(45):
        tessera.audit.record(_entry(i))
        if i % 10 == 3:
            tessera.audit.checkpoint()  # checkpoints inside several ranges
    tessera.audit.chain_pending()
    one = tessera.audit.verify()
    calls = _in_ranges(monkeypatch, tessera.audit._store)  # type: ignore[arg-type]
    many = tessera.audit.verify(jobs=4)
    assert len(calls) == 1
    assert len(calls[0]) == 4 == many.processes  # four did the checking
    assert all(r.problem is None for r in calls[0])
    assert all(r.size == r.upto for r in calls[0])
    assert one.ok, one.problems
    assert many.ok, many.problems
    assert (many.records, many.head_hash, many.checkpoints_checked) == (
        one.records,
        one.head_hash,
        one.checkpoints_checked,
    )


def test_verify_in_parallel_ranges_names_the_same_bad_record(
    tessera: Tessera, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(45):
        tessera.audit.record(_entry(i))
    tessera.audit.checkpoint()
    target = tessera.audit.query(AuditQuery(event_type="pdp.decision"))[-8]["seq"]
    _disable_triggers(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_ledger WHERE seq = :s"), {"s": target})
    calls = _in_ranges(monkeypatch, tessera.audit._store)  # type: ignore[arg-type]
    report = tessera.audit.verify(jobs=3)
    assert calls
    assert any(r.problem is not None or r.start_hash is None for r in calls[0])
    assert report.first_bad_seq == target  # from the one pass the ranges fell back to
    assert report.problems[0].kind == "records_missing"


def test_verify_detects_a_removed_tail_from_the_checkpoints(
    tessera: Tessera, engine: Engine
) -> None:
    for i in range(6):
        tessera.audit.record(_entry(i))
    cp = tessera.audit.checkpoint()
    assert cp is not None
    _disable_triggers(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_ledger WHERE seq > :s"), {"s": cp.tree_size - 2})
    report = tessera.audit.verify()
    assert not report.ok
    assert {p.kind for p in report.problems} == {"truncated"}
    assert report.first_bad_seq == cp.tree_size - 1
    # the file sink alone is enough: the external copy outlives the database's
    only_files = tessera.audit.verify(checkpoint_dirs=[tessera.audit.sink.directory])  # type: ignore[union-attr]
    assert not only_files.ok


def test_checkpoints_from_retired_keys_still_verify(tessera: Tessera) -> None:
    tessera.audit.record(_entry(1))
    tessera.audit.checkpoint()
    tessera.keyring.rotate(actor="cli")
    tessera.clock.advance(7200)  # the old key has left the JWKS
    tessera.audit.chain_pending()
    tessera.audit.checkpoint()
    report = tessera.audit.verify()
    assert report.ok, report.problems
    assert report.checkpoints_checked == 4  # two in the store, two files


def test_two_chainers_on_one_database_keep_one_chain(tessera: Tessera, engine: Engine) -> None:
    other = AuditService(
        SqlAuditLedger(engine), tessera.clock, tessera.keyring, None, AuditSettings()
    )
    services = [tessera.audit, other]

    def worker(w: int) -> None:
        for i in range(20):
            services[w % 2].record(_entry(w * 100 + i))
            if i % 5 == 0:
                tessera.identity.create_user(f"u{w}-{i}", actor="cli")
                services[(w + 1) % 2].chain_pending()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    other.chain_pending()
    report = tessera.audit.verify()
    assert report.ok, report.problems
    assert report.records == tessera.audit.head().size
    assert len(tessera.audit.query(AuditQuery(event_type="pdp.decision", limit=1000))) == 80
    assert len(tessera.audit.query(AuditQuery(event_type="user.created", limit=1000))) == 16
    # both nodes checkpoint the same head: the second is a no-op, not an error
    other.checkpoint()
    assert tessera.audit.checkpoint() is not None
    assert len(SqlAuditLedger(engine).checkpoint_jws()) == 1
