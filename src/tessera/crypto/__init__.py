"""The only importer of cryptography and joserfc: keys, JWKS, JWS, DPoP proofs, hashing."""

from tessera.crypto.dpop import DpopProof, create_proof, verify_proof
from tessera.crypto.errors import DpopNonceRequired, DpopProofInvalid, JwksInvalid, TokenInvalid
from tessera.crypto.jws import (
    JwksKeys,
    KeyLookup,
    VerifiedJwt,
    sign_jwt,
    verify_jws_signature_only,
    verify_jwt,
)
from tessera.crypto.nonce import DpopNonceIssuer

__all__ = [
    "DpopNonceIssuer",
    "DpopNonceRequired",
    "DpopProof",
    "DpopProofInvalid",
    "JwksInvalid",
    "JwksKeys",
    "KeyLookup",
    "TokenInvalid",
    "VerifiedJwt",
    "create_proof",
    "sign_jwt",
    "verify_jws_signature_only",
    "verify_jwt",
    "verify_proof",
]
