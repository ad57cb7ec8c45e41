from __future__ import annotations

import pytest

from tessera.errors import InvalidInput
from tessera.identity.ceiling import Ceiling, scope_covered, tool_covered
from tessera.identity.lifecycle import can_transition, transition
from tessera.identity.model import AgentStatus


def test_tool_and_scope_vocabulary() -> None:
    assert tool_covered("fs/*", "fs/read")
    assert tool_covered("fs/read", "fs/read")
    assert not tool_covered("fs/read", "fs/*")
    assert not tool_covered("fs/*", "fsx/read")
    assert scope_covered("doc:*", "doc:1")
    assert scope_covered("doc:1", "doc:1")
    assert not scope_covered("doc:1", "doc:*")
    assert not scope_covered("doc:*", "docs:1")


def test_ceiling_round_trip_and_defaults() -> None:
    c = Ceiling.from_dict({"tools": ["fs/*"], "budgets": {"tool_calls": 3}})
    assert c.max_session_lifetime == 900
    assert c.max_delegation_depth == 5
    assert c.dpop_required
    assert Ceiling.from_dict(c.to_dict()) == c
    assert c.allows_tool("fs/write")
    assert not c.allows_tool("mail/send")


@pytest.mark.parametrize(
    "bad",
    [
        {"tools": "fs/*"},
        {"tools": ["fs"]},
        {"tools": ["/x"]},
        {"data_scopes": ["doc"]},
        {"models": ["md5:abc"]},
        {"budgets": {"Tool Calls": 1}},
        {"budgets": {"tool_calls": -1}},
        {"budgets": {"tool_calls": True}},
        {"max_session_lifetime": 7200},
        {"max_delegation_depth": 99},
        {"dpop_required": "yes"},
        {"surprise": 1},
        [],
    ],
)
def test_malformed_ceilings_are_refused(bad: object) -> None:
    with pytest.raises(InvalidInput):
        Ceiling.from_dict(bad)  # type: ignore[arg-type]


def test_lifecycle_transitions() -> None:
    a, s, d = AgentStatus.ACTIVE, AgentStatus.SUSPENDED, AgentStatus.DECOMMISSIONED
    assert transition(a, s) == "agent.suspended"
    assert transition(s, a) == "agent.resumed"
    assert transition(a, d) == transition(s, d) == "agent.decommissioned"
    for target in (a, s, d):
        assert not can_transition(d, target)
    assert not can_transition(a, a)
