"""Client authentication at the token, introspection and revocation endpoints.

- ``private_key_jwt`` (RFC 7523 §2.2/§3, OpenID Connect Core §9): a JWT signed with one of
  the client's registered keys; ``iss`` = ``sub`` = client id; ``aud`` exactly one value,
  the issuer or the token endpoint URL (DESIGN 6b); ``exp`` required and near; ``jti``
  single-use across nodes (the replay cache).
- ``client_secret_basic`` (RFC 6749 §2.3.1) only for credentials registered as legacy
  secrets.

Every failure is one ``invalid_client`` (401); the reason goes to ``detail`` for the audit.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from tessera.crypto.errors import JwksInvalid, TokenInvalid
from tessera.crypto.hashing import verify_password_secret
from tessera.crypto.jws import JwksKeys, verify_jwt
from tessera.identity.lifecycle import agent_unusable_reason
from tessera.identity.model import (
    Agent,
    Credential,
    CredentialKind,
    CredentialStatus,
    Operator,
    Service,
    ServiceStatus,
)
from tessera.tokens.oauth_errors import OAuthError
from tessera.tokens.peek import active_jwks, unverified_claim

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
CLIENT_ALGS = ("ES256", "EdDSA")
MAX_ASSERTION_LIFETIME = 300 + 60  # seconds an assertion may be valid into the future


@dataclass(frozen=True)
class AuthenticatedClient:
    kind: str  # agent | service
    client_id: str
    agent: Agent | None
    service: Service | None
    method: str  # private_key_jwt | client_secret_basic
    credential_id: str
    key_jkt: str | None  # thumbprint of the key that signed the assertion
    spiffe_id: str | None = None  # the verified SPIFFE ID (JWT-SVID authentication)


def _fail(detail: str) -> OAuthError:
    return OAuthError("invalid_client", "client authentication failed", detail=detail)


@dataclass
class ClientDirectory:
    """What client authentication needs to look up, bound to one store transaction."""

    find_agent: Callable[[str], Agent | None]
    find_service: Callable[[str], Service | None]
    credentials_of: Callable[[str, str], list[Credential]]
    find_operator: Callable[[str], Operator | None]
    use_jti_once: Callable[[str, datetime], bool]
    find_agent_by_spiffe_id: Callable[[str], Agent | None] | None = None
    spiffe_bundles: Any = None


def _resolve(
    directory: ClientDirectory, client_id: str
) -> tuple[str, Agent | None, Service | None]:
    if client_id.startswith("agt_"):
        agent = directory.find_agent(client_id)
        if agent is None:
            raise _fail(f"unknown agent {client_id}")
        return "agent", agent, None
    if client_id.startswith("svc_"):
        service = directory.find_service(client_id)
        if service is None or service.status != ServiceStatus.ACTIVE:
            raise _fail(f"unknown or disabled service {client_id}")
        return "service", None, service
    raise _fail("client_id is neither an agent nor a service id")


def authenticate(
    form: Mapping[str, str],
    authorization: str | None,
    *,
    directory: ClientDirectory,
    issuer: str,
    token_endpoint: str,
    now: datetime,
) -> AuthenticatedClient:
    """Authenticate the calling client (RFC 6749 §2.3, RFC 7523 §3)."""
    assertion = form.get("client_assertion")
    if assertion is not None:
        if authorization:
            raise _fail("more than one client authentication method")
        if form.get("client_assertion_type") == JWT_SPIFFE:
            return _jwt_svid(
                assertion,
                form.get("client_id"),
                directory=directory,
                audiences=(issuer, token_endpoint),
                now=now,
            )
        if form.get("client_assertion_type") != JWT_BEARER:
            raise _fail("unsupported client_assertion_type")
        return _private_key_jwt(
            assertion,
            form.get("client_id"),
            directory=directory,
            issuer=issuer,
            token_endpoint=token_endpoint,
            now=now,
        )
    if authorization and authorization[:6].lower() == "basic ":
        return _client_secret_basic(
            authorization[6:], form.get("client_id"), directory=directory, now=now
        )
    raise _fail("no client authentication")


def _jwt_svid(
    svid: str,
    form_client_id: str | None,
    *,
    directory: ClientDirectory,
    audiences: tuple[str, str],
    now: datetime,
) -> AuthenticatedClient:
    if not directory.spiffe_bundles or directory.find_agent_by_spiffe_id is None:
        raise _fail("SPIFFE client authentication is not configured")
    spiffe_id = directory.spiffe_bundles.verify(svid, audiences=audiences, now=now.timestamp())
    agent = directory.find_agent_by_spiffe_id(spiffe_id)
    if agent is None:
        raise _fail(f"no agent registered with {spiffe_id}")
    if form_client_id is not None and form_client_id != agent.id:
        raise _fail("client_id does not match the SPIFFE ID's agent")
    _check_agent(directory, agent, now)
    return AuthenticatedClient(
        "agent", agent.id, agent, None, "spiffe_jwt", "", None, spiffe_id=spiffe_id
    )


def _check_agent(directory: ClientDirectory, agent: Agent, now: datetime) -> None:
    why = agent_unusable_reason(agent, directory.find_operator(agent.operator_id), now)
    if why is not None:
        raise _fail(f"agent {agent.id}: {why}")


def _private_key_jwt(
    assertion: str,
    form_client_id: str | None,
    *,
    directory: ClientDirectory,
    issuer: str,
    token_endpoint: str,
    now: datetime,
) -> AuthenticatedClient:
    unverified_iss = unverified_claim(assertion, "iss", max_len=64)
    if unverified_iss is None:
        raise _fail("malformed client assertion: no iss")
    if form_client_id is not None and form_client_id != unverified_iss:
        raise _fail("client_id does not match the assertion issuer")
    kind, agent, service = _resolve(directory, unverified_iss)
    owner_id = agent.id if agent else service.id if service else ""
    creds = directory.credentials_of(kind, owner_id)
    jwks = active_jwks(creds, now)
    if not jwks:
        raise _fail(f"{owner_id} has no active key")
    try:
        verified = verify_jwt(
            assertion,
            keys=JwksKeys(jwks),
            algorithms=CLIENT_ALGS,
            typ=None,
            issuer=owner_id,
            audience=None,
            now=now.timestamp(),
            require=("exp", "jti", "sub", "aud"),
        )
    except (TokenInvalid, JwksInvalid) as exc:
        raise _fail(f"client assertion rejected: {exc.detail}") from None
    claims, header = verified.claims, verified.header
    typ = str(header.get("typ", "JWT")).lower()
    if typ not in {"jwt", "application/jwt", "client-authentication+jwt"}:
        raise _fail(f"client assertion typ {typ!r} not accepted")
    if claims.get("sub") != owner_id:
        raise _fail("client assertion sub differs from iss")
    aud = claims.get("aud")
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    if aud not in (issuer, token_endpoint):
        raise _fail("client assertion aud must be exactly the issuer or the token endpoint")
    exp = float(claims["exp"])
    if exp - now.timestamp() > MAX_ASSERTION_LIFETIME:
        raise _fail("client assertion lifetime too long")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 8 <= len(jti) <= 200:
        raise _fail("client assertion jti missing or malformed")
    if agent is not None:
        _check_agent(directory, agent, now)
    # INVARIANT: single use, recorded only after every other check passed.
    if not directory.use_jti_once(f"{owner_id}:{jti}", datetime.fromtimestamp(exp + 60, UTC)):
        raise _fail("client assertion replayed")
    kid = verified.header.get("kid")
    signer = next((c for c in creds if c.jkt and c.jkt == kid), None)
    if signer is None and len(jwks) == 1:
        signer = next(c for c in creds if c.kind == CredentialKind.JWK and c.jkt == jwks[0]["kid"])
    return AuthenticatedClient(
        kind,
        owner_id,
        agent,
        service,
        "private_key_jwt",
        signer.id if signer else "",
        signer.jkt if signer else None,
    )


def _client_secret_basic(
    encoded: str, form_client_id: str | None, *, directory: ClientDirectory, now: datetime
) -> AuthenticatedClient:
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        raw_id, _, raw_secret = decoded.partition(":")
        client_id, secret = unquote(raw_id), unquote(raw_secret)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _fail("malformed Basic credentials") from None
    if form_client_id is not None and form_client_id != client_id:
        raise _fail("client_id does not match Basic credentials")
    kind, agent, _service = _resolve(directory, client_id)
    if agent is None:
        raise _fail("client_secret_basic is only for agents with legacy secrets")
    creds = [
        c
        for c in directory.credentials_of("agent", agent.id)
        if c.kind == CredentialKind.LEGACY_SECRET
        and c.status == CredentialStatus.ACTIVE
        and (c.expires_at is None or c.expires_at > now)
    ]
    match = next(
        (c for c in creds if c.secret_hash and verify_password_secret(secret, c.secret_hash)), None
    )
    if match is None:
        raise _fail("bad client secret")
    _check_agent(directory, agent, now)
    return AuthenticatedClient(kind, agent.id, agent, None, "client_secret_basic", match.id, None)
