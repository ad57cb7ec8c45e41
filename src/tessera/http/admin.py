"""Admin REST API ``/admin/v1``: the same operations as the CLI, behind an admin token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tessera.app import Tessera
from tessera.errors import Unauthenticated
from tessera.http import schemas as s
from tessera.identity.model import Agent, AgentStatus
from tessera.identity.service import Written
from tessera.signals.events import encode_consistency_token

CT_HEADER = "Tessera-Consistency-Token"
_bearer = HTTPBearer(auto_error=False, description="admin token from `tessera init`")


def get_tessera(request: Request) -> Tessera:
    app: Tessera = request.app.state.tessera
    return app


TesseraDep = Annotated[Tessera, Depends(get_tessera)]


def require_admin(
    tessera: TesseraDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The calling admin token's id as the actor; one opaque 401 for every failure."""
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthenticated("an admin token is required")
    token_id = tessera.admin_tokens.verify(creds.credentials)
    if token_id is None:
        raise Unauthenticated("an admin token is required")
    return f"admin:{token_id}"


Actor = Annotated[str, Depends(require_admin)]
router = APIRouter(prefix="/admin/v1", tags=["admin"])


def _ct(response: Response, written: Written[Any]) -> None:
    if written.consistency_token:
        response.headers[CT_HEADER] = written.consistency_token


def _agent_out(
    tessera: Tessera, agent: Agent, effective: AgentStatus | None = None
) -> dict[str, Any]:
    body = agent.to_dict()
    status = effective or tessera.identity.effective_agent_status(agent)
    body["effective_status"] = status.value
    return body


# -- operators ---------------------------------------------------------------------------


@router.post("/operators", status_code=201, response_model=s.OperatorOut)
def create_operator(
    body: s.OperatorCreate, tessera: TesseraDep, actor: Actor, response: Response
) -> dict[str, Any]:
    w = tessera.identity.create_operator(body.name, body.display_name, actor=actor)
    _ct(response, w)
    return w.value.to_dict()


@router.get("/operators", response_model=list[s.OperatorOut])
def list_operators(tessera: TesseraDep, _actor: Actor) -> list[dict[str, Any]]:
    return [o.to_dict() for o in tessera.identity.list_operators()]


@router.get("/operators/{ref}", response_model=s.OperatorOut)
def get_operator(ref: str, tessera: TesseraDep, _actor: Actor) -> dict[str, Any]:
    return tessera.identity.get_operator(ref).to_dict()


@router.post("/operators/{ref}/suspend", response_model=s.OperatorOut)
def suspend_operator(
    ref: str, body: s.StatusChange, tessera: TesseraDep, actor: Actor, response: Response
) -> dict[str, Any]:
    w = tessera.identity.suspend_operator(ref, body.reason, actor=actor)
    _ct(response, w)
    return w.value.to_dict()


@router.post("/operators/{ref}/resume", response_model=s.OperatorOut)
def resume_operator(
    ref: str, tessera: TesseraDep, actor: Actor, response: Response
) -> dict[str, Any]:
    w = tessera.identity.resume_operator(ref, actor=actor)
    _ct(response, w)
    return w.value.to_dict()


# -- users -------------------------------------------------------------------------------


@router.post("/users", status_code=201, response_model=s.UserOut)
def create_user(
    body: s.UserCreate, tessera: TesseraDep, actor: Actor, response: Response
) -> dict[str, Any]:
    w = tessera.identity.create_user(
        body.username,
        display_name=body.display_name,
        email=body.email,
        grants=body.grants.model_dump() if body.grants else None,
        actor=actor,
    )
    _ct(response, w)
    return w.value.to_dict()


@router.get("/users", response_model=list[s.UserOut])
def list_users(tessera: TesseraDep, _actor: Actor) -> list[dict[str, Any]]:
    return [u.to_dict() for u in tessera.identity.list_users()]


@router.get("/users/{ref}", response_model=s.UserOut)
def get_user(ref: str, tessera: TesseraDep, _actor: Actor) -> dict[str, Any]:
    return tessera.identity.get_user(ref).to_dict()


@router.post("/users/{ref}/disable", response_model=s.UserOut)
def disable_user(ref: str, tessera: TesseraDep, actor: Actor, response: Response) -> dict[str, Any]:
    w = tessera.identity.disable_user(ref, actor=actor)
    _ct(response, w)
    return w.value.to_dict()


# -- services ----------------------------------------------------------------------------


@router.post("/services", status_code=201, response_model=s.ServiceRegistered)
def register_service(
    body: s.ServiceCreate, tessera: TesseraDep, actor: Actor, response: Response
) -> dict[str, Any]:
    w = tessera.identity.register_service(
        body.name,
        description=body.description,
        scopes=list(body.scopes),
        jwk=body.jwk.model_dump(exclude_none=True) if body.jwk else None,
        api_key=body.api_key,
        actor=actor,
    )
    _ct(response, w)
    reg = w.value
    return {
        "service": reg.service.to_dict(),
        "credentials": [c.to_dict() for c in reg.credentials],
        "api_key": {"credential_id": reg.api_key.credential_id, "secret": reg.api_key.secret}
        if reg.api_key
        else None,
    }


@router.get("/services", response_model=list[s.ServiceOut])
def list_services(tessera: TesseraDep, _actor: Actor) -> list[dict[str, Any]]:
    return [x.to_dict() for x in tessera.identity.list_services()]


@router.get("/services/{ref}", response_model=s.ServiceOut)
def get_service(ref: str, tessera: TesseraDep, _actor: Actor) -> dict[str, Any]:
    return tessera.identity.get_service(ref).to_dict()


# -- agents ------------------------------------------------------------------------------


@router.post("/agents", status_code=201, response_model=s.AgentRegistered)
def register_agent(
    body: s.AgentCreate, tessera: TesseraDep, actor: Actor, response: Response
) -> dict[str, Any]:
    w = tessera.identity.register_agent(
        body.name,
        operator=body.operator,
        owner=body.owner,
        purpose=body.purpose,
        expires_at=body.expires_at,
        expires_in_days=body.expires_in_days,
        ceiling=body.ceiling.model_dump() if body.ceiling else None,
        attestation_required=body.attestation_required,
        jwk=body.jwk.model_dump(exclude_none=True) if body.jwk else None,
        spiffe_id=body.spiffe_id,
        legacy_secret=body.legacy_secret,
        actor=actor,
    )
    _ct(response, w)
    reg = w.value
    return {
        "agent": _agent_out(tessera, reg.agent),
        "credentials": [c.to_dict() for c in reg.credentials],
        "client_secret": {"credential_id": reg.secret.credential_id, "secret": reg.secret.secret}
        if reg.secret
        else None,
    }


@router.get("/agents", response_model=list[s.AgentOut])
def list_agents(
    tessera: TesseraDep,
    _actor: Actor,
    operator: Annotated[str | None, Query(max_length=128)] = None,
    status: Annotated[str | None, Query(pattern="^(active|suspended|decommissioned)$")] = None,
) -> list[dict[str, Any]]:
    agents = tessera.identity.list_agents(operator=operator, status=status)
    statuses = tessera.identity.effective_agent_statuses(agents)
    return [_agent_out(tessera, a, st) for a, st in zip(agents, statuses, strict=True)]


@router.get("/agents/{ref}", response_model=s.AgentOut)
def get_agent(ref: str, tessera: TesseraDep, _actor: Actor) -> dict[str, Any]:
    return _agent_out(tessera, tessera.identity.get_agent(ref))


@router.post("/agents/{ref}/suspend", response_model=s.AgentOut)
def suspend_agent(
    ref: str, body: s.StatusChange, tessera: TesseraDep, actor: Actor, response: Response
) -> dict[str, Any]:
    w = tessera.identity.suspend_agent(ref, body.reason, actor=actor)
    _ct(response, w)
    return _agent_out(tessera, w.value)


@router.post("/agents/{ref}/resume", response_model=s.AgentOut)
def resume_agent(ref: str, tessera: TesseraDep, actor: Actor, response: Response) -> dict[str, Any]:
    w = tessera.identity.resume_agent(ref, actor=actor)
    _ct(response, w)
    return _agent_out(tessera, w.value)


@router.post("/agents/{ref}/decommission", response_model=s.AgentOut)
def decommission_agent(
    ref: str, body: s.StatusChange, tessera: TesseraDep, actor: Actor, response: Response
) -> dict[str, Any]:
    w = tessera.identity.decommission_agent(ref, body.reason, actor=actor)
    _ct(response, w)
    return _agent_out(tessera, w.value)


@router.get("/agents/{ref}/credentials", response_model=list[s.CredentialOut])
def list_agent_credentials(ref: str, tessera: TesseraDep, _actor: Actor) -> list[dict[str, Any]]:
    return [c.to_dict() for c in tessera.identity.list_credentials("agent", ref)]


@router.post("/agents/{ref}/credentials", status_code=201, response_model=s.CredentialOut)
def add_agent_credential(
    ref: str, body: s.CredentialCreate, tessera: TesseraDep, actor: Actor, response: Response
) -> dict[str, Any]:
    w = tessera.identity.add_agent_credential(
        ref,
        jwk=body.jwk.model_dump(exclude_none=True) if body.jwk else None,
        spiffe_id=body.spiffe_id,
        actor=actor,
    )
    _ct(response, w)
    return w.value.to_dict()


# -- models ------------------------------------------------------------------------------


@router.post("/models", status_code=201, response_model=s.ModelOut)
def register_model(
    body: s.ModelCreate, tessera: TesseraDep, actor: Actor, response: Response
) -> dict[str, Any]:
    w = tessera.identity.register_model(
        body.operator,
        body.name,
        body.version,
        body.digest,
        signature=body.signature,
        spiffe_ids=list(body.spiffe_ids),
        actor=actor,
    )
    _ct(response, w)
    return w.value.to_dict()


@router.get("/models", response_model=list[s.ModelOut])
def list_models(
    tessera: TesseraDep,
    _actor: Actor,
    operator: Annotated[str | None, Query(max_length=128)] = None,
) -> list[dict[str, Any]]:
    return [m.to_dict() for m in tessera.identity.list_models(operator)]


@router.get("/models/{ref}", response_model=s.ModelOut)
def get_model(ref: str, tessera: TesseraDep, _actor: Actor) -> dict[str, Any]:
    return tessera.identity.get_model(ref).to_dict()


@router.post("/models/{ref}/revoke", response_model=s.ModelOut)
def revoke_model(
    ref: str, body: s.StatusChange, tessera: TesseraDep, actor: Actor, response: Response
) -> dict[str, Any]:
    w = tessera.identity.revoke_model(ref, body.reason, actor=actor)
    _ct(response, w)
    return w.value.to_dict()


# -- keys and events ---------------------------------------------------------------------


@router.get("/keys", response_model=list[s.KeyOut])
def list_keys(tessera: TesseraDep, _actor: Actor) -> list[dict[str, Any]]:
    now = tessera.clock.now()
    return [k.to_dict(now) for k in tessera.keyring.list()]


@router.post("/keys/rotate", response_model=s.KeyOut)
def rotate_keys(body: s.KeyRotate, tessera: TesseraDep, actor: Actor) -> dict[str, Any]:
    rec = tessera.keyring.rotate(body.alg, actor=actor)
    return rec.to_dict(tessera.clock.now())


@router.get("/events", response_model=s.EventPage)
def list_events(
    tessera: TesseraDep,
    _actor: Actor,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Read the event log after a sequence number (what nodes and receivers tail)."""
    events = tessera.store.read_events_after(after, limit)
    head = tessera.store.event_head()
    return {
        "events": [e.to_dict() for e in events],
        "next_after": events[-1].seq if events else after,
        "head_consistency_token": encode_consistency_token(head) if head else None,
    }


# -- sessions ----------------------------------------------------------------------------


@router.get("/sessions", response_model=list[s.SessionOut])
def list_sessions(
    tessera: TesseraDep,
    _actor: Actor,
    agent: Annotated[str | None, Query(max_length=128)] = None,
    status: Annotated[str | None, Query(pattern="^(active|revoked)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    return [
        r.to_dict() for r in tessera.sessions.list_sessions(agent=agent, status=status, limit=limit)
    ]


@router.get("/sessions/{sid}", response_model=s.SessionDetail)
def get_session(sid: str, tessera: TesseraDep, _actor: Actor) -> dict[str, Any]:
    rec, budgets, live, reason = tessera.sessions.get_session(sid)
    return {**rec.to_dict(), "budgets_remaining": budgets, "live": live, "live_reason": reason}


@router.post("/sessions/{sid}/revoke", response_model=s.SessionsRevoked)
def revoke_session(
    sid: str, body: s.StatusChange, tessera: TesseraDep, actor: Actor, response: Response
) -> dict[str, Any]:
    """Revoke a session and its whole delegation subtree."""
    revoked = tessera.sessions.revoke_session(sid, body.reason or "revoked by admin", actor=actor)
    if revoked:  # this node's last write: at least as late as the revocation (signals)
        response.headers[CT_HEADER] = encode_consistency_token(tessera.store.last_written_seq)
    return {"revoked": revoked}


@router.post("/operators/{ref}/keys", status_code=201, response_model=s.CredentialOut)
def add_operator_key(
    ref: str, body: s.OperatorKeyCreate, tessera: TesseraDep, actor: Actor, response: Response
) -> dict[str, Any]:
    """Register an operator's public key (it signs model attestations)."""
    w = tessera.identity.add_operator_key(ref, body.jwk.model_dump(exclude_none=True), actor=actor)
    _ct(response, w)
    return w.value.to_dict()
