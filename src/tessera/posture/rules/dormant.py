"""Dormant agents: active, old enough, and no session in ``dormant_days``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from tessera.identity.model import AgentStatus
from tessera.posture.finding import Finding, Remediation, Severity, SubjectKind
from tessera.posture.inventory import Inventory, UsageSummary
from tessera.posture.rules._common import when
from tessera.posture.settings import PostureSettings


class DormantAgents:
    id = "dormant_agent"
    title = "Dormant agent (no session recently)"

    def evaluate(
        self, inv: Inventory, usage: UsageSummary, settings: PostureSettings
    ) -> Iterator[Finding]:
        cutoff = inv.now - timedelta(days=settings.dormant_days)
        for agent in inv.agents:
            if agent.status != AgentStatus.ACTIVE or agent.created_at > cutoff:
                continue
            seen = [d for d in (inv.last_session.get(agent.id), usage.last_session.get(agent.id))]
            last = max((d for d in seen if d is not None), default=None)
            if last is not None and last >= cutoff:
                continue
            yield Finding(
                self.id,
                Severity.MEDIUM,
                SubjectKind.AGENT,
                agent.id,
                f"agent {agent.name} has had no session for {settings.dormant_days} days",
                {
                    "name": agent.name,
                    "last_session": when(last),
                    "created_at": when(agent.created_at),
                    "dormant_days": settings.dormant_days,
                },
                Remediation.SUSPEND,
                {"agent": agent.id},
                agent=agent.id,
            )
