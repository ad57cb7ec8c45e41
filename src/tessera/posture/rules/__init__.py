"""Posture rules, one module each. A rule is pure: it reads the inventory snapshot, the
audit usage summary and the settings, and returns findings (values); it never writes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from tessera.posture.finding import Finding
from tessera.posture.inventory import Inventory, UsageSummary
from tessera.posture.settings import PostureSettings


class PostureRule(Protocol):
    id: str
    title: str

    def evaluate(
        self, inv: Inventory, usage: UsageSummary, settings: PostureSettings
    ) -> Iterable[Finding]: ...


def all_rules() -> list[PostureRule]:
    """Every rule, in report order."""
    from tessera.posture.rules import (
        attestation,
        delegation_depth,
        dormant,
        expired,
        expiry,
        long_lived,
        model_digest,
        orphaned,
        over_privileged,
        owner_rights,
        self_escalation,
        session_lifetime,
        shadow,
    )

    return [
        self_escalation.SelfEscalation(),
        model_digest.UnregisteredModelSessions(),
        shadow.ShadowClients(),
        orphaned.OrphanedAgents(),
        expired.ExpiredStillUsable(),
        owner_rights.CeilingExceedsOwner(),
        long_lived.LongLivedCredentials(),
        over_privileged.OverPrivilegedAgents(),
        delegation_depth.DelegationTooDeep(),
        session_lifetime.SessionsTooLong(),
        dormant.DormantAgents(),
        expiry.ExpiryBeyondMaximum(),
        attestation.WithoutAttestation(),
    ]


__all__ = ["PostureRule", "all_rules"]
