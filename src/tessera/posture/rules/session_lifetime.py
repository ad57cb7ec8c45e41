"""Live sessions longer than policy: the stored lifetime exceeds the posture maximum or
the agent's own ``max_session_lifetime`` (a session issued before the ceiling was lowered,
or by a misconfigured node)."""

from __future__ import annotations

from collections.abc import Iterator

from tessera.posture.finding import Finding, Remediation, Severity, SubjectKind
from tessera.posture.inventory import Inventory, UsageSummary
from tessera.posture.rules._common import when
from tessera.posture.settings import PostureSettings


class SessionsTooLong:
    id = "session_longer_than_policy"
    title = "Session lifetime longer than policy"

    def evaluate(
        self, inv: Inventory, usage: UsageSummary, settings: PostureSettings
    ) -> Iterator[Finding]:
        agents = {a.id: a for a in inv.agents}
        for s in inv.live_sessions:
            agent = agents.get(s.agent_id)
            limit = settings.max_session_lifetime
            if agent is not None:
                limit = min(limit, agent.ceiling.max_session_lifetime)
            lifetime = int((s.expires_at - s.issued_at).total_seconds())
            if lifetime <= limit:
                continue
            yield Finding(
                self.id,
                Severity.MEDIUM,
                SubjectKind.SESSION,
                s.sid,
                f"session {s.sid} lives {lifetime} s (policy {limit} s)",
                {
                    "agent": s.agent_id,
                    "lifetime": lifetime,
                    "limit": limit,
                    "expires_at": when(s.expires_at),
                },
                Remediation.REVOKE_SESSION,
                {"session": s.sid},
                agent=s.agent_id,
            )
