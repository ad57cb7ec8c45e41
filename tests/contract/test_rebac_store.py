"""The relationship store behaves the same on SQLite and PostgreSQL: models, tuples,
one event per batch, consistency tokens, an index that follows the log, decommission."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tessera.app import Tessera
from tessera.clock import ManualClock
from tessera.crypto.keys import generate_signing_key
from tessera.errors import InvalidInput
from tessera.rebac import InvalidTuple, RelationTuple
from tessera.rebac.service import NoModel, RebacService
from tessera.rebac.storage import INLINE_CHANGES
from tessera.signals.events import decode_consistency_token, encode_consistency_token
from tessera.store.sql_store import SqlStore

MODEL = """model
  schema 1.1
type user
type agent
type team
  relations
    define member: [user, agent]
type doc
  relations
    define owner: [user, agent]
    define viewer: [user, agent, team#member, user with in_office] or owner
condition in_office(ip: ipaddress) {
  ip.in_cidr("10.0.0.0/8")
}
"""


def T(obj: str, rel: str, user: str, **kw: object) -> RelationTuple:  # noqa: N802
    return RelationTuple(obj, rel, user, **kw)  # type: ignore[arg-type]


def _events(t: Tessera, after: int) -> list[tuple[str, str]]:
    return [(e.type, e.subject) for e in t.store.read_events_after(after)]


def test_apply_model_stores_it_and_appends_an_event(tessera: Tessera) -> None:
    head = tessera.store.event_head()
    with pytest.raises(NoModel):
        tessera.rebac.active_model()
    w = tessera.rebac.apply_model(MODEL, actor="test")
    assert w.consistency_token is not None
    assert decode_consistency_token(w.consistency_token) == head + 1
    assert _events(tessera, head) == [("rebac.model_applied", w.value.id)]
    active = tessera.rebac.active_model()
    assert active.id == w.value.id
    assert active.dsl == MODEL
    assert {td["type"] for td in active.json["type_definitions"]} == {
        "user",
        "agent",
        "team",
        "doc",
    }
    second = tessera.rebac.apply_model(active.json, actor="test").value  # JSON form works too
    models = tessera.rebac.list_models()
    assert [m.id for m in models][:2] == [second.id, w.value.id]
    assert [m.active for m in models][:2] == [True, False]


def test_writes_return_a_token_and_append_one_event_per_batch(tessera: Tessera) -> None:
    tessera.rebac.apply_model(MODEL, actor="test")
    head = tessera.store.event_head()
    w = tessera.rebac.write_tuples(
        [T("doc:1", "viewer", "user:anne"), T("doc:1", "owner", "user:bob")], actor="test"
    )
    assert (w.value.written, w.value.deleted) == (2, 0)
    assert w.consistency_token == encode_consistency_token(head + 1)
    events = tessera.store.read_events_after(head)
    assert len(events) == 1
    assert events[0].type == "rebac.tuples_written"
    assert events[0].payload["writes"][0] == {
        "object": "doc:1",
        "relation": "viewer",
        "user": "user:anne",
    }
    r = tessera.rebac.check("user:anne", "viewer", "doc:1", at_least=w.consistency_token)
    assert r.allowed
    assert tessera.rebac.check("user:bob", "viewer", "doc:1").allowed  # owner implies viewer


def test_a_tuple_the_model_does_not_allow_rejects_the_whole_batch(tessera: Tessera) -> None:
    tessera.rebac.apply_model(MODEL, actor="test")
    head = tessera.store.event_head()
    with pytest.raises(InvalidTuple, match="may not be assigned"):
        tessera.rebac.write_tuples(
            [T("doc:1", "viewer", "user:anne"), T("doc:1", "owner", "team:x#member")],
            actor="test",
        )
    with pytest.raises(InvalidTuple, match="not defined"):
        tessera.rebac.write_tuples([T("doc:1", "editor", "user:anne")], actor="test")
    assert tessera.store.event_head() == head
    assert tessera.rebac.read_tuples().tuples == []
    assert not tessera.rebac.check("user:anne", "viewer", "doc:1").allowed


def test_writes_need_a_model(tessera: Tessera) -> None:
    with pytest.raises(NoModel):
        tessera.rebac.write_tuples([T("doc:1", "viewer", "user:anne")], actor="test")
    with pytest.raises(NoModel):
        tessera.rebac.check("user:anne", "viewer", "doc:1")


def test_conditions_and_expiry_round_trip_and_rewrite_replaces(
    tessera: Tessera, clock: ManualClock
) -> None:
    tessera.rebac.apply_model(MODEL, actor="test")
    exp = clock.now() + timedelta(hours=1)
    tessera.rebac.write_tuples(
        [
            T("doc:1", "viewer", "user:anne", condition="in_office", context={"ip": "10.1.2.3"}),
            T("doc:2", "viewer", "user:anne", expires_at=exp),
        ],
        actor="test",
    )
    stored = {t.object: t for t in tessera.rebac.read_tuples().tuples}
    assert stored["doc:1"].condition == "in_office"
    assert stored["doc:1"].context == {"ip": "10.1.2.3"}
    assert stored["doc:2"].expires_at == exp
    assert tessera.rebac.check("user:anne", "viewer", "doc:1").allowed
    assert tessera.rebac.check("user:anne", "viewer", "doc:2").allowed
    # Writing the same key again replaces its condition context and expiry.
    w = tessera.rebac.write_tuples(
        [
            T("doc:1", "viewer", "user:anne", condition="in_office", context={"ip": "8.8.8.8"}),
            T("doc:2", "viewer", "user:anne"),
        ],
        actor="test",
    )
    assert not tessera.rebac.check(
        "user:anne", "viewer", "doc:1", at_least=w.consistency_token
    ).allowed
    assert tessera.rebac.read_tuples(object="doc:2").tuples[0].expires_at is None
    assert len(tessera.rebac.read_tuples().tuples) == 2


def test_an_expired_tuple_is_invisible(tessera: Tessera, clock: ManualClock) -> None:
    tessera.rebac.apply_model(MODEL, actor="test")
    exp = clock.now() + timedelta(seconds=30)
    tessera.rebac.write_tuples([T("doc:1", "viewer", "user:anne", expires_at=exp)], actor="t")
    assert tessera.rebac.check("user:anne", "viewer", "doc:1").allowed
    clock.advance(31)
    assert not tessera.rebac.check("user:anne", "viewer", "doc:1").allowed


def test_deletes_are_transactional_and_ignore_missing_keys(tessera: Tessera) -> None:
    tessera.rebac.apply_model(MODEL, actor="test")
    tessera.rebac.write_tuples(
        [T("doc:1", "viewer", "user:anne"), T("doc:2", "viewer", "user:anne")], actor="t"
    )
    head = tessera.store.event_head()
    w = tessera.rebac.write_tuples(
        [T("doc:3", "viewer", "user:anne")],
        [T("doc:1", "viewer", "user:anne"), T("doc:9", "viewer", "user:zed")],
        actor="t",
    )
    assert (w.value.written, w.value.deleted) == (1, 1)
    (event,) = tessera.store.read_events_after(head)
    assert [d["object"] for d in event.payload["deletes"]] == ["doc:1"]
    objs = tessera.rebac.list_objects("user:anne", "viewer", "doc").result.items
    assert objs == ("doc:2", "doc:3")
    # Nothing changed: no event, no token.
    nothing = tessera.rebac.delete_tuples([T("doc:9", "viewer", "user:zed")], actor="t")
    assert nothing.consistency_token is None
    assert tessera.store.event_head() == head + 1


def test_a_large_batch_is_one_event_with_its_changes_in_a_table(tessera: Tessera) -> None:
    tessera.rebac.apply_model(MODEL, actor="test")
    other = RebacService(tessera.store, tessera.clock)  # another node, index loaded now
    assert not other.check("user:u0", "viewer", "doc:0").allowed
    n = INLINE_CHANGES * 3
    head = tessera.store.event_head()
    w = tessera.rebac.write_tuples(
        [T(f"doc:{i}", "viewer", f"user:u{i}") for i in range(n)], actor="t"
    )
    (event,) = tessera.store.read_events_after(head)
    assert event.payload == {"written": n, "deleted": 0, "changes_table": True}
    r = other.check("user:u299", "viewer", "doc:299", at_least=w.consistency_token)
    assert r.allowed
    w = tessera.rebac.delete_tuples(
        [T(f"doc:{i}", "viewer", f"user:u{i}") for i in range(n)], actor="t"
    )
    assert not other.check("user:u299", "viewer", "doc:299", at_least=w.consistency_token).allowed
    assert other.list_objects("user:u1", "viewer", "doc").result.items == ()


def test_read_filters_and_pages_in_key_order(tessera: Tessera) -> None:
    tessera.rebac.apply_model(MODEL, actor="test")
    tuples = [T(f"doc:{i:02d}", "viewer", "user:anne") for i in range(25)]
    tuples += [T("team:eng", "member", "user:anne"), T("doc:00", "owner", "user:bob")]
    tessera.rebac.write_tuples(tuples, actor="t")
    seen: list[RelationTuple] = []
    cursor = None
    while True:
        page = tessera.rebac.read_tuples(object="doc:", cursor=cursor, limit=10)
        seen += page.tuples
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [t.key for t in seen] == sorted(t.key for t in tuples if t.object.startswith("doc:"))
    assert [t.key for t in tessera.rebac.read_tuples(user="user:bob").tuples] == [
        ("doc:00", "owner", "user:bob")
    ]
    assert len(tessera.rebac.read_tuples(relation="member").tuples) == 1
    assert tessera.rebac.read_tuples(object="DOC:").tuples == []  # exact type, not LIKE's case
    with pytest.raises(InvalidInput):
        tessera.rebac.read_tuples(cursor="not a cursor!")


def test_another_node_follows_the_log_within_the_staleness_bound(
    tessera: Tessera, clock: ManualClock
) -> None:
    tessera.rebac.apply_model(MODEL, actor="test")
    # another node: its own store object (it does not see this node's writes) and tailer
    other = RebacService(SqlStore(tessera.store.engine, clock), clock, staleness=1.0)
    assert not other.check("user:anne", "viewer", "doc:1").allowed
    w = tessera.rebac.write_tuples([T("doc:1", "viewer", "user:anne")], actor="t")
    # Within its poll interval the other node may answer from its index...
    assert not other.check("user:anne", "viewer", "doc:1").allowed
    # ...a consistency token makes it catch up first...
    assert other.check("user:anne", "viewer", "doc:1", at_least=w.consistency_token).allowed
    # ...and so does an index older than the bound.
    tessera.rebac.delete_tuples([T("doc:1", "viewer", "user:anne")], actor="t")
    clock.advance(1.5)
    assert not other.check("user:anne", "viewer", "doc:1").allowed
    assert other.index_seq == tessera.store.event_head()


def test_a_new_model_reaches_other_nodes_through_the_log(tessera: Tessera) -> None:
    tessera.rebac.apply_model(MODEL, actor="test")
    other = RebacService(tessera.store, tessera.clock)
    other.refresh()
    w = tessera.rebac.apply_model(
        MODEL.replace("or owner", "or owner or viewer from parent").replace(
            "define owner: [user, agent]", "define owner: [user, agent]\n    define parent: [doc]"
        ),
        actor="t",
    )
    w2 = tessera.rebac.write_tuples(
        [T("doc:child", "parent", "doc:top"), T("doc:top", "viewer", "user:anne")], actor="t"
    )
    assert w.consistency_token is not None
    assert other.check("user:anne", "viewer", "doc:child", at_least=w2.consistency_token).allowed


def test_a_token_ahead_of_the_log_is_refused(tessera: Tessera) -> None:
    tessera.rebac.apply_model(MODEL, actor="test")
    ahead = encode_consistency_token(tessera.store.event_head() + 100)
    with pytest.raises(InvalidInput) as err:
        tessera.rebac.check("user:anne", "viewer", "doc:1", at_least=ahead)
    assert err.value.code == "invalid_consistency_token"


def _agent(t: Tessera, name: str) -> str:
    return t.identity.register_agent(
        name,
        operator="acme",
        owner="alice",
        purpose="testing",
        expires_in_days=30,
        jwk=generate_signing_key().public_jwk(),
        actor="test",
    ).value.agent.id


def test_decommissioning_an_agent_deletes_its_tuples_in_the_same_commit(tessera: Tessera) -> None:
    tessera.identity.create_operator("acme", None, actor="test")
    tessera.identity.create_user("alice", actor="test")
    bot, other_bot = _agent(tessera, "bot"), _agent(tessera, "bot2")
    tessera.rebac.apply_model(
        MODEL.replace(
            "type agent\n", "type agent\n  relations\n    define owner: [user]\n"
        ).replace(
            "[user, agent, team#member, user", "[user, agent, agent#owner, team#member, user"
        ),
        actor="test",
    )
    mine = [
        T("doc:1", "viewer", f"agent:{bot}"),
        T("team:eng", "member", f"agent:{bot}"),
        T("doc:2", "viewer", f"agent:{bot}#owner"),
        T(f"agent:{bot}", "owner", "user:alice"),
    ]
    theirs = [T("doc:1", "viewer", f"agent:{other_bot}"), T("doc:1", "owner", "user:alice")]
    tessera.rebac.write_tuples(mine + theirs, actor="test")
    assert tessera.rebac.check(f"agent:{bot}", "viewer", "doc:1").allowed
    head = tessera.store.event_head()
    w = tessera.identity.decommission_agent(bot, "retired", actor="test")
    events = tessera.store.read_events_after(head)
    assert events[0].type == "agent.decommissioned"
    (rebac_event,) = [e for e in events if e.type == "rebac.tuples_written"]
    assert rebac_event.subject == bot
    assert rebac_event.payload["reason"] == "agent.decommissioned"
    assert rebac_event.payload["deleted"] == len(mine)
    # One commit: the decommission's token covers the tuple deletion.
    assert decode_consistency_token(w.consistency_token or "") == events[-1].seq
    left = {t.key for t in tessera.rebac.read_tuples().tuples}
    assert left == {t.key for t in theirs}
    assert not tessera.rebac.check(f"agent:{bot}", "viewer", "doc:1").allowed
    assert tessera.rebac.check(f"agent:{other_bot}", "viewer", "doc:1").allowed
    # Suspending another agent leaves its tuples alone.
    tessera.identity.suspend_agent(other_bot, "drill", actor="test")
    assert {t.key for t in tessera.rebac.read_tuples().tuples} == left


def test_writes_from_several_threads_all_land(tessera: Tessera) -> None:
    import threading

    tessera.rebac.apply_model(MODEL, actor="test")
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(5):
                tessera.rebac.write_tuples([T(f"doc:{k}-{i}", "viewer", "user:anne")], actor="t")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    other = RebacService(tessera.store, tessera.clock)
    assert len(other.list_objects("user:anne", "viewer", "doc").result.items) == 20
    assert len(tessera.rebac.list_objects("user:anne", "viewer", "doc").result.items) == 20


def test_expiry_instant_is_stored_with_its_zone(tessera: Tessera) -> None:
    tessera.rebac.apply_model(MODEL, actor="test")
    exp = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    tessera.rebac.write_tuples([T("doc:1", "viewer", "user:anne", expires_at=exp)], actor="t")
    (stored,) = tessera.rebac.read_tuples().tuples
    assert stored.expires_at == exp
    assert stored.expires_at.tzinfo is not None
