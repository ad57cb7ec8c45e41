"""A world for approval tests: a wired Tessera on a manual clock, the approvals bundle, an
agent acting for alice (owner alice), approvers alice, bob and carol, a PEP service, and a
client that signs everything at the manual clock's time."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from tests.conftest import make_config

from tessera.app import Tessera, build, initialise
from tessera.clock import ManualClock
from tessera.crypto.canonical import argument_hash
from tessera.crypto.dpop import create_proof
from tessera.crypto.keys import SigningKey, generate_signing_key, jwk_thumbprint
from tessera.http.asgi import create_app
from tessera.policy.bundle import read_bundle_dir
from tessera.sdk import client_assertion, model_attestation
from tessera.tokens.dev import mint_dev_user_token

BUNDLE = Path(__file__).resolve().parents[2] / "examples" / "approvals-bundle"
DIGEST = "sha256:" + "ab" * 32
CIBA = "urn:openid:params:grant-type:ciba"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DETAILS = {
    "type": "tessera_session",
    "tools": ["docs/*", "finance/*"],
    "data_scope": ["doc:*", "account:*"],
    "budgets": {"tool_calls": 20},
}


@dataclass
class AgentClient:
    """An agent: private_key_jwt + DPoP proofs at the manual clock's time."""

    http: TestClient | httpx.Client
    issuer: str
    client_id: str
    key: SigningKey
    dpop: SigningKey
    clock: Any

    @property
    def jkt(self) -> str:
        return jwk_thumbprint(self.dpop.private_jwk)

    def post(self, path: str, form: dict[str, Any], *, dpop: SigningKey | None = None) -> Any:
        now = self.clock.timestamp()
        body = dict(form)
        body["client_assertion_type"] = JWT_BEARER
        body["client_assertion"] = client_assertion(self.key, self.client_id, self.issuer, now=now)
        proof = create_proof(dpop or self.dpop, htm="POST", htu=self.issuer + path, iat=now)
        return self.http.post(self.issuer + path, data=body, headers={"DPoP": proof})

    def poll(self, auth_req_id: str, **kw: Any) -> Any:
        return self.post("/oauth/token", {"grant_type": CIBA, "auth_req_id": auth_req_id}, **kw)


@dataclass
class ApprovalWorld:
    t: Tessera
    http: TestClient
    clock: ManualClock
    agent: AgentClient
    op_key: SigningKey
    op_id: str
    pep_key: str
    users: dict[str, str]

    def close(self) -> None:
        """The client, then the instance (its behaviour flusher, tailer and pool): the
        engine fixture drops the PostgreSQL schema next."""
        self.http.close()
        self.t.close()

    def session(self, *, on_behalf: bool = True, resource: str = "gw") -> str:
        now = self.clock.timestamp()
        form: dict[str, Any] = {
            "authorization_details": json.dumps([DETAILS]),
            "resource": resource,
            "model_attestation": model_attestation(
                self.op_key,
                self.op_id,
                self.agent.client_id,
                DIGEST,
                self.agent.jkt,
                self.t.config.issuer,
                now=now,
            ),
        }
        if on_behalf:
            assert self.t.dev_issuer_key is not None
            form.update(
                {
                    "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                    "subject_token": mint_dev_user_token(
                        self.t.dev_issuer_key, self.t.config.issuer, self.users["alice"], now=now
                    ),
                    "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                }
            )
        else:
            form["grant_type"] = "client_credentials"
        r = self.agent.post("/oauth/token", form)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def backchannel(
        self, token: str, action: str, rid: str, arguments: dict[str, Any], **extra: Any
    ) -> Any:
        rtype = "account" if action.startswith("finance/") else "document"
        details = [
            {
                "type": "tessera_approved_call",
                "action": action,
                "resource": {"type": rtype, "id": rid},
                "arguments": arguments,
            }
        ]
        form = {"session_token": token, "authorization_details": json.dumps(details), **extra}
        return self.agent.post("/oauth/backchannel", form)

    def evaluate(
        self, token: str, action: str, rid: str, arguments: dict[str, Any], **context: Any
    ) -> dict[str, Any]:
        rtype = "account" if action.startswith("finance/") else "document"
        body = {
            "subject": {
                "type": "agent",
                "id": self.agent.client_id,
                "properties": {"token": token, "jkt": self.agent.jkt},
            },
            "action": {"name": action},
            "resource": {"type": rtype, "id": rid},
            "context": {"arguments": arguments, **context},
        }
        r = self.http.post(
            "/access/v1/evaluation", json=body, headers={"Authorization": f"Bearer {self.pep_key}"}
        )
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


def arg_hash(action: str, arguments: dict[str, Any]) -> str:
    server, tool = action.split("/", 1)
    return argument_hash(server, tool, arguments)


def build_world(engine: Engine, tmp_path: Path, **env: str) -> ApprovalWorld:
    clock = ManualClock(datetime.fromtimestamp(int(time.time()), UTC))
    config = make_config(tmp_path, TESSERA_DEV_MODE="1", **env)
    initialise(config, clock=clock, engine=engine)
    t = build(config, clock=clock, engine=engine)
    t.approval_edges.delivery._executor = None  # deliver inline: tests see the outcome
    ident = t.identity
    op = ident.create_operator("acme", None, actor="test").value
    op_key = generate_signing_key()
    ident.add_operator_key("acme", op_key.public_jwk(), actor="test")
    grants = {
        "tools": ["docs/*", "finance/*"],
        "data_scopes": ["doc:*", "account:*"],
        "budgets": {"tool_calls": 100},
    }
    users = {
        name: ident.create_user(name, grants=grants, actor="test").value.id
        for name in ("alice", "bob", "carol")
    }
    ident.register_model("acme", "llm", "1", DIGEST, actor="test")
    key, dpop = generate_signing_key(), generate_signing_key()
    agent = ident.register_agent(
        "planner",
        operator="acme",
        owner="alice",
        purpose="plans",
        expires_in_days=30,
        ceiling={
            "tools": ["docs/*", "finance/*"],
            "data_scopes": ["doc:*", "account:*"],
            "models": [DIGEST],
            "budgets": {"tool_calls": 20},
        },
        jwk=key.public_jwk(),
        actor="test",
    ).value.agent
    pep = ident.register_service("gw", scopes=["pdp.evaluate"], api_key=True, actor="test").value
    assert pep.api_key is not None
    t.pdp.policies.apply(read_bundle_dir(BUNDLE), actor="test", with_model=True)
    http = TestClient(create_app(t), base_url=config.issuer)
    return ApprovalWorld(
        t=t,
        http=http,
        clock=clock,
        agent=AgentClient(http, config.issuer, agent.id, key, dpop, clock),
        op_key=op_key,
        op_id=op.id,
        pep_key=pep.api_key.secret,
        users=users,
    )
