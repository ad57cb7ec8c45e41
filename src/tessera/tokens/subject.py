"""The actor token of a delegation exchange (DESIGN flow C, RFC 8693 §2.1).

Signed by the child agent's registered key: ``iss`` = ``sub`` = the child's client id,
``aud`` = the Tessera issuer, ``jti`` (single use), ``exp`` at most 60 s ahead, and
``cnf.jkt`` = the thumbprint of the child's DPoP key, to which the new token is bound. A
child registered with ``dpop_required: false`` may omit ``cnf`` (its token is then a bearer
token). A child registered without attestation may name its model in ``model_digest``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tessera.crypto.errors import JwksInvalid, TokenInvalid
from tessera.crypto.jws import JwksKeys, verify_jwt
from tessera.identity.lifecycle import agent_unusable_reason
from tessera.identity.model import Agent
from tessera.tokens.client_auth import CLIENT_ALGS, ClientDirectory
from tessera.tokens.oauth_errors import OAuthError
from tessera.tokens.peek import active_jwks, unverified_claim
from tessera.tokens.ports import TokenTx

MAX_ACTOR_TOKEN_AHEAD = 60


def _refuse(detail: str) -> OAuthError:
    return OAuthError("invalid_grant", "the actor token is not accepted", detail=detail)


def verify_actor_token(
    token: str, *, tx: TokenTx, issuer: str, now: datetime, directory: ClientDirectory
) -> tuple[Agent, str | None, dict[str, Any]]:
    """Return (child agent, child DPoP jkt or None, verified claims)."""
    child_id = unverified_claim(token, "iss", max_len=64)
    if child_id is None:
        raise _refuse("malformed actor token: no iss")
    child = tx.agents.get(child_id)
    if child is None or child.id != child_id:
        raise _refuse("actor token names no registered agent")
    jwks = active_jwks(tx.credentials.list_for("agent", child.id), now)
    if not jwks:
        raise _refuse(f"agent {child.id} has no active key")
    try:
        claims = verify_jwt(
            token,
            keys=JwksKeys(jwks),
            algorithms=CLIENT_ALGS,
            typ=None,
            issuer=child.id,
            audience=issuer,
            now=now.timestamp(),
            require=("exp", "jti", "sub", "aud"),
        ).claims
    except (TokenInvalid, JwksInvalid) as exc:
        raise _refuse(f"actor token: {exc.detail}") from None
    if claims.get("sub") != child.id:
        raise _refuse("actor token sub differs from iss")
    if float(claims["exp"]) - now.timestamp() > MAX_ACTOR_TOKEN_AHEAD:
        raise _refuse("actor token lives longer than 60 s")
    why = agent_unusable_reason(child, directory.find_operator(child.operator_id), now)
    if why is not None:
        raise _refuse(f"agent {child.id}: {why}")
    cnf = claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    if jkt is not None and (not isinstance(jkt, str) or not 20 <= len(jkt) <= 64):
        raise _refuse("actor token cnf.jkt malformed")
    if jkt is None and child.ceiling.dpop_required:
        raise _refuse("the child requires DPoP: actor token needs cnf.jkt")
    jti = str(claims["jti"])[:200]
    if not directory.use_jti_once(
        f"actor:{child.id}:{jti}", datetime.fromtimestamp(float(claims["exp"]) + 60, UTC)
    ):
        raise _refuse("actor token replayed")
    return child, jkt, dict(claims)
