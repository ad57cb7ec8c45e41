"""Resource-server duties of the gateway (MCP authorization; RFC 9728, RFC 6750, RFC 9449).

- Protected resource metadata (RFC 9728 §3) for each fronted server, at
  ``/.well-known/oauth-protected-resource/mcp/<server>`` (the path of the resource appended
  to the well-known prefix, §3.1).
- 401 answers carry ``WWW-Authenticate: Bearer resource_metadata="…"`` (RFC 9728 §5.1) and a
  ``DPoP`` challenge with the accepted algorithms (RFC 9449 §7.1).
- The token's audience must be the server's canonical resource URI (RFC 8707 §2; MCP
  authorization "Token Audience Binding and Validation").
- DPoP-bound tokens need ``Authorization: DPoP`` and a proof for this request: ``htm``,
  ``htu`` (the canonical URI), ``ath`` = hash of the token, key = ``cnf.jkt``; proof ``jti``
  single use across nodes (shared replay cache). Bearer tokens (no ``cnf``) are accepted only
  when the agent's ceiling says ``dpop_required: false`` now (DESIGN 6b).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from tessera.pdp.agents import AgentSubject, AgentTokenRejected, Caller, SessionTokenVerifier
from tessera.tokens.oauth_errors import OAuthError
from tessera.tokens.proofs import check_dpop

DPOP_ALGS: Final = ("ES256", "EdDSA")
MAX_AUTHORIZATION: Final = 16_400


def canonical_resource(base: str, server: str) -> str:
    """The canonical URI of ``/mcp/<server>`` (RFC 8707 §2: no fragment, lower-case scheme
    and host, no trailing slash)."""
    return f"{base.rstrip('/')}/mcp/{server}"


def metadata_url(base: str, server: str) -> str:
    """RFC 9728 §3.1: the well-known prefix inserted between host and path."""
    return f"{base.rstrip('/')}/.well-known/oauth-protected-resource/mcp/{server}"


def resource_metadata(base: str, server: str, issuer: str) -> dict[str, Any]:
    """RFC 9728 §2 metadata (with RFC 9449 §5.2's DPoP members)."""
    return {
        "resource": canonical_resource(base, server),
        "authorization_servers": [issuer],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": list(DPOP_ALGS),
        "dpop_bound_access_tokens_required": False,
        "resource_name": f"Tessera MCP gateway: {server}",
    }


class Unauthorized(Exception):
    """A 401 (or 403 for ``insufficient_scope``): ``error`` is the RFC 6750 §3.1 code;
    ``detail`` is private (logs, audit), never sent."""

    def __init__(self, error: str | None, description: str, detail: str = "") -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.detail = detail


def challenges(meta_url: str, err: Unauthorized | None, nonce: str | None = None) -> list[str]:
    """``WWW-Authenticate`` values: a Bearer and a DPoP challenge (RFC 6750 §3, RFC 9449
    §7.1), both naming the metadata (RFC 9728 §5.1)."""
    extra = ""
    if err is not None and err.error is not None:
        extra = f', error="{err.error}", error_description="{err.description}"'
    return [
        f'Bearer resource_metadata="{meta_url}"{extra}',
        f'DPoP algs="{" ".join(DPOP_ALGS)}", resource_metadata="{meta_url}"{extra}',
    ]


@dataclass(frozen=True)
class Authenticated:
    agent: AgentSubject
    token: str
    jkt: str | None


class ResourceGuard:
    """Authenticates one HTTP request to ``/mcp/<server>``; synchronous (run off the loop)."""

    def __init__(
        self,
        verifier: SessionTokenVerifier,
        *,
        now: Callable[[], float],
        use_jti_once: Callable[[str, datetime], bool],
        dpop_required: Callable[[str], bool],
        nonces: Any = None,
    ) -> None:
        self._verifier = verifier
        self._now = now
        self._use_jti_once = use_jti_once
        self._dpop_required = dpop_required
        self.nonces = nonces

    def authenticate(
        self, method: str, resource: str, headers: Mapping[str, str], caller: Caller
    ) -> Authenticated:
        raw = headers.get("authorization")
        if not raw:
            raise Unauthorized(None, "authentication required")
        if len(raw) > MAX_AUTHORIZATION:
            raise Unauthorized("invalid_request", "the Authorization header is too long")
        scheme, _, token = raw.partition(" ")
        scheme, token = scheme.lower(), token.strip()
        if scheme not in ("bearer", "dpop") or not token or " " in token:
            raise Unauthorized("invalid_request", "use the Bearer or DPoP scheme")
        now = self._now()
        proof_header = headers.get("dpop")
        jkt: str | None = None
        if scheme == "dpop":
            try:
                proof = check_dpop(
                    proof_header,
                    htm=method,
                    htu=resource,
                    now=now,
                    nonces=self.nonces,
                    use_jti_once=self._use_jti_once,
                    access_token=token,
                )
            except OAuthError as exc:
                code = "use_dpop_nonce" if exc.code == "use_dpop_nonce" else "invalid_dpop_proof"
                raise Unauthorized(code, exc.message, exc.detail or "") from None
            if proof is None:
                raise Unauthorized("invalid_dpop_proof", "a DPoP proof is required")
            jkt = proof.jkt
        try:
            agent = self._verifier.verify({"token": token, "jkt": jkt}, "", {}, caller, now)
        except AgentTokenRejected as exc:
            raise Unauthorized(
                "invalid_token", "the access token is not valid", exc.detail
            ) from None
        claims = agent.claims
        # INVARIANT: the audience is exactly this resource, not merely the gateway service.
        if resource not in claims.audience:
            raise Unauthorized(
                "invalid_token", "the access token is not valid", "audience is not this resource"
            )
        if claims.jkt is not None and scheme != "dpop":
            # RFC 9449 §7.1: a DPoP-bound token presented as a bearer token is refused.
            raise Unauthorized(
                "invalid_token", "the access token is not valid", "bound token as bearer"
            )
        if claims.jkt is None:
            if scheme == "dpop":
                raise Unauthorized(
                    "invalid_token", "the access token is not valid", "unbound token as DPoP"
                )
            if self._dpop_required(claims.client_id):
                raise Unauthorized(
                    "invalid_token", "the access token is not valid", "agent requires DPoP"
                )
        return Authenticated(agent, token, jkt)
