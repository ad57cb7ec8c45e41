"""Proof-of-possession and token reading shared by the token endpoints (RFC 9449, 9068)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tessera.crypto.dpop import DpopProof, verify_proof
from tessera.crypto.errors import DpopNonceRequired, DpopProofInvalid, JwksInvalid, TokenInvalid
from tessera.crypto.jws import KeyLookup, verify_jwt
from tessera.crypto.nonce import DpopNonceIssuer
from tessera.tokens.claims import SessionClaims, SessionClaimsError, parse_session_claims
from tessera.tokens.oauth_errors import OAuthError

ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 - a URN, not a secret
SIGNING_ALGS = ("ES256", "EdDSA")
DPOP_MAX_AGE = 300


def check_dpop(
    header: str | None,
    *,
    htm: str,
    htu: str,
    now: float,
    nonces: DpopNonceIssuer | None,
    use_jti_once: Callable[[str, datetime], bool],
    access_token: str | None = None,
    expected_jkt: str | None = None,
) -> DpopProof | None:
    """Verify the request's DPoP proof if there is one; map failures to RFC 9449 errors."""
    if header is None:
        return None
    if "," in header or len(header) > 8192:
        raise OAuthError("invalid_dpop_proof", "exactly one DPoP proof is allowed")
    try:
        proof = verify_proof(
            header,
            htm=htm,
            htu=htu,
            now=now,
            access_token=access_token,
            expected_jkt=expected_jkt,
            max_age=DPOP_MAX_AGE,
            nonce_check=(lambda n: nonces.check(n, now)) if nonces else None,
        )
    except DpopNonceRequired:
        raise OAuthError("use_dpop_nonce", "a DPoP nonce is required") from None
    except DpopProofInvalid as exc:
        raise OAuthError(
            "invalid_dpop_proof", "the DPoP proof is invalid", detail=exc.detail
        ) from None
    # INVARIANT: a proof is accepted once, across every node (shared replay cache).
    expires = datetime.fromtimestamp(proof.iat + DPOP_MAX_AGE + 60, UTC)
    if not use_jti_once(f"{proof.jkt}:{proof.jti}", expires):
        raise OAuthError("invalid_dpop_proof", "the DPoP proof was already used")
    return proof


def read_session_token(
    token: str, *, keys: KeyLookup, issuer: str, now: float
) -> tuple[SessionClaims, dict[str, Any]]:
    """Verify a Tessera session token's signature and claims (not its stored state)."""
    try:
        verified = verify_jwt(
            token,
            keys=keys,
            algorithms=SIGNING_ALGS,
            typ=ACCESS_TOKEN_TYP,
            issuer=issuer,
            audience=None,
            now=now,
            require=("exp", "iat", "jti", "sub", "aud"),
        )
        return parse_session_claims(verified.claims), dict(verified.claims)
    except (TokenInvalid, JwksInvalid, SessionClaimsError) as exc:
        raise OAuthError(
            "invalid_grant", "the token is not valid", detail=getattr(exc, "detail", None)
        ) from None
