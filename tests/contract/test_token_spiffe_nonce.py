"""SPIFFE JWT-SVID client authentication (DPoP-bound only) and server DPoP nonces."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from tests.conftest import make_config

from tessera.app import Tessera, build, initialise
from tessera.clock import SystemClock
from tessera.crypto.dpop import create_proof
from tessera.crypto.jws import sign_jwt
from tessera.crypto.keys import SigningKey, generate_signing_key
from tessera.http.asgi import create_app
from tessera.sdk import SessionClient

DIGEST = "sha256:" + "c3" * 32
SPIFFE_ID = "spiffe://acme.example/ns/agents/sa/bot"
DETAILS = {"type": "tessera_session", "tools": ["docs/read"], "data_scope": ["doc:1"]}
SPIFFE_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"


@pytest.fixture
def setup(engine: Engine, tmp_path: Path) -> Iterator[dict[str, Any]]:
    bundle_key = generate_signing_key()
    (tmp_path / "bundles.json").write_text(
        json.dumps({"acme.example": {"keys": [bundle_key.public_jwk()]}})
    )
    config = make_config(
        tmp_path, TESSERA_SPIFFE_BUNDLES=str(tmp_path / "bundles.json"), TESSERA_DPOP_NONCES="1"
    )
    initialise(config, clock=SystemClock(), engine=engine)
    t = build(config, engine=engine)
    t.identity.create_operator("acme", None, actor="t")
    t.identity.create_user("owner", actor="t")
    t.identity.register_model("acme", "llm", "1", DIGEST, actor="t")
    agent_key = generate_signing_key()
    agent = t.identity.register_agent(
        "bot",
        operator="acme",
        owner="owner",
        purpose="p",
        expires_in_days=3,
        ceiling={"tools": ["docs/*"], "data_scopes": ["doc:*"], "models": [DIGEST]},
        attestation_required=False,
        spiffe_id=SPIFFE_ID,
        jwk=agent_key.public_jwk(),
        actor="t",
    ).value.agent
    with TestClient(create_app(t), raise_server_exceptions=False) as http:
        yield {
            "t": t,
            "http": http,
            "bundle_key": bundle_key,
            "agent": agent,
            "agent_key": agent_key,
        }


def _svid(key: SigningKey, t: Tessera, sub: str = SPIFFE_ID) -> str:
    now = int(time.time())
    return sign_jwt(
        {"sub": sub, "aud": [f"{t.config.issuer}/oauth/token"], "iat": now, "exp": now + 300},
        key,
        typ="JWT",
    )


def _post(
    setup: dict[str, Any], svid: str, dpop: SigningKey | None, nonce: str | None = None
) -> Any:
    t, http = setup["t"], setup["http"]
    headers = {}
    if dpop is not None:
        headers["DPoP"] = create_proof(
            dpop, htm="POST", htu=f"{t.config.issuer}/oauth/token", iat=time.time(), nonce=nonce
        )
    return http.post(
        "/oauth/token",
        headers=headers,
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": SPIFFE_TYPE,
            "client_assertion": svid,
            "resource": "https://tools.example/mcp",
            "model_digest": DIGEST,
            "authorization_details": json.dumps([DETAILS]),
        },
    )


def test_jwt_svid_authenticates_the_registered_agent_with_dpop_and_nonce(
    setup: dict[str, Any],
) -> None:
    dpop = generate_signing_key()
    svid = _svid(setup["bundle_key"], setup["t"])
    first = _post(setup, svid, dpop)
    # nonces are on: the first proof without one is answered with use_dpop_nonce + a nonce
    assert first.status_code == 400
    assert first.json()["error"] == "use_dpop_nonce"
    nonce = first.headers["DPoP-Nonce"]
    ok = _post(setup, svid, dpop, nonce)
    assert ok.status_code == 200, ok.text
    assert ok.json()["token_type"] == "DPoP"
    # a stale or forged nonce is refused the same way
    assert _post(setup, svid, dpop, "forged").json()["error"] == "use_dpop_nonce"


def test_jwt_svid_needs_dpop_a_trusted_bundle_and_a_registered_id(setup: dict[str, Any]) -> None:
    t = setup["t"]
    r = _post(setup, _svid(setup["bundle_key"], t), None)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_dpop_proof"
    dpop = generate_signing_key()
    nonce = _post(setup, _svid(setup["bundle_key"], t), dpop).headers["DPoP-Nonce"]
    for svid in (
        _svid(generate_signing_key(), t),  # not signed by the bundle
        _svid(setup["bundle_key"], t, "spiffe://other.example/x"),  # other domain
        _svid(setup["bundle_key"], t, "spiffe://acme.example/unknown"),
    ):
        r = _post(setup, svid, dpop, nonce)
        assert r.status_code == 401
        assert r.json()["error"] == "invalid_client"


def test_session_client_retries_with_the_server_nonce(setup: dict[str, Any]) -> None:
    t = setup["t"]
    client = SessionClient(
        t.config.issuer,
        setup["agent"].id,
        setup["agent_key"],
        generate_signing_key(),
        setup["http"],
    )
    r = client.session(details=DETAILS, resource="https://tools.example/mcp", model_digest=DIGEST)
    assert r.status_code == 200, r.text
    assert client.nonce is not None


def test_the_workloads_own_svid_attests_the_model_its_operator_registered(
    setup: dict[str, Any],
) -> None:
    """DESIGN flow A: a JWT-SVID whose SPIFFE ID the operator registered for a model attests
    that model, so an agent that requires attestation needs no separate attestation JWT."""
    t = setup["t"]
    digest = "sha256:" + "e5" * 32
    t.identity.register_model("acme", "llm", "2", digest, spiffe_ids=[SPIFFE_ID], actor="t")
    t.identity.register_agent(
        "attested",
        operator="acme",
        owner="owner",
        purpose="p",
        expires_in_days=3,
        ceiling={"tools": ["docs/*"], "data_scopes": ["doc:*"], "models": [digest]},
        spiffe_id="spiffe://acme.example/ns/agents/sa/attested",
        actor="t",
    )
    # the bot's own SPIFFE ID is registered for `digest`, but the bot's ceiling does not
    # allow that model: refused
    dpop = generate_signing_key()
    svid = _svid(setup["bundle_key"], t)
    nonce = _post(setup, svid, dpop).headers["DPoP-Nonce"]
    form_without_digest = {
        "grant_type": "client_credentials",
        "client_assertion_type": SPIFFE_TYPE,
        "client_assertion": svid,
        "resource": "https://tools.example/mcp",
        "authorization_details": json.dumps([DETAILS]),
    }
    proof = create_proof(
        dpop, htm="POST", htu=f"{t.config.issuer}/oauth/token", iat=time.time(), nonce=nonce
    )
    r = setup["http"].post("/oauth/token", data=form_without_digest, headers={"DPoP": proof})
    assert r.status_code == 400
    assert r.json()["error"] == "unauthorized_client"
    # an agent whose SPIFFE ID attests no model is told so
    other = _svid(setup["bundle_key"], t, "spiffe://acme.example/ns/agents/sa/attested")
    proof = create_proof(
        dpop, htm="POST", htu=f"{t.config.issuer}/oauth/token", iat=time.time(), nonce=nonce
    )
    r = setup["http"].post(
        "/oauth/token",
        data=dict(form_without_digest, client_assertion=other),
        headers={"DPoP": proof},
    )
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_grant"
    # register the attested agent's workload for the model: now its SVID alone is enough
    t.identity.register_model(
        "acme",
        "llm",
        "3",
        "sha256:" + "f6" * 32,
        spiffe_ids=["spiffe://acme.example/ns/agents/sa/attested"],
        actor="t",
    )
    agent = t.identity.get_agent("attested")
    with t.store.write() as tx:  # widen the ceiling to the newly registered model
        tx.connection.exec_driver_sql(
            "UPDATE agents SET ceiling = ? WHERE id = ?"
            if t.store.backend == "sqlite"
            else "UPDATE agents SET ceiling = %s WHERE id = %s",
            (json.dumps({**agent.ceiling.to_dict(), "models": ["sha256:" + "f6" * 32]}), agent.id),
        )
        tx.events.append("agent.ceiling_changed", agent.id, {}, "test")
    proof = create_proof(
        dpop, htm="POST", htu=f"{t.config.issuer}/oauth/token", iat=time.time(), nonce=nonce
    )
    r = setup["http"].post(
        "/oauth/token",
        data=dict(form_without_digest, client_assertion=other),
        headers={"DPoP": proof},
    )
    assert r.status_code == 200, r.text
    claims = json.loads(base64.urlsafe_b64decode(r.json()["access_token"].split(".")[1] + "=="))
    assert claims["model"]["digest"] == "sha256:" + "f6" * 32
