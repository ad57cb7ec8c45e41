"""Model attestation (DESIGN flow A): which exact model is the agent running?

A model attestation is a short JWT signed by a key the agent's operator registered:

    header  {"typ": "model-attestation+jwt", "alg": "ES256" | "EdDSA", "kid": <key jkt>}
    claims  {"iss": <operator id>, "sub": <agent client id>, "aud": <Tessera issuer>,
             "iat", "exp" (at most 600 s after iat), "jti",
             "model_digest": "sha256:<hex>", "cnf": {"jkt": <agent key thumbprint>}}

``cnf.jkt`` binds the attestation to the key the agent proves possession of (its DPoP key,
or the key that signed its client assertion when DPoP is off), so the model that
authenticates is the model that was verified. A self-asserted ``model_digest`` form
parameter is accepted only for agents registered without attestation (posture flags them).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from tessera.crypto.errors import JwksInvalid, TokenInvalid
from tessera.crypto.jws import JwksKeys, verify_jwt
from tessera.identity.ceiling import is_model_digest
from tessera.identity.model import Agent, Credential, ModelArtifact, ModelStatus
from tessera.tokens.client_auth import CLIENT_ALGS
from tessera.tokens.oauth_errors import OAuthError
from tessera.tokens.peek import active_jwks

ATTESTATION_TYP = "model-attestation+jwt"
MAX_ATTESTATION_LIFETIME = 600


def _refuse(detail: str) -> OAuthError:
    return OAuthError("invalid_grant", "the model attestation was not accepted", detail=detail)


def resolve_model_digest(
    agent: Agent,
    *,
    attestation: str | None,
    self_asserted: str | None,
    bound_jkt: str | None,
    issuer: str,
    now: datetime,
    operator_keys: list[Credential],
    find_model: Callable[[str], ModelArtifact | None],
    use_jti_once: Callable[[str, datetime], bool],
) -> ModelArtifact:
    """The registered, active model the agent proved it runs (or, without attestation, says
    it runs). Raises ``invalid_grant`` / ``invalid_request`` otherwise."""
    if attestation is not None:
        digest = _verify_attestation(
            agent,
            attestation,
            bound_jkt=bound_jkt,
            issuer=issuer,
            now=now,
            operator_keys=operator_keys,
            use_jti_once=use_jti_once,
        )
    elif self_asserted is not None:
        if agent.attestation_required:
            raise _refuse(f"agent {agent.id} requires a model attestation")
        if not is_model_digest(self_asserted):
            raise OAuthError("invalid_request", "model_digest must be sha256:<64 hex digits>")
        digest = self_asserted
    else:
        raise OAuthError(
            "invalid_request",
            "a model_attestation (or, for agents registered "
            "without attestation, a model_digest) is required",
        )
    model = find_model(digest)
    if model is None or model.operator_id != agent.operator_id:
        raise _refuse(f"model {digest} is not registered by the agent's operator")
    if model.status != ModelStatus.ACTIVE:
        raise _refuse(f"model {digest} is revoked")
    return model


def _verify_attestation(
    agent: Agent,
    token: str,
    *,
    bound_jkt: str | None,
    issuer: str,
    now: datetime,
    operator_keys: list[Credential],
    use_jti_once: Callable[[str, datetime], bool],
) -> str:
    jwks = active_jwks(operator_keys, now)
    if not jwks:
        raise _refuse(f"operator {agent.operator_id} has no registered key")
    try:
        claims = verify_jwt(
            token,
            keys=JwksKeys(jwks),
            algorithms=CLIENT_ALGS,
            typ=ATTESTATION_TYP,
            issuer=agent.operator_id,
            audience=issuer,
            now=now.timestamp(),
            require=("exp", "iat", "jti", "sub", "model_digest", "cnf"),
        ).claims
    except (TokenInvalid, JwksInvalid) as exc:
        raise _refuse(f"attestation signature or claims: {exc.detail}") from None
    if claims.get("sub") != agent.id:
        raise _refuse("attestation names another agent")
    if float(claims["exp"]) - float(claims["iat"]) > MAX_ATTESTATION_LIFETIME:
        raise _refuse("attestation lifetime too long")
    cnf = claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    if bound_jkt is None or jkt != bound_jkt:
        raise _refuse("attestation cnf.jkt does not match the key the agent proved")
    digest = claims.get("model_digest")
    if not isinstance(digest, str) or not is_model_digest(digest):
        raise _refuse("attestation model_digest malformed")
    jti = str(claims["jti"])[:200]
    from datetime import UTC

    if not use_jti_once(
        f"{agent.operator_id}:{jti}", datetime.fromtimestamp(float(claims["exp"]) + 60, UTC)
    ):
        raise _refuse("attestation replayed")
    return digest
