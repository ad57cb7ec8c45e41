"""The agent lifecycle state machine: ``active ⇄ suspended``, any state → ``decommissioned``.

Expiry is not a state: it is checked at every authentication (DESIGN 6b).
"""

from __future__ import annotations

from datetime import datetime

from tessera.errors import Conflict
from tessera.identity.model import Agent, AgentStatus, Operator, OperatorStatus

# INVARIANT: decommissioned is terminal; no transition leaves it.
_ALLOWED: dict[tuple[AgentStatus, AgentStatus], str] = {
    (AgentStatus.ACTIVE, AgentStatus.SUSPENDED): "agent.suspended",
    (AgentStatus.SUSPENDED, AgentStatus.ACTIVE): "agent.resumed",
    (AgentStatus.ACTIVE, AgentStatus.DECOMMISSIONED): "agent.decommissioned",
    (AgentStatus.SUSPENDED, AgentStatus.DECOMMISSIONED): "agent.decommissioned",
}


def transition(current: AgentStatus, target: AgentStatus) -> str:
    """Return the event type for a legal transition; raise ``Conflict`` otherwise."""
    event = _ALLOWED.get((current, target))
    if event is None:
        raise Conflict(
            f"agent cannot go from {current.value} to {target.value}", code="invalid_transition"
        )
    return event


def can_transition(current: AgentStatus, target: AgentStatus) -> bool:
    return (current, target) in _ALLOWED


def agent_unusable_reason(agent: Agent, operator: Operator | None, now: datetime) -> str | None:
    """Why ``agent`` may not authenticate or act now, or None when it may.

    One rule for every check point (client authentication, actor tokens, session liveness):
    expiry is checked every time (DESIGN 6b), the agent must be active, and a suspended or
    missing operator is a kill switch for all its agents.
    """
    if agent.is_expired(now):
        return "agent expired"
    if agent.status != AgentStatus.ACTIVE:
        return "agent not active"
    if operator is None or operator.status != OperatorStatus.ACTIVE:
        return "operator suspended"
    return None
