"""Expired agents or credentials that are still usable: an expired agent whose
credentials are still active, or a credential past its own expiry that is still active.

Authentication already refuses both (expiry is checked every time, DESIGN 6b); the finding
is about the standing credential that a bug, a clock error or a restored backup would turn
into access. The fix is to disable it."""

from __future__ import annotations

from collections.abc import Iterator

from tessera.identity.model import CredentialStatus
from tessera.posture.finding import Finding, Remediation, Severity, SubjectKind
from tessera.posture.inventory import Inventory, UsageSummary
from tessera.posture.rules._common import in_service, when
from tessera.posture.settings import PostureSettings


class ExpiredStillUsable:
    id = "expired_still_usable"
    title = "Expired agent or credential still active"

    def evaluate(
        self, inv: Inventory, usage: UsageSummary, settings: PostureSettings
    ) -> Iterator[Finding]:
        for agent in inv.agents:
            if not in_service(agent):
                continue
            active = [
                c for c in inv.credentials_of(agent.id) if c.status == CredentialStatus.ACTIVE
            ]
            if agent.is_expired(inv.now) and active:
                yield Finding(
                    self.id,
                    Severity.HIGH,
                    SubjectKind.AGENT,
                    agent.id,
                    f"agent {agent.name} expired but {len(active)} credential(s) are active",
                    {
                        "name": agent.name,
                        "expired_at": when(agent.expires_at),
                        "credentials": [c.id for c in active],
                    },
                    Remediation.DISABLE_CREDENTIAL,
                    {"credentials": [c.id for c in active]},
                    agent=agent.id,
                )
                continue
            for cred in active:
                if cred.expires_at is not None and cred.expires_at <= inv.now:
                    yield Finding(
                        self.id,
                        Severity.MEDIUM,
                        SubjectKind.CREDENTIAL,
                        cred.id,
                        f"credential {cred.id} of agent {agent.name} expired but is active",
                        {"kind": cred.kind.value, "expired_at": when(cred.expires_at)},
                        Remediation.DISABLE_CREDENTIAL,
                        {"credentials": [cred.id]},
                        agent=agent.id,
                    )
