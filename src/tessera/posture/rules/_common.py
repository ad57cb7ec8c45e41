"""Small helpers shared by the rules."""

from __future__ import annotations

from datetime import datetime

from tessera.clock import iso
from tessera.identity.model import Agent, AgentStatus


def in_service(agent: Agent) -> bool:
    """Not decommissioned: the agent still exists as a live identity."""
    return agent.status != AgentStatus.DECOMMISSIONED


def when(dt: datetime | None) -> str | None:
    return iso(dt) if dt is not None else None
