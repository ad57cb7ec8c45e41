"""Upstream credentials for a gateway: RFC 8693 token exchange performed in-process.

The MCP authorization spec forbids token passthrough: the gateway must never forward the
agent's token to an upstream server. Instead the gateway (a registered service) exchanges
the agent's verified session token for a new token whose audience is the upstream alone
(RFC 8693 §2.1 ``audience``/``resource``), with the gateway as the current actor and the
agent's own chain nested below it (RFC 8693 §4.1 ``act``). It is short-lived, bound to the
agent's session (``sid``), carries no DPoP binding (the upstream sees the gateway, not the
agent's key) and names only the tool being called in its RAR details.

Tokens are cached per (session, audience, tool) until shortly before they expire, so a busy
session costs one ES256 signature per minute, not one per call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from tessera.crypto.jws import sign_jwt
from tessera.crypto.keys import SigningKey
from tessera.ids import new_id
from tessera.tokens.claims import SessionClaims
from tessera.tokens.proofs import ACCESS_TOKEN_TYP

UPSTREAM_LIFETIME: Final = 120
REUSE_MARGIN: Final = 30
MAX_CACHE: Final = 20_000
RAR_TYPE: Final = "tessera_upstream_call"


@dataclass(frozen=True)
class UpstreamToken:
    token: str
    jti: str
    exp: int


class UpstreamTokenExchange:
    """Mints the RFC 8693 exchanged token for an upstream audience (DESIGN 6b: the gateway
    is a service identity; the act chain records it as the current actor)."""

    def __init__(
        self,
        issuer: str,
        signing_key: Callable[[], SigningKey],
        now: Callable[[], float],
        *,
        service_id: str,
        lifetime: int = UPSTREAM_LIFETIME,
    ) -> None:
        self._issuer = issuer
        self._key = signing_key
        self._now = now
        self.service_id = service_id
        self._lifetime = lifetime
        self._cache: dict[tuple[str, str, str], UpstreamToken] = {}
        self._lock = threading.Lock()

    def exchange(self, claims: SessionClaims, audience: str, tool: str) -> UpstreamToken:
        """RFC 8693 §2.2: the issued token (``issued_token_type`` access_token, JWT)."""
        now = int(self._now())
        key = (claims.sid, audience, tool)
        hit = self._cache.get(key)
        if hit is not None and hit.exp - REUSE_MARGIN > now and hit.exp <= claims.exp:
            return hit
        exp = min(now + self._lifetime, claims.exp)
        jti = new_id("session").replace("ses_", "jti_")
        # The agent's chain (or the agent itself, for an autonomous session) below us.
        prior = dict(claims.act) if claims.act is not None else {"sub": claims.client_id}
        act: dict[str, Any] = {"sub": self.service_id, "act": prior}
        body = {
            "iss": self._issuer,
            "sub": claims.subject,
            "aud": audience,
            "client_id": self.service_id,
            "iat": now,
            "exp": exp,
            "jti": jti,
            "sid": claims.sid,
            "act": act,
            "operator": claims.operator,
            "model": {"id": claims.model_id, "digest": claims.grant.model_digest},
            "authorization_details": [{"type": RAR_TYPE, "tools": [tool]}],
            "token_use": "upstream",
        }
        token = UpstreamToken(sign_jwt(body, self._key(), typ=ACCESS_TOKEN_TYP), jti, exp)
        with self._lock:
            if len(self._cache) >= MAX_CACHE:
                self._cache = {k: v for k, v in self._cache.items() if v.exp > now}
                if len(self._cache) >= MAX_CACHE:
                    self._cache.clear()
            self._cache[key] = token
        return token

    def forget(self, sid: str) -> None:
        """Drop cached tokens of a session (revocation)."""
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if k[0] != sid}
