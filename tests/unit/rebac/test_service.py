"""RebacService rules on a real SQLite store: input limits, fail-closed freshness, wire
helpers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from tessera.app import Tessera
from tessera.clock import ManualClock
from tessera.errors import InvalidInput, PayloadTooLarge, StoreUnavailable
from tessera.rebac import ConditionError, InvalidTuple, ModelError, RelationTuple
from tessera.rebac.service import (
    MAX_BATCH,
    RebacService,
    RebacStale,
)
from tessera.rebac.storage import decode_cursor, encode_cursor, tuple_from_dict, tuple_to_dict

MODEL = """model
  schema 1.1
type user
type doc
  relations
    define viewer: [user, user with weekday]
condition weekday(day: string) {
  day != "sunday"
}
"""


class FlakyStore:
    """A real store whose reads fail while ``down`` is set (a database outage)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False

    def write(self) -> Any:
        return self.inner.write()

    @contextmanager
    def read(self) -> Iterator[Any]:
        if self.down:
            raise StoreUnavailable(detail="connection refused")
        with self.inner.read() as tx:
            yield tx


@pytest.fixture
def t(sqlite_tessera: Tessera) -> Tessera:
    sqlite_tessera.rebac.apply_model(MODEL, actor="test")
    return sqlite_tessera


def test_an_index_older_than_the_bound_fails_closed_when_the_store_is_down(
    t: Tessera, clock: ManualClock
) -> None:
    store = FlakyStore(t.store)
    node = RebacService(store, clock, staleness=1.0)
    t.rebac.write_tuples([RelationTuple("doc:1", "viewer", "user:anne")], actor="t")
    assert node.check("user:anne", "viewer", "doc:1").allowed
    store.down = True
    clock.advance(0.5)
    assert node.check("user:anne", "viewer", "doc:1").allowed  # within the bound
    clock.advance(1.0)
    with pytest.raises(RebacStale) as err:
        node.check("user:anne", "viewer", "doc:1")
    assert (err.value.status, err.value.code) == (503, "stale_state")
    store.down = False
    assert node.check("user:anne", "viewer", "doc:1").allowed


def test_a_token_the_index_cannot_reach_fails_closed(t: Tessera, clock: ManualClock) -> None:
    store = FlakyStore(t.store)
    node = RebacService(store, clock)
    node.refresh()
    w = t.rebac.write_tuples([RelationTuple("doc:1", "viewer", "user:anne")], actor="t")
    store.down = True
    with pytest.raises(RebacStale):
        node.check("user:anne", "viewer", "doc:1", at_least=w.consistency_token)


def test_a_node_that_never_loaded_fails_closed(t: Tessera, clock: ManualClock) -> None:
    store = FlakyStore(t.store)
    store.down = True
    with pytest.raises(RebacStale):
        RebacService(store, clock).check("user:anne", "viewer", "doc:1")


def test_own_writes_are_visible_on_the_same_node_without_a_token(t: Tessera) -> None:
    t.rebac.check("user:anne", "viewer", "doc:1")  # index loaded
    t.rebac.write_tuples([RelationTuple("doc:1", "viewer", "user:anne")], actor="t")
    assert t.rebac.check("user:anne", "viewer", "doc:1").allowed


@pytest.mark.parametrize(
    ("tuple_", "message"),
    [
        (RelationTuple("doc:" + "x" * 300, "viewer", "user:anne"), "object must be at most"),
        (RelationTuple("doc:1", "viewer", "user:a\x00b"), "user must be"),
        (RelationTuple("doc:1", "viewer", "user:\ud800"), "user must be"),
        (RelationTuple("doc:1", "viewer", "user:anne", None, {"day": "x"}), "needs a condition"),
        (
            RelationTuple("doc:1", "viewer", "user:anne", "weekday", {"day": "x" * 5000}),
            "limited to",
        ),
        (
            RelationTuple("doc:1", "viewer", "user:anne", "weekday", {"n": float("nan")}),
            "plain JSON",
        ),
        (
            RelationTuple(
                "doc:1",
                "viewer",
                "user:anne",
                expires_at=datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
            ),
            "out of range",
        ),
    ],
)
def test_tuple_fields_are_limited_before_the_store(
    t: Tessera, tuple_: RelationTuple, message: str
) -> None:
    with pytest.raises(InvalidTuple, match=message):
        t.rebac.write_tuples([tuple_], actor="t")


def test_batch_rules(t: Tessera) -> None:
    one = RelationTuple("doc:1", "viewer", "user:anne")
    with pytest.raises(InvalidInput, match="nothing"):
        t.rebac.write_tuples([], actor="t")
    with pytest.raises(InvalidTuple, match="twice"):
        t.rebac.write_tuples([one], [one], actor="t")
    many = [RelationTuple(f"doc:{i}", "viewer", "user:anne") for i in range(MAX_BATCH + 1)]
    with pytest.raises(PayloadTooLarge):
        t.rebac.write_tuples(many, actor="t")


def test_conditions_are_evaluated_with_request_context(t: Tessera) -> None:
    t.rebac.write_tuples(
        [RelationTuple("doc:1", "viewer", "user:anne", "weekday", None)], actor="t"
    )
    assert t.rebac.check("user:anne", "viewer", "doc:1", context={"day": "monday"}).allowed
    assert not t.rebac.check("user:anne", "viewer", "doc:1", context={"day": "sunday"}).allowed


def test_contextual_tuples_are_checked_like_writes(t: Tessera) -> None:
    extra = [RelationTuple("doc:1", "viewer", "user:bob")]
    assert t.rebac.check("user:bob", "viewer", "doc:1", contextual_tuples=extra).allowed
    with pytest.raises(InvalidTuple):
        t.rebac.check(
            "user:bob",
            "viewer",
            "doc:1",
            contextual_tuples=[RelationTuple("doc:1", "viewer", "user:\x00")],
        )


def test_models_are_validated(t: Tessera) -> None:
    with pytest.raises(ModelError):
        t.rebac.apply_model(
            "model\n  schema 1.1\ntype doc\n  relations\n    define a: b\n", actor="t"
        )
    with pytest.raises(InvalidInput, match="control"):
        t.rebac.apply_model(MODEL + "# \x00\n", actor="t")
    with pytest.raises(ModelError):
        t.rebac.apply_model({"schema_version": "1.1", "type_definitions": "nope"}, actor="t")


def test_wire_helpers_round_trip_and_refuse_junk() -> None:
    exp = datetime(2030, 1, 1, tzinfo=UTC)
    full = RelationTuple("doc:1", "viewer", "user:anne", "weekday", {"day": "monday"}, exp)
    assert tuple_from_dict(tuple_to_dict(full)) == full
    assert tuple_from_dict(tuple_to_dict(full)).context == {"day": "monday"}
    for junk in (
        [],
        {"object": "doc:1", "relation": "viewer"},
        {"object": "doc:1", "relation": "viewer", "user": "user:a", "extra": 1},
        {"object": "doc:1", "relation": "viewer", "user": "user:a", "condition": "weekday"},
        {"object": "doc:1", "relation": "viewer", "user": "user:a", "expires_at": "soon"},
    ):
        with pytest.raises(InvalidTuple):
            tuple_from_dict(junk)
    key = ("doc:1", "viewer", "user:anne")
    assert decode_cursor(encode_cursor(key)) == key
    for bad in ("%%%", "WzFd", encode_cursor(key)[:-3]):
        with pytest.raises(InvalidInput):
            decode_cursor(bad)


def test_a_condition_parameter_out_of_range_is_bad_input(sqlite_tessera: Tessera) -> None:
    sqlite_tessera.rebac.apply_model(
        "model\n  schema 1.1\ntype user\ntype doc\n  relations\n"
        "    define viewer: [user with short]\n"
        'condition short(d: duration) {\n  d < duration("1h")\n}\n',
        actor="t",
    )
    sqlite_tessera.rebac.write_tuples(
        [RelationTuple("doc:1", "viewer", "user:anne", "short", None)], actor="t"
    )
    assert sqlite_tessera.rebac.check("user:anne", "viewer", "doc:1", context={"d": "5m"}).allowed
    with pytest.raises(ConditionError) as err:
        sqlite_tessera.rebac.check("user:anne", "viewer", "doc:1", context={"d": "999999999999h"})
    assert err.value.status == 400
