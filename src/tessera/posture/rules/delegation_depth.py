"""Delegation deeper than policy: live sessions below the maximum depth, and agents whose
ceiling allows chains deeper than the posture maximum (DESIGN flow C: default limit 5)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from tessera.posture.finding import Finding, Remediation, Severity, SubjectKind
from tessera.posture.inventory import Inventory, UsageSummary
from tessera.posture.rules._common import in_service
from tessera.posture.settings import PostureSettings


class DelegationTooDeep:
    id = "delegation_too_deep"
    title = "Delegation deeper than policy"

    def evaluate(
        self, inv: Inventory, usage: UsageSummary, settings: PostureSettings
    ) -> Iterator[Finding]:
        limit = settings.max_delegation_depth
        for s in inv.live_sessions:
            if s.depth > limit:
                yield Finding(
                    self.id,
                    Severity.HIGH,
                    SubjectKind.SESSION,
                    s.sid,
                    f"session {s.sid} is delegated {s.depth} levels deep (policy {limit})",
                    {"agent": s.agent_id, "depth": s.depth, "limit": limit, "parent": s.parent_sid},
                    Remediation.REVOKE_SESSION,
                    {"session": s.sid},
                    agent=s.agent_id,
                )
        for agent in inv.agents:
            depth = agent.ceiling.max_delegation_depth
            if in_service(agent) and depth > limit:
                yield Finding(
                    self.id,
                    Severity.LOW,
                    SubjectKind.AGENT,
                    agent.id,
                    f"agent {agent.name} may delegate {depth} levels deep (policy {limit})",
                    {"name": agent.name, "max_delegation_depth": depth, "limit": limit},
                    Remediation.NARROW_CEILING,
                    {"ceiling": replace(agent.ceiling, max_delegation_depth=limit).to_dict()},
                    agent=agent.id,
                )
