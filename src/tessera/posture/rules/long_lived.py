"""Long-lived credentials: keys older than the rotation policy, and any legacy client
secret (a shared secret is a standing credential; DESIGN 1: no standing credentials).

The fix disables the credential when its owner has another fresh, non-secret credential
to fall back on; otherwise it needs a person to rotate first (``review``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from tessera.identity.model import AgentStatus, Credential, CredentialKind, CredentialStatus
from tessera.posture.finding import Finding, Remediation, Severity, SubjectKind
from tessera.posture.inventory import Inventory, UsageSummary
from tessera.posture.rules._common import when
from tessera.posture.settings import PostureSettings

_SECRETS = (CredentialKind.LEGACY_SECRET, CredentialKind.API_KEY)


class LongLivedCredentials:
    id = "long_lived_credential"
    title = "Legacy client secret or key older than the rotation policy"

    def evaluate(
        self, inv: Inventory, usage: UsageSummary, settings: PostureSettings
    ) -> Iterator[Finding]:
        cutoff = inv.now - timedelta(days=settings.key_rotation_days)
        live_agents = {a.id: a for a in inv.agents if a.status != AgentStatus.DECOMMISSIONED}
        for (kind, owner), creds in inv.credentials.items():
            if kind == "agent" and owner not in live_agents:
                continue
            active = [c for c in creds if c.status == CredentialStatus.ACTIVE]
            for cred in active:
                legacy = cred.kind == CredentialKind.LEGACY_SECRET
                old = cred.created_at < cutoff
                if not (legacy or old):
                    continue
                fresh = [c for c in active if c.id != cred.id and _fresh(c, cutoff)]
                fix = Remediation.DISABLE_CREDENTIAL if fresh else Remediation.REVIEW
                what = "legacy client secret" if legacy else f"{cred.kind.value} credential"
                yield Finding(
                    self.id,
                    Severity.HIGH if legacy else Severity.MEDIUM,
                    SubjectKind.CREDENTIAL,
                    cred.id,
                    f"{kind} {live_agents[owner].name if kind == 'agent' else owner}: {what} "
                    + ("in use" if legacy else f"older than {settings.key_rotation_days} days"),
                    {
                        "name": live_agents[owner].name if kind == "agent" else None,
                        "owner_kind": kind,
                        "owner": owner,
                        "kind": cred.kind.value,
                        "created_at": when(cred.created_at),
                        "last_used_at": when(cred.last_used_at),
                        "replacement": fresh[0].id if fresh else None,
                    },
                    fix,
                    {"credentials": [cred.id]} if fresh else {},
                    agent=owner if kind == "agent" else None,
                )


def _fresh(cred: Credential, cutoff: datetime) -> bool:
    return cred.kind not in _SECRETS and cred.created_at >= cutoff
