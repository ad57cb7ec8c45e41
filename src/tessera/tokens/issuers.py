"""Trusted issuers of user tokens for on-behalf-of exchanges (RFC 8693 ``subject_token``).

DESIGN 6b: each trusted issuer lists its accepted ``subject_token_type``s (never
``id_token``) and algorithms, its tokens must name Tessera in ``aud``, and users map by
(iss, sub): ``sub`` (or the configured ``user_claim``) names a Tessera user id or username.
Keys come from a JWKS file or an inline JWKS; never from a URL the token names.

The development issuer (``tessera dev user-token``) is trusted only in development mode.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tessera.crypto.errors import JwksInvalid, TokenInvalid
from tessera.crypto.jws import JwksKeys, KeyLookup, verify_jwt
from tessera.errors import ConfigError
from tessera.outbound import OutboundPolicy, OutboundRefused, check_url, fetch_json
from tessera.tokens.oauth_errors import OAuthError
from tessera.tokens.peek import unverified_claim

log = logging.getLogger("tessera.tokens")
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN, not a secret
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 - a URN, not a secret
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105 - a URN, not a secret
_ALLOWED_TYPES = {ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE}
_ALLOWED_ALGS = {
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
}
DEV_ISSUER_SUFFIX = "/dev-users"


@dataclass(frozen=True)
class TrustedIssuer:
    issuer: str
    keys: KeyLookup
    algorithms: tuple[str, ...]
    subject_token_types: frozenset[str]
    user_claim: str = "sub"


@dataclass(frozen=True)
class UserAssertion:
    issuer: str
    user_ref: str
    jti: str | None
    exp: float


class TrustedIssuers:
    def __init__(self, issuers: list[TrustedIssuer]) -> None:
        self._by_iss = {i.issuer: i for i in issuers}

    def __contains__(self, issuer: str) -> bool:
        return issuer in self._by_iss

    def verify(
        self, token: str, token_type: str, *, tessera_issuer: str, now: float
    ) -> UserAssertion:
        """Verify a user's token from a trusted issuer; ``invalid_grant`` on any failure."""
        iss = unverified_claim(token, "iss")
        trusted = self._by_iss.get(iss or "")
        if trusted is None:
            raise OAuthError(
                "invalid_grant",
                "the subject token is not accepted",
                detail=f"untrusted issuer {iss!r}",
            )
        if token_type not in trusted.subject_token_types:
            raise OAuthError("invalid_request", "subject_token_type not accepted for issuer")
        try:
            claims = verify_jwt(
                token,
                keys=trusted.keys,
                algorithms=trusted.algorithms,
                typ=None,
                issuer=trusted.issuer,
                audience=tessera_issuer,
                now=now,
                require=("exp", "sub", "aud"),
            ).claims
        except (TokenInvalid, JwksInvalid) as exc:
            raise OAuthError(
                "invalid_grant",
                "the subject token is not accepted",
                detail=f"subject token: {exc.detail}",
            ) from None
        ref = claims.get(trusted.user_claim)
        if not isinstance(ref, str) or not ref or len(ref) > 128:
            raise OAuthError("invalid_grant", "the subject token names no user")
        jti = claims.get("jti")
        return UserAssertion(
            trusted.issuer, ref, jti if isinstance(jti, str) else None, float(claims["exp"])
        )


def issuer_from_config(
    entry: Mapping[str, Any], base_dir: Path, *, allow_private: bool = False
) -> TrustedIssuer:
    """One entry of the trusted-issuers file; every mistake is a ``ConfigError``."""
    where = "TESSERA_TRUSTED_ISSUERS"
    iss = entry.get("issuer")
    if not isinstance(iss, str) or not iss.startswith(("https://", "http://")):
        raise ConfigError(f"{where}: each entry needs an http(s) issuer")
    if "jwks_uri" in entry:
        uri = str(entry["jwks_uri"])
        host = (urlsplit(uri).hostname or "").lower()
        policy = OutboundPolicy(frozenset({host}), allow_private=allow_private)
        try:
            check_url(uri, policy)
        except OutboundRefused as exc:
            raise ConfigError(f"{where}: jwks_uri of {iss} refused ({exc.detail})") from exc
        remote = RemoteJwks(uri, policy)
    elif "jwks" in entry:
        doc = entry["jwks"]
    elif "jwks_file" in entry:
        try:
            doc = json.loads((base_dir / str(entry["jwks_file"])).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{where}: cannot read jwks_file of {iss}") from exc
    else:
        raise ConfigError(f"{where}: {iss} needs jwks_uri, jwks or jwks_file")
    algs = tuple(entry.get("algorithms") or ("ES256",))
    if not set(algs) <= _ALLOWED_ALGS:
        raise ConfigError(f"{where}: {iss} lists an algorithm outside {sorted(_ALLOWED_ALGS)}")
    types = frozenset(entry.get("subject_token_types") or (JWT_TOKEN_TYPE,))
    if not types <= _ALLOWED_TYPES:
        raise ConfigError(f"{where}: {iss} subject_token_types may be access_token or jwt")
    keys: KeyLookup
    if "jwks_uri" in entry:
        keys = remote
    else:
        try:
            keys = JwksKeys.from_jwks(doc)  # public keys only: never HMAC from a file of keys
        except JwksInvalid as exc:
            raise ConfigError(f"{where}: {iss} jwks invalid ({exc.detail})") from exc
    return TrustedIssuer(iss, keys, algs, types, str(entry.get("user_claim") or "sub"))


def load_trusted_issuers(path: Path | None, *, allow_private: bool = False) -> list[TrustedIssuer]:
    if path is None:
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"TESSERA_TRUSTED_ISSUERS: cannot read {path} as JSON") from exc
    if not isinstance(data, list):
        raise ConfigError("TESSERA_TRUSTED_ISSUERS: the file must hold a JSON array")
    return [issuer_from_config(e, path.parent, allow_private=allow_private) for e in data]


class RemoteJwks:
    """An issuer's JWKS fetched from its ``jwks_uri`` under the outbound rules, cached for
    ``ttl`` seconds and refetched at most every ``min_refresh`` seconds when a token names an
    unknown ``kid`` (key rotation at the issuer). Any fetch failure means no key: the token is
    refused (fail closed), and the next attempt waits for ``min_refresh``."""

    def __init__(
        self, uri: str, policy: OutboundPolicy, *, ttl: float = 600.0, min_refresh: float = 30.0
    ) -> None:
        self.uri = uri
        self._policy = policy
        self._ttl = ttl
        self.min_refresh = min_refresh
        self._keys: JwksKeys | None = None
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def _refresh(self, now: float) -> None:
        self._fetched_at = now
        try:
            self._keys = JwksKeys.from_jwks(fetch_json(self.uri, self._policy))
        except (OutboundRefused, JwksInvalid) as exc:
            log.warning("jwks_uri %s: %s", self.uri, getattr(exc, "detail", exc))

    def __call__(self, kid: str | None, alg: str) -> Mapping[str, Any] | None:
        now = time.monotonic()
        with self._lock:
            stale = self._keys is None or now - self._fetched_at > self._ttl
            # ttl > min_refresh, so this refetches expired keys and retries failed fetches
            if stale and now - self._fetched_at >= self.min_refresh:
                self._refresh(now)
            found = self._keys(kid, alg) if self._keys is not None else None
            if found is None and kid is not None and now - self._fetched_at >= (self.min_refresh):
                self._refresh(now)
                found = self._keys(kid, alg) if self._keys is not None else None
            return found
