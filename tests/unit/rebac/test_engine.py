"""Engine behaviour: limits, expiry, contextual tuples, conditions, validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tessera.clock import ManualClock
from tessera.rebac import (
    ConditionError,
    InvalidRequest,
    InvalidTuple,
    Limits,
    MemoryTupleIndex,
    RebacEngine,
    RelationTuple,
    ResolutionLimitError,
    UnknownRelation,
    UnknownType,
    parse_dsl,
)

MODEL = parse_dsl("""
model
  schema 1.1
type user
type group
  relations
    define member: [user, user:*, group#member]
type folder
  relations
    define parent: [folder]
    define viewer: [user, group#member] or viewer from parent
type document
  relations
    define parent: [folder]
    define blocked: [user]
    define editor: [user, user with in_office]
    define viewer: ([user, group#member] or editor or viewer from parent) but not blocked
condition in_office(ip: ipaddress, office: string) {
  ip.in_cidr(office)
}
""")

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def engine(
    tuples: list[RelationTuple], limits: Limits | None = None, clock: ManualClock | None = None
) -> RebacEngine:
    return RebacEngine(MODEL, MemoryTupleIndex(tuples), clock or ManualClock(T0), limits)


def chain(n: int) -> list[RelationTuple]:
    """folder:0 <- folder:1 <- ... <- folder:n, user:anne views folder:0."""
    out = [RelationTuple("folder:0", "viewer", "user:anne")]
    out += [RelationTuple(f"folder:{i}", "parent", f"folder:{i - 1}") for i in range(1, n + 1)]
    return out


def test_three_hop_check() -> None:
    e = engine(
        [
            RelationTuple("group:eng", "member", "user:anne"),
            RelationTuple("folder:f", "viewer", "group:eng#member"),
            RelationTuple("document:d", "parent", "folder:f"),
        ]
    )
    assert e.check("document:d", "viewer", "user:anne")
    assert not e.check("document:d", "viewer", "user:bob")


def test_exclusion_denies() -> None:
    e = engine(
        [
            RelationTuple("document:d", "viewer", "user:anne"),
            RelationTuple("document:d", "blocked", "user:anne"),
        ]
    )
    assert not e.check("document:d", "viewer", "user:anne")


def test_depth_limit_raises_instead_of_answering() -> None:
    # Each parent hop is one dispatch: 24 hops fit in the default depth of 25.
    assert engine(chain(24)).check("folder:24", "viewer", "user:anne")
    with pytest.raises(ResolutionLimitError) as info:
        engine(chain(30)).check("folder:30", "viewer", "user:anne")
    assert info.value.code == "rebac_depth_exceeded"


def test_depth_limit_is_configurable() -> None:
    with pytest.raises(ResolutionLimitError):
        engine(chain(5), Limits(max_depth=3)).check("folder:5", "viewer", "user:anne")


def test_work_budget_raises() -> None:
    # A wide group: user:zed is in none of its 60 subgroups, so every one is explored.
    tuples = [RelationTuple("group:g0", "member", f"group:g{j}#member") for j in range(1, 61)]
    e = engine(tuples, Limits(max_work=50))
    with pytest.raises(ResolutionLimitError) as info:
        e.check("group:g0", "member", "user:zed")
    assert info.value.code == "rebac_work_exceeded"
    assert engine(tuples).check("group:g0", "member", "user:zed") is False


def test_cycles_terminate() -> None:
    e = engine(
        [
            RelationTuple("group:a", "member", "group:b#member"),
            RelationTuple("group:b", "member", "group:a#member"),
            RelationTuple("group:b", "member", "user:anne"),
        ]
    )
    assert e.check("group:a", "member", "user:anne")
    assert not e.check("group:a", "member", "user:bob")
    assert e.list_objects("group", "member", "user:anne").items == ("group:a", "group:b")


def test_expired_tuple_is_invisible() -> None:
    clock = ManualClock(T0)
    e = engine(
        [RelationTuple("document:d", "viewer", "user:anne", expires_at=T0 + timedelta(hours=1))],
        clock=clock,
    )
    assert e.check("document:d", "viewer", "user:anne")
    assert e.list_users("document:d", "viewer", ["user"]).items == ("user:anne",)
    clock.advance(3600)
    assert not e.check("document:d", "viewer", "user:anne")
    assert e.list_objects("document", "viewer", "user:anne").items == ()
    assert e.list_users("document:d", "viewer", ["user"]).items == ()


def test_expired_group_membership_cuts_the_path() -> None:
    clock = ManualClock(T0)
    e = engine(
        [
            RelationTuple("group:eng", "member", "user:anne", expires_at=T0),
            RelationTuple("document:d", "viewer", "group:eng#member"),
        ],
        clock=clock,
    )
    assert not e.check("document:d", "viewer", "user:anne")


def test_naive_expiry_is_rejected() -> None:
    with pytest.raises(InvalidTuple):
        RelationTuple("document:d", "viewer", "user:anne", expires_at=datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test


def test_contextual_tuples_apply_to_one_request_only() -> None:
    e = engine([RelationTuple("folder:f", "viewer", "user:anne")])
    extra = [RelationTuple("document:d", "parent", "folder:f")]
    assert e.check("document:d", "viewer", "user:anne", contextual_tuples=extra)
    assert not e.check("document:d", "viewer", "user:anne")
    assert e.list_objects("document", "viewer", "user:anne", contextual_tuples=extra).items == (
        "document:d",
    )


def test_invalid_contextual_tuple_is_rejected() -> None:
    e = engine([])
    with pytest.raises(InvalidTuple):
        e.check(
            "document:d",
            "viewer",
            "user:anne",
            contextual_tuples=[RelationTuple("document:d", "parent", "user:anne")],
        )


def test_condition_needs_context() -> None:
    e = engine(
        [RelationTuple("document:d", "editor", "user:anne", "in_office", {"office": "10.0.0.0/8"})]
    )
    assert e.check("document:d", "viewer", "user:anne", context={"ip": "10.1.2.3"})
    assert not e.check("document:d", "viewer", "user:anne", context={"ip": "192.168.1.1"})
    with pytest.raises(ConditionError) as info:
        e.check("document:d", "viewer", "user:anne")
    assert info.value.code == "rebac_condition_missing_parameters"


def test_condition_error_is_ignored_when_another_path_grants() -> None:
    e = engine(
        [
            RelationTuple("document:d", "editor", "user:anne", "in_office"),
            RelationTuple("document:d", "viewer", "user:anne"),
        ]
    )
    assert e.check("document:d", "viewer", "user:anne")


def test_condition_parameter_type_is_enforced() -> None:
    e = engine(
        [RelationTuple("document:d", "editor", "user:anne", "in_office", {"office": "10.0.0.0/8"})]
    )
    with pytest.raises(ConditionError) as info:
        e.check("document:d", "viewer", "user:anne", context={"ip": "not-an-ip"})
    assert info.value.code == "rebac_condition_parameter_type"


def test_tuple_validation() -> None:
    e = engine([])
    e.validate_tuple(RelationTuple("document:d", "editor", "user:anne", "in_office"))
    for bad in (
        RelationTuple("document:d", "viewer", "user:*"),  # wildcard not allowed
        RelationTuple("document:d", "nope", "user:anne"),
        RelationTuple("nope:d", "viewer", "user:anne"),
        RelationTuple("document:d", "editor", "user:anne", "other_condition"),
        RelationTuple("document:d", "viewer", "group:eng#nope"),
        RelationTuple("document:d,x", "viewer", "user:anne"),
    ):
        with pytest.raises(InvalidTuple):
            e.validate_tuple(bad)


def test_request_validation_errors() -> None:
    e = engine([])
    with pytest.raises(UnknownType):
        e.check("nope:1", "viewer", "user:anne")
    with pytest.raises(InvalidRequest):
        e.check("document:1", "viewer", "a:b:c")
    with pytest.raises(UnknownRelation):
        e.list_objects("document", "nope", "user:anne")
    with pytest.raises(UnknownType):
        e.list_users("document:1", "viewer", ["nope"])


def test_list_users_reports_wildcard_and_usersets() -> None:
    e = engine(
        [
            RelationTuple("group:eng", "member", "user:*"),
            RelationTuple("group:eng", "member", "user:anne"),
            RelationTuple("document:d", "viewer", "group:eng#member"),
        ]
    )
    assert e.list_users("document:d", "viewer", ["user"]).items == ("user:*", "user:anne")
    assert e.list_users("document:d", "viewer", ["group#member"]).items == ("group:eng#member",)
    assert e.check("document:d", "viewer", "user:anyone")


def test_list_objects_max_results_marks_incomplete() -> None:
    e = engine([RelationTuple(f"document:{i}", "viewer", "user:anne") for i in range(5)])
    full = e.list_objects("document", "viewer", "user:anne")
    assert full.complete
    assert len(full.items) == 5
    part = e.list_objects("document", "viewer", "user:anne", max_results=2)
    assert not part.complete
    assert part.items == full.items[:2]


def test_list_candidate_budget() -> None:
    e = engine(
        [RelationTuple(f"document:{i}", "viewer", "user:anne") for i in range(5)],
        Limits(max_candidates=3),
    )
    with pytest.raises(ResolutionLimitError):
        e.list_objects("document", "viewer", "user:anne")
