"""Agent subjects: a session token carried in an AuthZEN subject (DESIGN 5, 6b).

Convention: ``subject.type`` is ``agent``, ``subject.properties.token`` is the session
token the PEP received, and ``subject.properties.jkt`` is the thumbprint of the DPoP key
whose proof the PEP verified (RFC 9449 §6; or ``context.dpop_jkt``). ``subject.id`` is
informational; when given it must equal the token's ``client_id``.

The token is verified once (signature, ``typ``, issuer, claims) and cached by its hash
until it expires; its stored session's liveness is checked on *every* decision, so a
revocation applies at once. The token's ``aud`` must name the calling service, and its
``cnf.jkt`` must equal the thumbprint the PEP verified.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from tessera.crypto.hashing import hash_token
from tessera.crypto.jws import KeyLookup
from tessera.tokens.claims import SessionClaims
from tessera.tokens.oauth_errors import OAuthError
from tessera.tokens.proofs import read_session_token

MAX_CACHE: Final = 50_000
MAX_TOKEN: Final = 16_384

# (token hash, sid) -> (live, reason). Must consult the stored session each time.
Liveness = Callable[[str, str], tuple[bool, str]]


@dataclass(frozen=True)
class Caller:
    """The authenticated PEP: a registered service (DESIGN 6b)."""

    service_id: str
    service_name: str
    via: str  # token | api_key | in_process
    # Further audiences the caller answers for: the canonical resource URIs of the MCP
    # servers an in-process gateway fronts (RFC 8707, MCP authorization).
    audiences: frozenset[str] = frozenset()


@dataclass(frozen=True)
class AgentSubject:
    """The identity layers of a verified session token."""

    claims: SessionClaims
    token_hash: str

    @property
    def agent(self) -> str:
        return self.claims.client_id

    @property
    def user(self) -> str | None:
        """The user the agent acts for (on-behalf-of), else None.

        On behalf of a user, ``act`` names every agent of the chain (``depth + 1``
        actors); an autonomous sub-agent's ``sub`` is the root *agent* and ``act`` holds
        only the ``depth`` agents below it, so that ``sub`` is no user (decisions.md 87)."""
        c = self.claims
        if c.subject == c.client_id or len(c.actors) != c.depth + 1:
            return None
        return c.subject

    def attributes(self) -> dict[str, Any]:
        """Cedar principal attributes of the agent."""
        c = self.claims
        return {
            "operator": c.operator,
            "model": c.grant.model_digest,
            "model_id": c.model_id,
            "session": c.sid,
            "user": self.user or "",
            "on_behalf_of": self.user is not None,
            "act": list(c.actors),
            "depth": c.depth,
        }


class AgentTokenRejected(Exception):
    """One opaque failure (DESIGN 5: token failures stay one error); ``detail`` is private."""

    def __init__(self, detail: str) -> None:
        super().__init__("invalid_token")
        self.detail = detail


class SessionTokenVerifier:
    def __init__(self, keys: KeyLookup, issuer: str, liveness: Liveness) -> None:
        self._keys = keys
        self._issuer = issuer
        self.liveness = liveness  # also asked by PEPs in process (the gateway's streams)
        self._cache: dict[str, tuple[AgentSubject, int]] = {}
        self._lock = threading.Lock()

    def _verified(self, token: str, now: float) -> AgentSubject:
        th = hash_token(token)
        hit = self._cache.get(th)
        if hit is not None and hit[1] > now:
            return hit[0]
        try:
            claims, _raw = read_session_token(token, keys=self._keys, issuer=self._issuer, now=now)
        except OAuthError as exc:
            raise AgentTokenRejected(exc.detail or "token does not verify") from None
        subject = AgentSubject(claims, th)
        with self._lock:
            if len(self._cache) >= MAX_CACHE:
                self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
                if len(self._cache) >= MAX_CACHE:
                    self._cache.clear()
            self._cache[th] = (subject, claims.exp)
        return subject

    def verify(
        self,
        properties: Mapping[str, Any],
        subject_id: str,
        context: Mapping[str, Any],
        caller: Caller,
        now: float,
    ) -> AgentSubject:
        token = properties.get("token")
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
            raise AgentTokenRejected("subject.properties.token is missing")
        agent = self._verified(token, now)
        c = agent.claims
        if c.exp <= now:
            raise AgentTokenRejected("token expired")
        if subject_id and subject_id != c.client_id:
            raise AgentTokenRejected("subject.id is not the token's client_id")
        if not ({caller.service_id, caller.service_name} | caller.audiences) & c.audience:
            raise AgentTokenRejected("token audience does not name the calling service")
        if c.jkt is not None:
            jkt = properties.get("jkt", context.get("dpop_jkt"))
            if jkt != c.jkt:
                raise AgentTokenRejected("DPoP key thumbprint does not match cnf.jkt")
        live, reason = self.liveness(agent.token_hash, c.sid)
        if not live:
            raise AgentTokenRejected(f"session not live: {reason}")
        return agent

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()
