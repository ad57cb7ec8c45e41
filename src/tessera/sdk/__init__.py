"""Python client helpers for agents: client assertions, model attestations, actor tokens,
DPoP proofs and a small token client."""

from tessera.sdk.assertions import (
    actor_token,
    client_assertion,
    load_private_jwk,
    model_attestation,
)
from tessera.sdk.client import SessionClient

__all__ = [
    "SessionClient",
    "actor_token",
    "client_assertion",
    "load_private_jwk",
    "model_attestation",
]
