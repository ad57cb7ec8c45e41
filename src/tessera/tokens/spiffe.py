"""SPIFFE JWT-SVIDs as client assertions (draft-ietf-oauth-spiffe-client-auth).

``client_assertion_type`` = ``urn:ietf:params:oauth:client-assertion-type:jwt-spiffe``; the
assertion is a JWT-SVID whose ``sub`` is the workload's SPIFFE ID and whose ``aud`` names the
Tessera issuer or token endpoint, signed by a key in the configured trust bundle of the
SPIFFE ID's trust domain. Trust bundles are configured out of band
(``TESSERA_SPIFFE_BUNDLES``), never fetched from a URL the client names. SVIDs are cached
and reused by SPIFFE implementations, so ``jti`` is not single use: DESIGN 6b therefore
accepts them only on DPoP-bound requests, where the proof is single use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tessera.crypto.errors import JwksInvalid, TokenInvalid
from tessera.crypto.jws import JwksKeys, verify_jwt
from tessera.errors import ConfigError
from tessera.tokens.oauth_errors import OAuthError
from tessera.tokens.peek import unverified_claim

JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
SVID_ALGS = ("ES256", "ES384", "RS256", "PS256")
MAX_SVID_AHEAD = 3600


class SpiffeBundles:
    def __init__(self, bundles: Mapping[str, JwksKeys]) -> None:
        self._bundles = dict(bundles)

    def __bool__(self) -> bool:
        return bool(self._bundles)

    def verify(self, svid: str, *, audiences: tuple[str, ...], now: float) -> str:
        """The SPIFFE ID of a valid JWT-SVID; ``invalid_client`` otherwise."""
        spiffe_id = unverified_claim(svid, "sub")
        if spiffe_id is not None and not spiffe_id.startswith("spiffe://"):
            spiffe_id = None
        domain = spiffe_id.removeprefix("spiffe://").split("/", 1)[0] if spiffe_id else ""
        keys = self._bundles.get(domain)
        if keys is None:
            raise _fail(f"no trust bundle for trust domain {domain!r}")
        try:
            claims = verify_jwt(
                svid,
                keys=keys,
                algorithms=SVID_ALGS,
                typ=None,
                issuer=None,
                audience=None,
                now=now,
                require=("exp", "sub", "aud"),
            ).claims
        except (TokenInvalid, JwksInvalid) as exc:
            raise _fail(f"JWT-SVID rejected: {exc.detail}") from None
        aud = claims["aud"]
        auds = aud if isinstance(aud, list) else [aud]
        if not any(a in audiences for a in auds):
            raise _fail("JWT-SVID aud does not name this authorization server")
        if float(claims["exp"]) - now > MAX_SVID_AHEAD:
            raise _fail("JWT-SVID lifetime too long")
        return str(claims["sub"])


def _fail(detail: str) -> OAuthError:
    return OAuthError("invalid_client", "client authentication failed", detail=detail)


def load_spiffe_bundles(path: Path | None) -> SpiffeBundles:
    """``{"trust-domain": <JWK Set> | {"jwks_file": "bundle.json"}}``."""
    if path is None:
        return SpiffeBundles({})
    where = "TESSERA_SPIFFE_BUNDLES"
    try:
        data: Any = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read {path} as JSON") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the file must hold an object of trust domains")
    bundles = {}
    for domain, doc in data.items():
        if isinstance(doc, dict) and "jwks_file" in doc:
            try:
                doc = json.loads((path.parent / str(doc["jwks_file"])).read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{where}: cannot read the bundle of {domain}") from exc
        try:
            bundles[str(domain)] = JwksKeys.from_jwks(doc)
        except JwksInvalid as exc:
            raise ConfigError(f"{where}: bundle of {domain} is invalid ({exc.detail})") from exc
    return SpiffeBundles(bundles)
