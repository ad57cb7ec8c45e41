"""Agents without a real expiry or with one beyond the maximum agent lifetime.

Registration refuses both, so such agents predate a lowered maximum or were imported; an
agent with no end date is a standing identity that outlives its purpose."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from tessera.posture.finding import Finding, Remediation, Severity, SubjectKind
from tessera.posture.inventory import Inventory, UsageSummary
from tessera.posture.rules._common import in_service, when
from tessera.posture.settings import PostureSettings

NO_EXPIRY_YEAR = 9000  # an expiry this far out is a placeholder for "never"


class ExpiryBeyondMaximum:
    id = "expiry_beyond_maximum"
    title = "Agent without expiry or beyond the maximum lifetime"

    def evaluate(
        self, inv: Inventory, usage: UsageSummary, settings: PostureSettings
    ) -> Iterator[Finding]:
        limit = timedelta(days=settings.max_agent_lifetime_days)
        for agent in inv.agents:
            if not in_service(agent):
                continue
            never = agent.expires_at.year >= NO_EXPIRY_YEAR
            beyond = agent.expires_at > max(agent.created_at, inv.now) + limit
            if not (never or beyond):
                continue
            yield Finding(
                self.id,
                Severity.HIGH if never else Severity.MEDIUM,
                SubjectKind.AGENT,
                agent.id,
                f"agent {agent.name} "
                + ("never expires" if never else "expires beyond the maximum lifetime"),
                {
                    "name": agent.name,
                    "expires_at": when(agent.expires_at),
                    "no_expiry": never,
                    "max_agent_lifetime_days": settings.max_agent_lifetime_days,
                },
                Remediation.REVIEW,
                {},
                agent=agent.id,
            )
