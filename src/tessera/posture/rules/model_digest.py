"""Live sessions running a model digest that is not registered or has been revoked.

Issuance refuses such digests and revoking a model revokes its sessions (the lifecycle
cascade), so a finding here means something bypassed or predates those checks."""

from __future__ import annotations

from collections.abc import Iterator

from tessera.identity.model import ModelStatus
from tessera.posture.finding import Finding, Remediation, Severity, SubjectKind
from tessera.posture.inventory import Inventory, UsageSummary
from tessera.posture.settings import PostureSettings


class UnregisteredModelSessions:
    id = "unregistered_model_session"
    title = "Session running an unregistered or revoked model"

    def evaluate(
        self, inv: Inventory, usage: UsageSummary, settings: PostureSettings
    ) -> Iterator[Finding]:
        for s in inv.live_sessions:
            model = inv.models.get(s.model_digest) if s.model_digest else None
            if model is not None and model.status == ModelStatus.ACTIVE:
                continue
            state = "unregistered" if model is None else "revoked"
            yield Finding(
                self.id,
                Severity.CRITICAL,
                SubjectKind.SESSION,
                s.sid,
                f"session {s.sid} runs a {state} model",
                {"agent": s.agent_id, "model_digest": s.model_digest, "model_state": state},
                Remediation.REVOKE_SESSION,
                {"session": s.sid},
                agent=s.agent_id,
            )
