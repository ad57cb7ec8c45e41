"""Python client helpers for agents: client assertions, model attestations, actor tokens,
DPoP proofs and a small token client."""

from tessera.sdk.assertions import (
    actor_token,
    client_assertion,
    load_private_jwk,
    model_attestation,
)
from tessera.sdk.client import SessionClient
from tessera.sdk.mcp_auth import GatewayAuth, SessionRefused, SessionTokenSource, mcp_http_client

__all__ = [
    "GatewayAuth",
    "SessionClient",
    "SessionRefused",
    "SessionTokenSource",
    "actor_token",
    "client_assertion",
    "load_private_jwk",
    "mcp_http_client",
    "model_attestation",
]
