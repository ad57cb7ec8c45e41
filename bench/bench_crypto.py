"""JOSE layer: JWT signing and full verification, DPoP proof creation and verification."""

from __future__ import annotations

from harness import Row, latency_row, time_each

from tessera.crypto.dpop import create_proof, verify_proof
from tessera.crypto.jws import JwksKeys, sign_jwt, verify_jwt
from tessera.crypto.keys import generate_signing_key

NOW = 1_800_000_000
ISS = "https://tessera.example"
AUD = "https://pep.example"
HTU = "https://pep.example/mcp"


def _claims() -> dict[str, object]:
    # Roughly the shape of a session token (DESIGN 4).
    return {
        "iss": ISS,
        "sub": "user:alice",
        "aud": AUD,
        "exp": NOW + 900,
        "iat": NOW,
        "jti": "01J0000000000000000000000",
        "client_id": "agent:research",
        "scope": "tools",
        "cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},
        "act": {"sub": "agent:research"},
        "authorization_details": [
            {
                "type": "tessera_session",
                "tools": ["github/search", "github/read"],
                "budgets": {"tool_calls": 20},
            }
        ],
    }


def run(quick: bool) -> list[Row]:
    n = 500 if quick else 5000
    rows: list[Row] = []
    for alg in ("ES256", "EdDSA"):
        key = generate_signing_key(alg)
        keys = JwksKeys([key.public_jwk()])
        claims = _claims()
        token = sign_jwt(claims, key, typ="at+jwt")
        rows.append(
            latency_row(
                f"{alg} sign_jwt",
                time_each(lambda k=key, c=claims: sign_jwt(c, k, typ="at+jwt"), n),
            )
        )
        rows.append(
            latency_row(
                f"{alg} verify_jwt (typ, iss, aud, exp)",
                time_each(
                    lambda t=token, ks=keys: verify_jwt(
                        t,
                        keys=ks,
                        algorithms=("ES256", "EdDSA"),
                        typ="at+jwt",
                        issuer=ISS,
                        audience=AUD,
                        now=NOW,
                    ),
                    n,
                ),
            )
        )
        rows.append(
            latency_row(
                f"{alg} dpop create_proof (with ath)",
                time_each(
                    lambda k=key, t=token: create_proof(
                        k, htm="POST", htu=HTU, access_token=t, iat=NOW
                    ),
                    n,
                ),
            )
        )
        proof = create_proof(key, htm="POST", htu=HTU, access_token=token, iat=NOW)
        rows.append(
            latency_row(
                f"{alg} dpop verify_proof (ath, cnf.jkt)",
                time_each(
                    lambda p=proof, t=token, j=key.kid: verify_proof(
                        p, htm="POST", htu=HTU, now=NOW, access_token=t, expected_jkt=j
                    ),
                    n,
                ),
            )
        )
    return rows
