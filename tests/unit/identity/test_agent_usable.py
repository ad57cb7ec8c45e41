from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from tessera.identity.ceiling import Ceiling
from tessera.identity.lifecycle import agent_unusable_reason
from tessera.identity.model import Agent, AgentStatus, Operator, OperatorStatus

NOW = datetime(2026, 6, 1, tzinfo=UTC)
OP = Operator("op_1", "acme", "Acme", OperatorStatus.ACTIVE, NOW, NOW)
AGENT = Agent(
    "agt_1",
    "bot",
    "op_1",
    "usr_1",
    "p",
    NOW + timedelta(days=1),
    Ceiling(),
    True,
    AgentStatus.ACTIVE,
    None,
    NOW,
    NOW,
)


def test_one_rule_for_every_check_point() -> None:
    assert agent_unusable_reason(AGENT, OP, NOW) is None
    assert agent_unusable_reason(AGENT, OP, NOW + timedelta(days=1)) == "agent expired"
    for status in (AgentStatus.SUSPENDED, AgentStatus.DECOMMISSIONED):
        assert agent_unusable_reason(replace(AGENT, status=status), OP, NOW) == ("agent not active")
    suspended = replace(OP, status=OperatorStatus.SUSPENDED)
    assert agent_unusable_reason(AGENT, suspended, NOW) == "operator suspended"
    assert agent_unusable_reason(AGENT, None, NOW) == "operator suspended"
