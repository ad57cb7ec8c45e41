"""Shadow agents: client ids that tried to get tokens (failed client authentication at the
token endpoint, ``oauth.client_auth_failed``) or presented agent tokens to a decision point
(``pdp.*`` denied with ``invalid_token``) without being registered. Something is running
as an agent that nobody registered, or a decommissioned agent's workload is still up."""

from __future__ import annotations

from collections.abc import Iterator

from tessera.identity.model import AgentStatus
from tessera.posture.finding import Finding, Remediation, Severity, SubjectKind
from tessera.posture.inventory import Inventory, UsageSummary
from tessera.posture.rules._common import when
from tessera.posture.settings import PostureSettings

MAX_REPORTED = 1000


class ShadowClients:
    id = "shadow_client"
    title = "Unregistered client calling token endpoint or decision point"

    def evaluate(
        self, inv: Inventory, usage: UsageSummary, settings: PostureSettings
    ) -> Iterator[Finding]:
        # A decommissioned agent still trying is a shadow too: its workload outlived it.
        known = {a.id for a in inv.agents if a.status != AgentStatus.DECOMMISSIONED}
        known |= inv.services
        unknown = [(c, seen) for c, seen in usage.failed_clients.items() if c not in known]
        # Anyone can make the token endpoint fail with made-up client ids (within its rate
        # limit): report the most active ones, never an unbounded number of rows.
        unknown.sort(key=lambda item: (-item[1].count, item[0]))
        for client, seen in unknown[:MAX_REPORTED]:
            retired = client in inv.agent_ids
            yield Finding(
                self.id,
                Severity.HIGH if seen.count >= 10 or retired else Severity.MEDIUM,
                SubjectKind.CLIENT,
                client,
                f"{'decommissioned agent' if retired else 'unregistered client'} {client}"
                f" seen {seen.count} time(s)",
                {
                    "decommissioned_agent": retired,
                    "count": seen.count,
                    "first_seen": when(seen.first),
                    "last_seen": when(seen.last),
                    "sources": sorted(seen.sources),
                    "reasons": sorted(seen.reasons),
                },
                Remediation.REVIEW,
                {},
            )
