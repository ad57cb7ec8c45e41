"""Identity records: the four layers of DESIGN section 1 plus services and credentials.

Operator (who deploys), model artifact (which exact weights, by digest), agent (a registered
client with an owner, purpose, expiry and ceiling) and user (on whose behalf). Sessions are
the fourth layer and belong to the token service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from tessera.clock import iso
from tessera.identity.ceiling import Ceiling


class OperatorStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class UserStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class ServiceStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class AgentStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DECOMMISSIONED = "decommissioned"


class ModelStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


class CredentialKind(StrEnum):
    JWK = "jwk"  # public key for private_key_jwt
    SPIFFE = "spiffe"  # SPIFFE ID accepted from a configured trust bundle
    LEGACY_SECRET = "legacy_secret"  # client_secret_basic, stored hashed, flagged by posture  # noqa: S105 - a name, not a secret
    API_KEY = "api_key"  # services only, for AuthZEN interop; stored hashed


class CredentialStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


# Scopes a service may be registered with (DESIGN 6b).
SERVICE_SCOPES = frozenset({"pdp.evaluate", "introspect", "ssf.manage", "approvals.request"})


@dataclass(frozen=True)
class Operator:
    id: str
    name: str
    display_name: str
    status: OperatorStatus
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "display_name": self.display_name,
            "status": self.status.value,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True)
class User:
    id: str
    username: str
    display_name: str
    email: str | None
    status: UserStatus
    grants: Ceiling
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "display_name": self.display_name,
            "email": self.email,
            "status": self.status.value,
            "grants": self.grants.to_dict(),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True)
class Service:
    id: str
    name: str
    description: str
    scopes: frozenset[str]
    status: ServiceStatus
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "scopes": sorted(self.scopes),
            "status": self.status.value,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True)
class Agent:
    id: str  # also the OAuth client_id
    name: str
    operator_id: str
    owner_user_id: str
    purpose: str
    expires_at: datetime
    ceiling: Ceiling
    attestation_required: bool
    status: AgentStatus
    status_reason: str | None
    created_at: datetime
    updated_at: datetime

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "client_id": self.id,
            "name": self.name,
            "operator_id": self.operator_id,
            "owner_user_id": self.owner_user_id,
            "purpose": self.purpose,
            "expires_at": iso(self.expires_at),
            "ceiling": self.ceiling.to_dict(),
            "attestation_required": self.attestation_required,
            "status": self.status.value,
            "status_reason": self.status_reason,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True)
class ModelArtifact:
    id: str
    operator_id: str
    name: str
    version: str
    digest: str
    signature: str | None
    status: ModelStatus
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "operator_id": self.operator_id,
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "signature": self.signature,
            "status": self.status.value,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True)
class Credential:
    """A way for an agent, service or operator to prove itself. Secrets only as hashes."""

    id: str
    owner_kind: str  # agent | service | operator
    owner_id: str
    kind: CredentialKind
    status: CredentialStatus
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    public_jwk: dict[str, Any] | None = None
    jkt: str | None = None  # RFC 7638 thumbprint of public_jwk
    spiffe_id: str | None = None
    secret_hash: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        # secret_hash never leaves the store.
        return {
            "id": self.id,
            "owner_kind": self.owner_kind,
            "owner_id": self.owner_id,
            "kind": self.kind.value,
            "status": self.status.value,
            "public_jwk": self.public_jwk,
            "jkt": self.jkt,
            "spiffe_id": self.spiffe_id,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at) if self.expires_at else None,
            "last_used_at": iso(self.last_used_at) if self.last_used_at else None,
        }
