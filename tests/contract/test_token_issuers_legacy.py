"""A trusted issuer configured by file (RS256 user tokens) and legacy client secrets."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from tests.conftest import make_config

from tessera.app import build, initialise
from tessera.clock import SystemClock
from tessera.http.asgi import create_app

DIGEST = "sha256:" + "d4" * 32
IDP = "https://idp.example"
DETAILS = json.dumps([{"type": "tessera_session", "tools": ["docs/read"], "data_scope": ["doc:1"]}])


@pytest.fixture
def env(engine: Engine, tmp_path: Path) -> Iterator[dict[str, Any]]:
    idp_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(idp_key.public_key()))
    pub.update({"kid": "idp-1", "use": "sig"})
    (tmp_path / "idp-jwks.json").write_text(json.dumps({"keys": [pub]}))
    (tmp_path / "issuers.json").write_text(
        json.dumps(
            [
                {
                    "issuer": IDP,
                    "jwks_file": "idp-jwks.json",
                    "algorithms": ["RS256"],
                    "subject_token_types": ["urn:ietf:params:oauth:token-type:jwt"],
                    "user_claim": "preferred_username",
                }
            ]
        )
    )
    config = make_config(tmp_path, TESSERA_TRUSTED_ISSUERS=str(tmp_path / "issuers.json"))
    initialise(config, clock=SystemClock(), engine=engine)
    t = build(config, engine=engine)
    t.identity.create_operator("acme", None, actor="t")
    t.identity.create_user(
        "alice", grants={"tools": ["docs/*"], "data_scopes": ["doc:*"]}, actor="t"
    )
    t.identity.register_model("acme", "llm", "1", DIGEST, actor="t")
    reg = t.identity.register_agent(
        "old-bot",
        operator="acme",
        owner="alice",
        purpose="legacy integration",
        expires_in_days=3,
        legacy_secret=True,
        attestation_required=False,
        ceiling={
            "tools": ["docs/*"],
            "data_scopes": ["doc:*"],
            "models": [DIGEST],
            "dpop_required": False,
        },
        actor="t",
    ).value
    assert reg.secret is not None
    with TestClient(create_app(t), raise_server_exceptions=False) as http:
        yield {
            "t": t,
            "http": http,
            "idp_key": idp_key,
            "agent": reg.agent,
            "secret": reg.secret.secret,
        }


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def _user_token(key: Any, username: str, aud: str, **extra: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": IDP,
        "sub": "idp-user-1",
        "preferred_username": username,
        "aud": aud,
        "iat": now,
        "exp": now + 300,
        **extra,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "idp-1"})


def _exchange(env: dict[str, Any], subject: str, secret: str | None = None) -> Any:
    return env["http"].post(
        "/oauth/token",
        headers={"Authorization": _basic(env["agent"].id, secret or env["secret"])},
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": subject,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "resource": "https://tools.example/mcp",
            "model_digest": DIGEST,
            "authorization_details": DETAILS,
        },
    )


def test_user_token_from_a_configured_issuer_with_a_legacy_secret(env: dict[str, Any]) -> None:
    t = env["t"]
    r = _exchange(env, _user_token(env["idp_key"], "alice", t.config.issuer))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer"  # this agent is registered without DPoP
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == t.identity.get_user("alice").id
    assert claims["act"] == {"sub": env["agent"].id}


def test_untrusted_or_misaddressed_user_tokens_are_refused(env: dict[str, Any]) -> None:
    t = env["t"]
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for token in (
        _user_token(other, "alice", t.config.issuer),  # wrong key
        _user_token(env["idp_key"], "alice", "https://someone-else"),  # wrong aud
        _user_token(env["idp_key"], "mallory", t.config.issuer),
    ):  # unknown user
        r = _exchange(env, token)
        assert r.status_code == 400
        assert r.json()["error"] == "invalid_grant"


def test_legacy_secret_must_match(env: dict[str, Any]) -> None:
    t = env["t"]
    r = _exchange(env, _user_token(env["idp_key"], "alice", t.config.issuer), "wrong-secret")
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"
    assert r.headers["www-authenticate"].startswith("Basic")
