"""Errors of the JOSE layer.

Every token failure is one opaque error to the caller; the precise reason (which check
failed) is in ``detail``, for the audit record only (DESIGN section 9).

    Unauthenticated
    ├── TokenInvalid          any JWS/JWT failure                  code invalid_token
    ├── DpopProofInvalid      any DPoP proof failure               code invalid_dpop_proof
    └── DpopNonceRequired     proof lacks the current server nonce code use_dpop_nonce
    InvalidInput
    └── JwksInvalid           a configured key set is unsafe       code invalid_jwks
"""

from __future__ import annotations

from tessera.errors import InvalidInput, Unauthenticated


class TokenInvalid(Unauthenticated):
    """A JWS or JWT failed verification; ``detail`` says why, the message never does."""

    code = "invalid_token"
    title = "The token is invalid"


class DpopProofInvalid(Unauthenticated):
    """A DPoP proof failed verification (RFC 9449 §4.3); ``detail`` says why."""

    code = "invalid_dpop_proof"
    title = "The DPoP proof is invalid"


class DpopNonceRequired(Unauthenticated):
    """The proof carries no nonce or a stale one (RFC 9449 §8): retry with a fresh nonce."""

    code = "use_dpop_nonce"
    title = "A fresh DPoP nonce is required"


class JwksInvalid(InvalidInput):
    """A configured key set is unsafe or ambiguous (duplicate kid, mixed key kinds)."""

    code = "invalid_jwks"
    title = "The key set is invalid"
