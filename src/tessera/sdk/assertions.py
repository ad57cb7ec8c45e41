"""The JWTs an agent (or its operator) signs to obtain a session (DESIGN flows A and C)."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

from tessera.crypto.jws import sign_jwt
from tessera.crypto.keys import SigningAlg, SigningKey, jwk_thumbprint


def load_private_jwk(path: str | Path) -> SigningKey:
    """A private key saved as a JWK file (as ``tessera demo load`` writes them)."""
    data = json.loads(Path(path).read_text())
    jwk = {k: v for k, v in data.items() if k not in {"client_id", "kid"}}
    alg: SigningAlg = "EdDSA" if jwk.get("kty") == "OKP" else "ES256"
    return SigningKey(kid=jwk_thumbprint(jwk), alg=alg, private_jwk=jwk)


def client_assertion(
    key: SigningKey, client_id: str, audience: str, *, lifetime: int = 60, now: float | None = None
) -> str:
    """RFC 7523 §3 client assertion for ``private_key_jwt``."""
    iat = int(now if now is not None else time.time())
    return sign_jwt(
        {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "iat": iat,
            "exp": iat + lifetime,
            "jti": secrets.token_urlsafe(16),
        },
        key,
        typ="JWT",
    )


def model_attestation(
    operator_key: SigningKey,
    operator_id: str,
    agent_id: str,
    model_digest: str,
    agent_jkt: str,
    audience: str,
    *,
    lifetime: int = 300,
    now: float | None = None,
) -> str:
    """DESIGN flow A: the operator binds the agent's key thumbprint to the model digest."""
    iat = int(now if now is not None else time.time())
    return sign_jwt(
        {
            "iss": operator_id,
            "sub": agent_id,
            "aud": audience,
            "iat": iat,
            "exp": iat + lifetime,
            "jti": secrets.token_urlsafe(16),
            "model_digest": model_digest,
            "cnf": {"jkt": agent_jkt},
        },
        operator_key,
        typ="model-attestation+jwt",
    )


def actor_token(
    child_key: SigningKey,
    child_id: str,
    audience: str,
    *,
    dpop_jkt: str | None,
    model_digest: str | None = None,
    now: float | None = None,
) -> str:
    """DESIGN flow C: the child agent's consent to receive a delegated token."""
    iat = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "iss": child_id,
        "sub": child_id,
        "aud": audience,
        "iat": iat,
        "exp": iat + 30,
        "jti": secrets.token_urlsafe(16),
    }
    if dpop_jkt is not None:
        claims["cnf"] = {"jkt": dpop_jkt}
    if model_digest is not None:
        claims["model_digest"] = model_digest
    return sign_jwt(claims, child_key, typ="JWT")
