"""Stored sessions: what a token says must also be true in the store (DESIGN 4).

Introspection, revocation and the PDP read the stored session, so a leaked signing key or a
stolen token is bounded by revocation, not by ``exp``. Revoking a session revokes its whole
delegation subtree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from tessera.clock import iso


@dataclass(frozen=True)
class SessionRecord:
    sid: str
    jti: str
    token_hash: str
    agent_id: str
    user_id: str | None
    operator_id: str
    model_id: str | None
    model_digest: str | None
    parent_sid: str | None
    root_sid: str
    depth: int
    audience: tuple[str, ...]
    grant: Mapping[str, Any] = field(hash=False)  # the tessera_session details object
    act: Mapping[str, Any] | None = field(default=None, hash=False)
    cnf_jkt: str | None = None
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    status: str = "active"  # active | revoked
    revoked_at: datetime | None = None
    revoked_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "jti": self.jti,
            "agent_id": self.agent_id,
            "user_id": self.user_id,
            "operator_id": self.operator_id,
            "model_id": self.model_id,
            "model_digest": self.model_digest,
            "parent_sid": self.parent_sid,
            "root_sid": self.root_sid,
            "depth": self.depth,
            "audience": list(self.audience),
            "authorization_details": dict(self.grant),
            "act": self.act,
            "cnf_jkt": self.cnf_jkt,
            "issued_at": iso(self.issued_at) if self.issued_at else None,
            "expires_at": iso(self.expires_at) if self.expires_at else None,
            "status": self.status,
            "revoked_at": iso(self.revoked_at) if self.revoked_at else None,
            "revoked_reason": self.revoked_reason,
        }


class SessionRepo(Protocol):
    def add(self, rec: SessionRecord, budgets: Mapping[str, int]) -> None: ...
    def get(self, sid: str) -> SessionRecord | None: ...
    def find_by_token_hash(self, token_hash: str) -> SessionRecord | None: ...
    def query(
        self,
        *,
        agent_id: str | None = None,
        user_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[SessionRecord]: ...
    def remaining_budgets(self, sid: str) -> dict[str, int]: ...
    def carve(self, parent_sid: str, amounts: Mapping[str, int]) -> bool:
        """Move units out of the parent's remaining budget; False if any is short."""

    def revoke_subtree(self, sid: str, reason: str, now: datetime) -> list[str]: ...
    def revoke_where(
        self,
        *,
        agent_id: str | None = None,
        user_id: str | None = None,
        model_digest: str | None = None,
        operator_agents: list[str] | None = None,
        reason: str,
        now: datetime,
    ) -> list[str]: ...


class ReplayCache(Protocol):
    def use_once(self, kind: str, jti: str, expires_at: datetime) -> bool:
        """Record ``jti`` as used; False when it was already used (atomic across nodes)."""

    def use_all(self, items: list[tuple[str, str, datetime]]) -> bool:
        """Record every (kind, jti, expires_at) in one statement; False if any was used."""

    def used(self, items: list[tuple[str, str, datetime]]) -> list[tuple[str, str]]: ...
    def purge_expired(self, now: datetime) -> int: ...
