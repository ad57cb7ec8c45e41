"""The in-memory tuple index: incremental writes and deletes."""

from __future__ import annotations

from tessera.rebac import MemoryTupleIndex, RelationTuple


def test_write_delete_and_type_indexes() -> None:
    idx = MemoryTupleIndex()
    a = RelationTuple("document:1", "viewer", "user:anne")
    b = RelationTuple("document:1", "viewer", "group:eng#member")
    idx.write([a, b, a])  # idempotent per key
    assert len(idx) == 2
    assert set(idx.users("document:1", "viewer")) == {"user:anne"}
    assert set(idx.usersets("document:1", "viewer")) == {"group:eng#member"}
    assert list(idx.objects_of_type("document")) == ["document:1"]
    assert set(idx.users_of_type("group")) == {"group:eng"}
    idx.delete([a])
    assert len(idx) == 1
    assert not idx.users("document:1", "viewer")
    idx.delete([b, b])
    assert len(idx) == 0
    assert list(idx.objects_of_type("document")) == []
    assert list(idx.users_of_type("group")) == []


def test_rewrite_replaces_condition() -> None:
    idx = MemoryTupleIndex([RelationTuple("document:1", "viewer", "user:anne", "c1")])
    idx.write([RelationTuple("document:1", "viewer", "user:anne")])
    assert len(idx) == 1
    assert idx.users("document:1", "viewer")["user:anne"] is None
    assert [t.key for t in idx.tuples()] == [("document:1", "viewer", "user:anne")]


def test_reverse_index_follows_writes_and_deletes() -> None:
    idx = MemoryTupleIndex()
    many = [RelationTuple(f"document:{i}", "parent", "folder:f") for i in range(40)]
    idx.write(many)  # grows past the small-list size into a set
    assert set(idx.keys_of_user("folder:f")) == {f"document:{i}#parent" for i in range(40)}
    idx.delete(many[:39])
    assert list(idx.keys_of_user("folder:f")) == ["document:39#parent"]
    idx.delete(many[39:])
    assert list(idx.keys_of_user("folder:f")) == []
    assert len(idx) == 0
