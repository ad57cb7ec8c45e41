"""Orphaned agents: the owner is disabled or no longer exists (nobody answers for them)."""

from __future__ import annotations

from collections.abc import Iterator

from tessera.identity.model import UserStatus
from tessera.posture.finding import Finding, Remediation, Severity, SubjectKind
from tessera.posture.inventory import Inventory, UsageSummary
from tessera.posture.rules._common import in_service
from tessera.posture.settings import PostureSettings


class OrphanedAgents:
    id = "orphaned_agent"
    title = "Orphaned agent (owner disabled or missing)"

    def evaluate(
        self, inv: Inventory, usage: UsageSummary, settings: PostureSettings
    ) -> Iterator[Finding]:
        for agent in inv.agents:
            if not in_service(agent):
                continue
            owner = inv.users.get(agent.owner_user_id)
            if owner is not None and owner.status == UserStatus.ACTIVE:
                continue
            state = "missing" if owner is None else "disabled"
            yield Finding(
                self.id,
                Severity.HIGH,
                SubjectKind.AGENT,
                agent.id,
                f"agent {agent.name}: its owner is {state}",
                {
                    "name": agent.name,
                    "owner_user_id": agent.owner_user_id,
                    "owner": owner.username if owner else None,
                    "owner_state": state,
                    "agent_status": agent.status.value,
                },
                Remediation.SUSPEND,
                {"agent": agent.id},
                agent=agent.id,
            )
