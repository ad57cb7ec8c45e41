"""Third-party clients against a real server process: requests-oauth2client (private_key_jwt,
DPoP, token exchange, introspection, revocation) and PyJWT's PyJWKClient (our JWKS)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests_oauth2client as roc
from tests.e2e.test_server_process import _free_port, _start, _stop, _wait_healthy

from tessera.sdk import actor_token, load_private_jwk, model_attestation

RESOURCE = "https://tools.example/mcp"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
AT_TYPE = "urn:ietf:params:oauth:token-type:access_token"


def _jwk(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if k != "client_id"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import os

    data = tmp_path_factory.mktemp("tokens") / "data"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env.update({"TESSERA_DATA_DIR": str(data), "TESSERA_PORT": str(port), "TESSERA_DEV_MODE": "1"})
    base = f"http://127.0.0.1:{port}"
    proc = _start(["dev", "up"], env)
    try:
        _wait_healthy(base, proc)
        yield {"base": base, "data": data, "env": env}
    finally:
        _stop(proc)


def _ids(server: dict[str, Any]) -> dict[str, str]:
    import subprocess
    import sys

    tessera = str(Path(sys.executable).parent / "tessera")
    out: dict[str, str] = {}
    for kind in ("agent", "operator", "service", "user"):
        listing = json.loads(
            subprocess.run(
                [tessera, kind, "list", "--json"],
                env=server["env"],
                capture_output=True,
                check=True,
            ).stdout
        )
        for item in listing:
            out[item.get("name") or item.get("username")] = item["id"]
    return out


def test_requests_oauth2client_full_flow(server: dict[str, Any]) -> None:
    base, keys = server["base"], server["data"] / "demo"
    ids = _ids(server)
    md = json.loads(
        roc.requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=5).text
    )
    agent_id = ids["research-assistant"]
    client = roc.OAuth2Client(
        token_endpoint=md["token_endpoint"],
        revocation_endpoint=md["revocation_endpoint"],
        testing=True,  # plain http on loopback
        # DESIGN 6b: assertions name the issuer or the token endpoint, whatever the endpoint.
        auth=roc.PrivateKeyJwt(
            agent_id, _jwk(keys / "research-assistant.jwk"), alg="ES256", aud=md["token_endpoint"]
        ),
    )
    dpop_key = roc.DPoPKey(_jwk(keys / "research-assistant.dpop.jwk"), alg="ES256")
    op_key = load_private_jwk(keys / "acme-operator.jwk")
    import subprocess
    import sys

    tessera = str(Path(sys.executable).parent / "tessera")
    digest = json.loads(
        subprocess.run(
            [tessera, "model", "list", "--json"], env=server["env"], capture_output=True, check=True
        ).stdout
    )[0]["digest"]

    def attest(agent: str, jkt: str) -> str:
        return model_attestation(op_key, ids["acme"], agent, digest, jkt, base)

    details = json.dumps(
        [
            {
                "type": "tessera_session",
                "tools": ["docs/*"],
                "data_scope": ["doc:*"],
                "budgets": {"tool_calls": 10},
            }
        ]
    )
    user_token = subprocess.run(
        [tessera, "dev", "user-token", "alice"],
        env=server["env"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.strip()
    token = client.token_exchange(
        subject_token=user_token,
        subject_token_type=JWT_TYPE,
        dpop=True,
        dpop_key=dpop_key,
        authorization_details=details,
        resource=RESOURCE,
        model_attestation=attest(agent_id, dpop_key.dpop_jkt),
    )
    assert isinstance(token, roc.DPoPToken)
    assert token.token_type.lower() == "dpop"

    # PyJWT verifies our token from the published JWKS.
    jwks_client = jwt.PyJWKClient(md["jwks_uri"])
    signing_key = jwks_client.get_signing_key_from_jwt(token.access_token)
    claims = jwt.decode(
        token.access_token,
        signing_key.key,
        algorithms=["ES256"],
        audience=RESOURCE,
        issuer=md["issuer"],
    )
    assert claims["client_id"] == agent_id
    assert claims["sub"] == ids["alice"]
    assert claims["cnf"]["jkt"] == dpop_key.dpop_jkt

    # Delegation: the parent sends, the child consents with its actor token.
    child_id = ids["summarizer"]
    child_key = load_private_jwk(keys / "summarizer.jwk")
    child_dpop = load_private_jwk(keys / "summarizer.dpop.jwk")
    from tessera.crypto.keys import jwk_thumbprint

    child_jkt = jwk_thumbprint(child_dpop.private_jwk)
    child_token = client.token_exchange(
        subject_token=token.access_token,
        subject_token_type=AT_TYPE,
        actor_token=actor_token(child_key, child_id, base, dpop_jkt=child_jkt),
        actor_token_type=JWT_TYPE,
        dpop=True,
        dpop_key=dpop_key,
        authorization_details=json.dumps(
            [{"type": "tessera_session", "tools": ["docs/read"], "data_scope": ["doc:*"]}]
        ),
        model_attestation=attest(child_id, child_jkt),
    )
    child_claims = jwt.decode(
        child_token.access_token, signing_key.key, algorithms=["ES256"], audience=RESOURCE
    )
    assert child_claims["act"] == {"sub": child_id, "act": {"sub": agent_id}}
    assert child_claims["cnf"]["jkt"] == child_jkt

    # Introspection by the gateway service.
    svc = roc.OAuth2Client(
        token_endpoint=md["token_endpoint"],
        introspection_endpoint=md["introspection_endpoint"],
        testing=True,
        auth=roc.PrivateKeyJwt(
            ids["mcp-gateway"],
            _jwk(keys / "mcp-gateway.jwk"),
            alg="ES256",
            aud=md["token_endpoint"],
        ),
    )
    intro = svc.introspect_token(child_token.access_token)
    assert intro["active"] is True
    assert intro["act"]["sub"] == child_id

    # Revocation by the agent revokes the whole subtree.
    assert client.revoke_access_token(token.access_token) is True
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if svc.introspect_token(child_token.access_token) == {"active": False}:
            break
        time.sleep(0.05)
    assert svc.introspect_token(token.access_token) == {"active": False}
    assert svc.introspect_token(child_token.access_token) == {"active": False}


def test_client_credentials_errors_surface_as_oauth_errors(server: dict[str, Any]) -> None:
    base, keys = server["base"], server["data"] / "demo"
    ids = _ids(server)
    client = roc.OAuth2Client(
        token_endpoint=f"{base}/oauth/token",
        testing=True,
        auth=roc.PrivateKeyJwt(
            ids["summarizer"], _jwk(keys / "research-assistant.jwk"), alg="ES256"
        ),
    )
    with pytest.raises(roc.InvalidClient):
        client.client_credentials(dpop=True, resource=RESOURCE)


@pytest.mark.parametrize("shared", ["client_assertion", "dpop_proof"])
def test_a_replayed_credential_succeeds_at_most_once_under_concurrency(
    server: dict[str, Any], shared: str
) -> None:
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from tessera.crypto.dpop import create_proof
    from tessera.crypto.keys import jwk_thumbprint
    from tessera.sdk import client_assertion

    base, keys = server["base"], server["data"] / "demo"
    ids = _ids(server)
    tessera = str(Path(sys.executable).parent / "tessera")
    digest = json.loads(
        subprocess.run(
            [tessera, "model", "list", "--json"], env=server["env"], capture_output=True, check=True
        ).stdout
    )[0]["digest"]
    agent_id = ids["research-assistant"]
    key = load_private_jwk(keys / "research-assistant.jwk")
    dpop = load_private_jwk(keys / "research-assistant.dpop.jwk")
    op_key = load_private_jwk(keys / "acme-operator.jwk")
    endpoint = f"{base}/oauth/token"
    jkt = jwk_thumbprint(dpop.private_jwk)
    fixed_assertion = client_assertion(key, agent_id, endpoint)
    fixed_proof = create_proof(dpop, htm="POST", htu=endpoint, iat=time.time())

    def form() -> dict[str, str]:
        return {
            "grant_type": "client_credentials",
            "resource": RESOURCE,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": fixed_assertion
            if shared == "client_assertion"
            else client_assertion(key, agent_id, endpoint),
            "model_attestation": model_attestation(
                op_key, ids["acme"], agent_id, digest, jkt, base
            ),
            "authorization_details": json.dumps(
                [{"type": "tessera_session", "tools": ["docs/read"], "data_scope": ["doc:1"]}]
            ),
        }

    requests = [
        (
            form(),
            fixed_proof
            if shared == "dpop_proof"
            else create_proof(dpop, htm="POST", htu=endpoint, iat=time.time()),
        )
        for _ in range(50)
    ]

    def send(item: tuple[dict[str, str], str]) -> int:
        with httpx.Client(timeout=30) as http:
            return http.post(endpoint, data=item[0], headers={"DPoP": item[1]}).status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        codes = list(pool.map(send, requests))
    assert codes.count(200) == 1, codes
    assert all(c in (200, 400, 401) for c in codes)
