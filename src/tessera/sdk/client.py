"""A minimal session client: private_key_jwt + DPoP + model attestation over HTTP."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tessera.crypto.dpop import create_proof
from tessera.crypto.keys import SigningKey, jwk_thumbprint
from tessera.sdk.assertions import actor_token, client_assertion, model_attestation

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


@dataclass
class SessionClient:
    """One agent's view of a Tessera token endpoint."""

    issuer: str
    client_id: str
    key: SigningKey  # signs client assertions
    dpop_key: SigningKey | None  # None for agents registered with dpop_required: false
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))
    nonce: str | None = None

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/oauth/token"

    @property
    def dpop_jkt(self) -> str | None:
        return jwk_thumbprint(self.dpop_key.private_jwk) if self.dpop_key else None

    def attest(self, operator_key: SigningKey, operator_id: str, digest: str) -> str:
        bound = self.dpop_jkt or jwk_thumbprint(self.key.private_jwk)
        return model_attestation(
            operator_key, operator_id, self.client_id, digest, bound, self.issuer
        )

    def _post(self, form: dict[str, Any]) -> httpx.Response:
        for _ in range(2):
            headers = {}
            if self.dpop_key is not None:
                headers["DPoP"] = create_proof(
                    self.dpop_key,
                    htm="POST",
                    htu=self.token_endpoint,
                    nonce=self.nonce,
                    iat=time.time(),
                )
            body = dict(form)
            body["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            body["client_assertion"] = client_assertion(
                self.key, self.client_id, self.token_endpoint
            )
            resp = self.http.post(self.token_endpoint, data=body, headers=headers)
            if "DPoP-Nonce" in resp.headers:
                self.nonce = resp.headers["DPoP-Nonce"]
            if resp.status_code == 400 and resp.json().get("error") == "use_dpop_nonce":
                continue  # RFC 9449 §8: retry once with the server's nonce
            return resp
        return resp

    def session(
        self,
        *,
        details: dict[str, Any],
        resource: str | list[str],
        attestation: str | None = None,
        model_digest: str | None = None,
        subject_token: str | None = None,
    ) -> httpx.Response:
        """client_credentials (autonomous) or token exchange on behalf of a user."""
        form: dict[str, Any] = {
            "authorization_details": json.dumps([details]),
            "resource": resource,
        }
        if attestation:
            form["model_attestation"] = attestation
        if model_digest:
            form["model_digest"] = model_digest
        if subject_token is None:
            form["grant_type"] = "client_credentials"
        else:
            form.update(
                {
                    "grant_type": TOKEN_EXCHANGE,
                    "subject_token": subject_token,
                    "subject_token_type": JWT_TYPE,
                }
            )
        return self._post(form)

    def delegate(
        self,
        parent_token: str,
        *,
        child_id: str,
        child_key: SigningKey,
        child_dpop_jkt: str | None,
        details: dict[str, Any],
        resource: str | list[str] | None = None,
        child_attestation: str | None = None,
        child_model_digest: str | None = None,
    ) -> httpx.Response:
        """DESIGN flow C: this (parent) client derives a token for a sub-agent."""
        form: dict[str, Any] = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": parent_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "actor_token": actor_token(
                child_key,
                child_id,
                self.issuer,
                dpop_jkt=child_dpop_jkt,
                model_digest=child_model_digest,
            ),
            "actor_token_type": JWT_TYPE,
            "authorization_details": json.dumps([details]),
        }
        if resource:
            form["resource"] = resource
        if child_attestation:
            form["model_attestation"] = child_attestation
        return self._post(form)
