"""DPoP proofs (RFC 9449): creation for the SDK and tests, strict verification for servers.

``verify_proof`` performs the checks of RFC 9449 §4.3 that need no state. Two things stay
with the caller: storing ``jti`` in the replay cache shared through the database (a replayed
but otherwise valid proof verifies again and returns the same ``jti``), and issuing server
nonces (``tessera.crypto.nonce``), which it plugs in as ``nonce_check``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tessera.crypto.errors import DpopNonceRequired, DpopProofInvalid, TokenInvalid
from tessera.crypto.hashing import b64url, sha256_b64url
from tessera.crypto.jws import (
    MAX_LEEWAY_SECONDS,
    parse_json_object,
    sign_compact,
    typ_matches,
    verify_jws_embedded_key,
)
from tessera.crypto.keys import SigningKey
from tessera.errors import ConfigError

__all__ = [
    "DPOP_TYP",
    "DpopProof",
    "access_token_hash",
    "create_proof",
    "jwk_thumbprint_of",
    "normalize_htu",
    "verify_proof",
]

DPOP_TYP = "dpop+jwt"
MAX_JTI_LENGTH = 256
# RFC 7638 §3.2: the required members of each key type, in lexicographic order.
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class DpopProof:
    """What a verified proof says. ``jkt`` is the RFC 7638 thumbprint of its public key."""

    jkt: str
    jti: str
    iat: float
    htm: str
    htu: str
    nonce: str | None


def jwk_thumbprint_of(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of a public JWK (EC, OKP or RSA), base64url."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or not all(isinstance(jwk.get(m), str) for m in members):
        raise DpopProofInvalid(detail="jwk lacks the members of its key type")
    canonical = json.dumps(
        {m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True, ensure_ascii=False
    )
    return b64url(hashlib.sha256(canonical.encode()).digest())


def access_token_hash(access_token: str) -> str:
    """RFC 9449 §4.2 ``ath``: base64url of the SHA-256 of the ASCII access token."""
    return sha256_b64url(access_token.encode())


def normalize_htu(uri: str) -> str:
    """RFC 9449 §4.3 (RFC 3986 §6.2.2-6.2.3): the URI without query and fragment, with the
    scheme and host lower-cased, the default port dropped and an empty path as ``/``."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        raise DpopProofInvalid(detail="htu has an invalid port") from None
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", "", ""))


def create_proof(
    key: SigningKey,
    *,
    htm: str,
    htu: str,
    access_token: str | None = None,
    nonce: str | None = None,
    iat: float,
    jti: str | None = None,
) -> str:
    """A DPoP proof JWT (RFC 9449 §4.2) carrying the public half of ``key`` in its header.

    ``htu`` is sent without query and fragment; ``ath`` is added when ``access_token`` is.
    """
    # A private EC/OKP JWK carries its public members too, so no key import is needed.
    members = _THUMBPRINT_MEMBERS[str(key.private_jwk["kty"])]
    header = {"typ": DPOP_TYP, "alg": key.alg, "jwk": {m: key.private_jwk[m] for m in members}}
    parts = urlsplit(htu)
    claims: dict[str, Any] = {
        "jti": jti or secrets.token_urlsafe(16),
        "htm": htm,
        "htu": urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
        "iat": int(iat),
    }
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    if nonce is not None:
        claims["nonce"] = nonce
    return sign_compact(header, claims, key)


def _str_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise DpopProofInvalid(detail=f"claim {name!r} missing or not a string")
    return value


def verify_proof(
    proof: str,
    *,
    htm: str,
    htu: str,
    now: float,
    algorithms: Collection[str] = ("ES256", "EdDSA"),
    access_token: str | None = None,
    expected_jkt: str | None = None,
    nonce_check: Callable[[str | None], bool] | None = None,
    max_age: int = 300,
    leeway: int = 60,
) -> DpopProof:
    """Verify a DPoP proof for one request (RFC 9449 §4.3 checks 1-12, except replay).

    Raises ``DpopNonceRequired`` (``use_dpop_nonce``) when ``nonce_check`` refuses the
    proof's nonce, and ``DpopProofInvalid`` (``invalid_dpop_proof``) for anything else.
    ``iat`` must lie in ``[now - max_age, now + leeway]``.
    """
    if not 0 <= leeway <= MAX_LEEWAY_SECONDS or max_age <= 0:
        raise ConfigError(detail=f"leeway must be 0-{MAX_LEEWAY_SECONDS} s, max_age positive")
    try:
        verified = verify_jws_embedded_key(proof, algorithms=algorithms)
        claims = parse_json_object(verified.payload, "claims")
    except TokenInvalid as exc:
        raise DpopProofInvalid(detail=exc.detail) from None
    if not typ_matches(verified.header.get("typ"), DPOP_TYP):
        raise DpopProofInvalid(detail=f"typ {verified.header.get('typ')!r} is not {DPOP_TYP}")
    jkt = jwk_thumbprint_of(verified.jwk)
    jti = _str_claim(claims, "jti")
    if len(jti) > MAX_JTI_LENGTH:
        raise DpopProofInvalid(detail="jti too long")
    proof_htm, proof_htu = _str_claim(claims, "htm"), _str_claim(claims, "htu")
    # HTTP methods are case-sensitive (RFC 9110 §9.1).
    if proof_htm != htm:
        raise DpopProofInvalid(detail=f"htm {proof_htm!r} is not {htm!r}")
    if normalize_htu(proof_htu) != normalize_htu(htu):
        raise DpopProofInvalid(detail="htu does not match the request URI")
    if access_token is not None:
        ath = claims.get("ath")
        if not isinstance(ath, str) or not hmac.compare_digest(
            ath.encode(), access_token_hash(access_token).encode()
        ):
            raise DpopProofInvalid(detail="ath missing or not the hash of the access token")
    if expected_jkt is not None and not hmac.compare_digest(jkt.encode(), expected_jkt.encode()):
        raise DpopProofInvalid(detail="proof key is not the key the token is bound to")
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
        raise DpopProofInvalid(detail="claim 'iat' missing or not a NumericDate")
    if iat > now + leeway:
        raise DpopProofInvalid(detail="proof issued in the future (iat)")
    if iat < now - max_age:
        raise DpopProofInvalid(detail="proof too old (iat)")
    nonce = claims.get("nonce")
    if nonce is not None and not isinstance(nonce, str):
        raise DpopProofInvalid(detail="nonce is not a string")
    # Last, so that only an otherwise valid proof is ever told to fetch a nonce.
    if nonce_check is not None and not nonce_check(nonce):
        raise DpopNonceRequired(detail="nonce missing" if nonce is None else "nonce refused")
    return DpopProof(jkt=jkt, jti=jti, iat=float(iat), htm=proof_htm, htu=proof_htu, nonce=nonce)
