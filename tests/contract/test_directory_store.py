"""The PDP's directory in the store (migration 0013) on SQLite and PostgreSQL: changes and
their events (and audit records) in one transaction, every node's in-memory view following
the event log, fail closed when the log cannot be followed."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tessera.app import Tessera
from tessera.audit.ports import AuditQuery
from tessera.clock import ManualClock
from tessera.errors import InvalidInput, NotFound, PayloadTooLarge
from tessera.pdp.directory import (
    DIRECTORY_CHANGED,
    MAX_ATTRIBUTES_BYTES,
    DirectoryService,
    StoredDirectory,
)
from tessera.signals.tailer import EventTailer, StaleState, TailerSettings
from tessera.store import tables as t
from tessera.store.sql_store import SqlStore
from tessera.store.tables_directory import directory_entries


def _events(store: SqlStore) -> list[tuple[str, str, dict[str, object]]]:
    with store.read() as tx:
        return [
            (e.type, e.subject, e.payload)
            for e in tx.events.read_after(0)
            if e.type == DIRECTORY_CHANGED
        ]


def _rows(store: SqlStore) -> int:
    with store.read() as tx:
        return int(
            tx.connection.execute(select(func.count()).select_from(directory_entries)).scalar_one()
        )


def test_set_get_list_delete(store: SqlStore, clock: ManualClock) -> None:
    svc = DirectoryService(store, clock)
    w = svc.set("user", "alice@acme.example", {"role": "admin", "tags": ["a", "b"]}, actor="cli")
    assert w.consistency_token is not None
    assert w.value.attributes == {"role": "admin", "tags": ["a", "b"]}
    assert w.value.updated_by == "cli"
    svc.set("user", "alice@acme.example", {"role": "viewer"}, actor="cli")  # replaces
    assert svc.get("user", "alice@acme.example").attributes == {"role": "viewer"}
    svc.set("document", "7", {"classification": "secret"}, actor="cli")
    svc.set("Acme::Doc", "x/y", {}, actor="cli")  # namespaced type, id with a slash
    page = svc.list(limit=2)
    rest = svc.list(cursor=page.next_cursor, limit=2)
    assert [e.key for e in page.entries + rest.entries] == [
        ("Acme::Doc", "x/y"),
        ("document", "7"),
        ("user", "alice@acme.example"),
    ]
    assert rest.next_cursor is None
    assert [e.id for e in svc.list("user").entries] == ["alice@acme.example"]
    svc.delete("document", "7", actor="cli")
    with pytest.raises(NotFound):
        svc.get("document", "7")
    with pytest.raises(NotFound):
        svc.delete("document", "7", actor="cli")
    events = _events(store)
    assert [(typ, subject) for typ, subject, _ in events] == [
        (DIRECTORY_CHANGED, "user:alice@acme.example"),
        (DIRECTORY_CHANGED, "user:alice@acme.example"),
        (DIRECTORY_CHANGED, "document:7"),
        (DIRECTORY_CHANGED, "Acme::Doc:x/y"),
        (DIRECTORY_CHANGED, "document:7"),
    ]
    assert events[1][2]["entries"] == [
        {"type": "user", "id": "alice@acme.example", "attributes": {"role": "viewer"}}
    ]
    assert events[4][2]["removed"] == [{"type": "document", "id": "7"}]


def test_load_is_all_or_nothing_and_replace_deletes_the_rest(
    store: SqlStore, clock: ManualClock
) -> None:
    svc = DirectoryService(store, clock)
    w = svc.load({"user": {"a": {"x": 1}, "b": {}}, "record": {101: {"owner": "a"}}}, actor="t")
    assert w.value.to_dict() == {"set": 3, "deleted": 0}
    assert svc.get("record", "101").attributes == {"owner": "a"}  # YAML-style integer ids
    before = len(_events(store))
    for bad in (
        {"user": {"c": {"ok": True}, "d": "not an object"}},
        {"user": {"c": {"ok": True}}, "bad type!": {"x": {}}},
        {"user": {"c": {"n": float("nan")}}},
        {"user": {"": {}}},
        {"user": {"c\x00": {}}},
        ["not", "a", "mapping"],
        {"user": {"c": {"deep": [[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}}},
    ):
        with pytest.raises(InvalidInput):
            svc.load(bad, actor="t")
    with pytest.raises(PayloadTooLarge):
        svc.set("user", "big", {"x": "y" * MAX_ATTRIBUTES_BYTES}, actor="t")
    assert _rows(store) == 3  # nothing of a refused load was written
    assert len(_events(store)) == before
    w = svc.load({"user": {"a": {"x": 2}}}, actor="t", replace=True)
    assert w.value.to_dict() == {"set": 1, "deleted": 2}
    assert [e.key for e in svc.list().entries] == [("user", "a")]
    _, subject, payload = _events(store)[-1]
    assert subject == "directory"
    assert payload["removed"] == [{"type": "record", "id": "101"}, {"type": "user", "id": "b"}]
    assert svc.load({}, actor="t").consistency_token is None  # nothing to do, no event


def test_every_node_follows_changes_through_the_event_log(
    store: SqlStore, clock: ManualClock
) -> None:
    # Two nodes: each its own store object (its own "own writes") and its own tailer.
    other = SqlStore(store.engine, clock)
    writer = DirectoryService(store, clock)
    writer.load({"user": {"alice": {"role": "admin"}}}, actor="t")
    node_b = StoredDirectory(other, EventTailer(other, clock))
    assert node_b.attributes("user", "alice") == {"role": "admin"}  # first use: a snapshot
    assert node_b.ids_of_type("user") == ["alice"]
    writer.set("user", "bob", {"role": "viewer"}, actor="t")
    writer.set("user", "alice", {"role": "viewer"}, actor="t")
    writer.delete("user", "bob", actor="t")
    writer.set("record", "1", {"owner": "alice"}, actor="t")
    clock.advance(0.5)  # past the poll interval: node B reads the log on its next read
    assert node_b.attributes("user", "alice") == {"role": "viewer"}
    assert node_b.attributes("user", "bob") is None
    assert node_b.ids_of_type("user") == ["alice"]
    assert node_b.ids_of_type("record") == ["1"]
    # An entry too large for the event payload: the event names it, nodes read the row.
    writer.set("user", "alice", {"bio": "b" * 10_000}, actor="t")
    _, _, payload = _events(store)[-1]
    assert payload["attributes_omitted"] is True
    assert payload["entries"] == [{"type": "user", "id": "alice"}]
    clock.advance(0.5)
    assert node_b.attributes("user", "alice") == {"bio": "b" * 10_000}
    writer.set("user", "alice", {"role": "viewer"}, actor="t")
    # A load too large for the event payload makes every node re-read the whole directory.
    big = {"doc": {str(i): {"title": "x" * 40} for i in range(400)}}
    w = writer.load(big, actor="t")
    _, _, payload = _events(store)[-1]
    assert payload == {"set": 400, "deleted": 0, "reload": True}
    clock.advance(0.5)
    assert len(node_b.ids_of_type("doc")) == 400
    assert node_b.attributes("user", "alice") == {"role": "viewer"}
    assert w.consistency_token is not None


def test_a_node_that_cannot_follow_the_log_fails_closed(
    store: SqlStore, clock: ManualClock
) -> None:
    DirectoryService(store, clock).set("user", "alice", {"role": "admin"}, actor="t")
    tailer = EventTailer(store, clock, TailerSettings(enabled=False))
    node = StoredDirectory(store, tailer)
    with pytest.raises(StaleState):
        node.attributes("user", "alice")


def test_changes_are_audited_in_their_transaction(tessera: Tessera) -> None:
    assert tessera.directory is not None
    tessera.directory.set("document", "roadmap", {"classification": "secret"}, actor="admin:x")
    with tessera.store.read() as tx:
        pending = tx.connection.execute(select(func.count()).select_from(t.audit_outbox))
        assert pending.scalar_one() >= 1
    tessera.audit.chain_pending()
    [rec] = tessera.audit.query(AuditQuery(event_type=DIRECTORY_CHANGED))
    assert rec["resource"] == "document:roadmap"
    assert rec["actor"]["principal"] == "admin:x"
    assert rec["details"]["entries"] == [
        {"type": "document", "id": "roadmap", "attributes": {"classification": "secret"}}
    ]
    # The server's decision point reads the same directory (app.py wiring).
    assert isinstance(tessera.pdp.attributes, StoredDirectory)
    assert tessera.pdp.attributes.attributes("document", "roadmap") == {"classification": "secret"}


def test_users_are_read_by_the_username_rebac_names_them_by(tessera: Tessera) -> None:
    """decisions.md 90: a user named by Tessera id (an agent's acting-for user, the token's
    ``sub``) reads ``user:<username>`` first, then ``user:<user id>``."""
    alice = tessera.identity.create_user("alice", actor="test").value
    bob = tessera.identity.create_user("bob", actor="test").value
    ghost = "usr_" + "0" * 16  # id-shaped, no such user
    tessera.directory.load(
        {
            "user": {
                "alice": {"clearance": 2},
                alice.id: {"clearance": 0},  # shadowed by the username entry
                bob.id: {"clearance": 1},  # no username entry: the id entry applies
                ghost: {"clearance": 3},
                "carol": {"clearance": 4},  # not a Tessera user (a plain AuthZEN subject)
            },
            "agent": {alice.id: {"clearance": 5}},  # other types are never renamed
        },
        actor="test",
    )
    directory = tessera.pdp.attributes  # the decision point's, as app.py wires it
    assert directory.attributes("user", alice.id) == {"clearance": 2}
    assert directory.attributes("user", "alice") == {"clearance": 2}
    assert directory.attributes("user", bob.id) == {"clearance": 1}
    assert directory.attributes("user", ghost) == {"clearance": 3}
    assert directory.attributes("user", "carol") == {"clearance": 4}
    assert directory.attributes("agent", alice.id) == {"clearance": 5}
    tessera.directory.delete("user", "alice", actor="test")
    tessera.clock.advance(2)
    assert directory.attributes("user", alice.id) == {"clearance": 0}
