"""What the behaviour service needs from the store, as a narrow port, and its records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class StoredFinding:
    """A drift finding, posture-style: severity, evidence and a remediation."""

    id: str
    agent: str
    kind: str  # agent | model
    severity: str  # medium | high
    status: str  # open | resolved
    kl: float
    threshold: float
    window: int
    model_digest: str
    compared_to: str
    evidence: Mapping[str, Any]
    remediation: str
    created_at: datetime
    resolved_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "agent": self.agent,
            "kind": self.kind,
            "severity": self.severity,
            "status": self.status,
            "kl": self.kl,
            "threshold": self.threshold,
            "window": self.window,
            "model_digest": self.model_digest,
            "compared_to": self.compared_to,
            "evidence": dict(self.evidence),
            "remediation": self.remediation,
            "created_at": self.created_at.isoformat(),
            "resolved_at": None if self.resolved_at is None else self.resolved_at.isoformat(),
        }


class BehaviourRepo(Protocol):
    def save_state(
        self,
        kind: str,
        key: str,
        *,
        operator: str,
        model_digest: str,
        calls: int,
        level: str,
        state: Mapping[str, Any],
        now: datetime,
    ) -> None: ...

    def load_states(self, kind: str) -> list[tuple[str, dict[str, Any]]]: ...

    def get_state(self, kind: str, key: str) -> dict[str, Any] | None: ...

    def generations(self, keys: list[str]) -> dict[str, int]: ...

    def summaries(self) -> list[dict[str, Any]]: ...

    def open_finding(
        self,
        *,
        agent: str,
        kind: str,
        severity: str,
        kl: float,
        threshold: float,
        window: int,
        model_digest: str,
        compared_to: str,
        evidence: Mapping[str, Any],
        remediation: str,
        now: datetime,
    ) -> str: ...

    def resolve_findings(self, agent: str, kind: str | None, now: datetime) -> int: ...

    def findings(
        self, *, agent: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[StoredFinding]: ...


class SessionRevoker(Protocol):
    """Revokes a session (and its delegation subtree), stored and evented: the token
    service's ``SessionAuthority.revoke_session``."""

    def revoke_session(self, sid: str, reason: str, *, actor: str) -> list[str]: ...
