"""Request and response bodies of the admin API (OpenAPI at /openapi.json)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"
REF = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CeilingIn(Strict):
    tools: list[str] = Field(
        default_factory=list, max_length=1000, description="server/tool or server/*"
    )
    data_scopes: list[str] = Field(
        default_factory=list, max_length=1000, description="type:id or type:*"
    )
    models: list[str] = Field(
        default_factory=list, max_length=100, description="model digests sha256:<hex>"
    )
    may_delegate_to: list[str] = Field(default_factory=list, max_length=1000)
    budgets: dict[str, int] = Field(default_factory=dict)
    max_session_lifetime: int = Field(900, ge=60, le=3600)
    max_delegation_depth: int = Field(5, ge=0, le=25)
    dpop_required: bool = True


class CeilingOut(BaseModel):
    tools: list[str]
    data_scopes: list[str]
    models: list[str]
    may_delegate_to: list[str]
    budgets: dict[str, int]
    max_session_lifetime: int
    max_delegation_depth: int
    dpop_required: bool


class OperatorCreate(Strict):
    name: str = Field(pattern=NAME)
    display_name: str | None = Field(None, min_length=1, max_length=200)


class StatusChange(Strict):
    reason: str | None = Field(None, max_length=200)


class OperatorOut(BaseModel):
    id: str
    name: str
    display_name: str
    status: Literal["active", "suspended"]
    created_at: str
    updated_at: str


class UserCreate(Strict):
    username: str = Field(pattern=NAME)
    display_name: str | None = Field(None, min_length=1, max_length=200)
    email: str | None = Field(None, max_length=320)
    grants: CeilingIn | None = None


class UserOut(BaseModel):
    id: str
    username: str
    display_name: str
    email: str | None
    status: Literal["active", "disabled"]
    grants: CeilingOut
    created_at: str
    updated_at: str


class PublicJwk(BaseModel):
    model_config = ConfigDict(extra="allow")
    kty: Literal["EC", "OKP"]
    crv: Literal["P-256", "Ed25519"]
    x: str = Field(max_length=100)
    y: str | None = Field(None, max_length=100)


class ServiceCreate(Strict):
    name: str = Field(pattern=NAME)
    description: str = Field("", max_length=500)
    scopes: list[Literal["pdp.evaluate", "introspect", "ssf.manage", "approvals.request"]] = Field(
        default_factory=list, max_length=10
    )
    jwk: PublicJwk | None = None
    api_key: bool = False


class CredentialOut(BaseModel):
    id: str
    owner_kind: str
    owner_id: str
    kind: Literal["jwk", "spiffe", "legacy_secret", "api_key"]
    status: Literal["active", "disabled"]
    public_jwk: dict[str, Any] | None
    jkt: str | None
    spiffe_id: str | None
    created_at: str
    expires_at: str | None
    last_used_at: str | None


class ServiceOut(BaseModel):
    id: str
    name: str
    description: str
    scopes: list[str]
    status: Literal["active", "disabled"]
    created_at: str
    updated_at: str


class IssuedSecretOut(BaseModel):
    credential_id: str
    secret: str = Field(description="shown once; only its hash is stored")


class ServiceRegistered(BaseModel):
    service: ServiceOut
    credentials: list[CredentialOut]
    api_key: IssuedSecretOut | None


class AgentCreate(Strict):
    name: str = Field(pattern=NAME)
    operator: str = Field(pattern=REF, description="operator id or name")
    owner: str = Field(pattern=REF, description="owner user id or username")
    purpose: str = Field(min_length=1, max_length=500)
    expires_at: datetime | None = None
    expires_in_days: int | None = Field(None, ge=1, le=3650)
    ceiling: CeilingIn | None = None
    attestation_required: bool = True
    jwk: PublicJwk | None = None
    spiffe_id: str | None = Field(None, max_length=2048)
    legacy_secret: bool = False


class AgentOut(BaseModel):
    id: str
    client_id: str
    name: str
    operator_id: str
    owner_user_id: str
    purpose: str
    expires_at: str
    ceiling: CeilingOut
    attestation_required: bool
    status: Literal["active", "suspended", "decommissioned"]
    effective_status: Literal["active", "suspended", "decommissioned"]
    status_reason: str | None
    created_at: str
    updated_at: str


class AgentRegistered(BaseModel):
    agent: AgentOut
    credentials: list[CredentialOut]
    client_secret: IssuedSecretOut | None


class CredentialCreate(Strict):
    jwk: PublicJwk | None = None
    spiffe_id: str | None = Field(None, max_length=2048)


class ModelCreate(Strict):
    operator: str = Field(pattern=REF)
    name: str = Field(pattern=NAME)
    version: str = Field(min_length=1, max_length=64)
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    signature: str | None = Field(None, max_length=4096)
    spiffe_ids: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="workloads whose JWT-SVID attests this model",
    )


class ModelOut(BaseModel):
    id: str
    operator_id: str
    name: str
    version: str
    digest: str
    signature: str | None
    status: Literal["active", "revoked"]
    created_at: str
    updated_at: str


class KeyOut(BaseModel):
    kid: str
    alg: str
    status: Literal["active", "retired"]
    created_at: str
    retired_at: str | None
    publish_until: str | None
    published: bool


class KeyRotate(Strict):
    alg: Literal["ES256", "EdDSA"] = "ES256"


class EventOut(BaseModel):
    seq: int
    type: str
    subject: str
    payload: dict[str, Any]
    actor: str
    created_at: str
    consistency_token: str


class EventPage(BaseModel):
    events: list[EventOut]
    next_after: int
    head_consistency_token: str | None


class Health(BaseModel):
    status: str


class Readiness(Health):
    audit_checkpoint_webhook: str | None = Field(
        default=None,
        description="with a checkpoint webhook: `ok`, or `behind: N undelivered` (the node "
        "stays ready; checkpoints are retried)",
    )


class SessionOut(BaseModel):
    sid: str
    jti: str
    agent_id: str
    user_id: str | None
    operator_id: str
    model_id: str | None
    model_digest: str | None
    parent_sid: str | None
    root_sid: str
    depth: int
    audience: list[str]
    authorization_details: dict[str, Any]
    act: dict[str, Any] | None
    cnf_jkt: str | None
    issued_at: str | None
    expires_at: str | None
    status: Literal["active", "revoked"]
    revoked_at: str | None
    revoked_reason: str | None


class SessionDetail(SessionOut):
    budgets_remaining: dict[str, int]
    live: bool
    live_reason: str


class SessionsRevoked(BaseModel):
    revoked: list[str]


class OperatorKeyCreate(Strict):
    jwk: PublicJwk
