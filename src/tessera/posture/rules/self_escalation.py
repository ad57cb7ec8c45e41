"""Self-escalation: an agent created identities or credentials, changed grants, or wrote
relationships naming itself (the actor of the ledger record is the agent). Agents have no
business changing the registry that bounds them; the fix suspends the agent."""

from __future__ import annotations

from collections.abc import Iterator

from tessera.identity.model import AgentStatus
from tessera.posture.finding import Finding, Remediation, Severity, SubjectKind
from tessera.posture.inventory import ActorAction, Inventory, UsageSummary
from tessera.posture.rules._common import when
from tessera.posture.settings import PostureSettings

MAX_LISTED = 20


class SelfEscalation:
    id = "self_escalation"
    title = "Agent changed identities or granted itself relationships"

    def evaluate(
        self, inv: Inventory, usage: UsageSummary, settings: PostureSettings
    ) -> Iterator[Finding]:
        agents = {a.id: a for a in inv.agents}
        by_actor: dict[str, list[ActorAction]] = {}
        for action in sorted(usage.actor_actions, key=lambda a: a.time):
            by_actor.setdefault(action.actor, []).append(action)
        for actor, actions in sorted(by_actor.items()):
            agent = agents.get(actor)
            live = agent is not None and agent.status != AgentStatus.DECOMMISSIONED
            self_grants = sum(1 for a in actions if a.self_grant)
            yield Finding(
                self.id,
                Severity.CRITICAL,
                SubjectKind.AGENT,
                actor,
                f"agent {agent.name if agent else actor} made {len(actions)} registry or"
                f" relationship change(s)" + (f", {self_grants} for itself" if self_grants else ""),
                {
                    "actions": [
                        {
                            "event_type": a.event_type,
                            "subject": a.subject,
                            "time": when(a.time),
                            "self_grant": a.self_grant,
                        }
                        for a in actions[:MAX_LISTED]
                    ],
                    "count": len(actions),
                },
                Remediation.SUSPEND if live else Remediation.REVIEW,
                {"agent": actor} if live else {},
                agent=actor,
            )
