"""Agents registered without model attestation: their model digest is self-asserted
(DESIGN flow A), so nothing proves which model authenticates."""

from __future__ import annotations

from collections.abc import Iterator

from tessera.posture.finding import Finding, Remediation, Severity, SubjectKind
from tessera.posture.inventory import Inventory, UsageSummary
from tessera.posture.rules._common import in_service
from tessera.posture.settings import PostureSettings


class WithoutAttestation:
    id = "agent_without_attestation"
    title = "Agent registered without model attestation"

    def evaluate(
        self, inv: Inventory, usage: UsageSummary, settings: PostureSettings
    ) -> Iterator[Finding]:
        for agent in inv.agents:
            if not in_service(agent) or agent.attestation_required:
                continue
            yield Finding(
                self.id,
                Severity.MEDIUM,
                SubjectKind.AGENT,
                agent.id,
                f"agent {agent.name} does not need a model attestation",
                {"name": agent.name, "models": sorted(agent.ceiling.models)},
                Remediation.REVIEW,
                {},
                agent=agent.id,
            )
