"""The agent lifecycle state machine: ``active ⇄ suspended``, any state → ``decommissioned``.

Expiry is not a state: it is checked at every authentication (DESIGN 6b).
"""

from __future__ import annotations

from tessera.errors import Conflict
from tessera.identity.model import AgentStatus

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
