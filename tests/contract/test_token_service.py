"""Token service over its HTTP endpoints (in-process ASGI), on SQLite and PostgreSQL:
sessions, on-behalf-of, delegation, DPoP, introspection, revocation, lifecycle cascades."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from tests.conftest import make_config

from tessera.app import Tessera, build, initialise
from tessera.clock import SystemClock
from tessera.crypto.dpop import create_proof
from tessera.crypto.jws import JwksKeys, verify_jwt
from tessera.crypto.keys import SigningKey, generate_signing_key, jwk_thumbprint
from tessera.http.asgi import create_app
from tessera.sdk import SessionClient, client_assertion
from tessera.tokens.dev import mint_dev_user_token

DIGEST = "sha256:" + "a1" * 32
OTHER_DIGEST = "sha256:" + "b2" * 32
RESOURCE = "https://tools.example/mcp"
DETAILS = {
    "type": "tessera_session",
    "tools": ["docs/*"],
    "data_scope": ["doc:*"],
    "budgets": {"tool_calls": 10},
}


@dataclass
class World:
    t: Tessera
    http: TestClient
    op_key: SigningKey
    op_id: str
    parent: SessionClient
    child: SessionClient
    child_key: SigningKey
    child_dpop: SigningKey
    svc_id: str
    svc_key: SigningKey

    def attest(self, client: SessionClient, digest: str = DIGEST) -> str:
        return client.attest(self.op_key, self.op_id, digest)

    def user_token(self, user: str = "alice") -> str:
        assert self.t.dev_issuer_key is not None
        uid = self.t.identity.get_user(user).id
        return mint_dev_user_token(
            self.t.dev_issuer_key, self.t.config.issuer, uid, now=time.time()
        )

    def introspect(self, token: str) -> dict[str, Any]:
        aud = f"{self.t.config.issuer}/oauth/token"
        r = self.http.post(
            "/oauth/introspect",
            data={
                "token": token,
                "client_assertion": client_assertion(self.svc_key, self.svc_id, aud),
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            },
        )
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def root(self, **kw: Any) -> dict[str, Any]:
        r = self.parent.session(
            details=kw.pop("details", DETAILS),
            resource=RESOURCE,
            attestation=self.attest(self.parent),
            **kw,
        )
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


@pytest.fixture
def world(engine: Engine, tmp_path: Path) -> Iterator[World]:
    config = make_config(tmp_path, TESSERA_DEV_MODE="1")
    initialise(config, clock=SystemClock(), engine=engine)
    t = build(config, engine=engine)
    ident = t.identity
    op = ident.create_operator("acme", None, actor="test").value
    op_key = generate_signing_key()
    ident.add_operator_key("acme", op_key.public_jwk(), actor="test")
    ident.create_user(
        "alice",
        grants={
            "tools": ["docs/read", "docs/search"],
            "data_scopes": ["doc:*"],
            "budgets": {"tool_calls": 100},
        },
        actor="test",
    )
    ident.register_model("acme", "llm", "1", DIGEST, actor="test")
    ident.register_model("acme", "llm", "2", OTHER_DIGEST, actor="test")
    keys = {n: generate_signing_key() for n in ("parent", "parent_dpop", "child", "child_dpop")}
    parent = ident.register_agent(
        "planner",
        operator="acme",
        owner="alice",
        purpose="plans",
        expires_in_days=30,
        ceiling={
            "tools": ["docs/*", "mail/send"],
            "data_scopes": ["doc:*"],
            "models": [DIGEST],
            "may_delegate_to": ["reader"],
            "budgets": {"tool_calls": 10},
            "max_delegation_depth": 2,
        },
        jwk=keys["parent"].public_jwk(),
        actor="test",
    ).value.agent
    child = ident.register_agent(
        "reader",
        operator="acme",
        owner="alice",
        purpose="reads",
        expires_in_days=30,
        ceiling={
            "tools": ["docs/read"],
            "data_scopes": ["doc:*"],
            "models": [DIGEST],
            "budgets": {"tool_calls": 5},
        },
        jwk=keys["child"].public_jwk(),
        actor="test",
    ).value.agent
    svc_key = generate_signing_key()
    svc = ident.register_service(
        "gw", scopes=["introspect", "pdp.evaluate"], jwk=svc_key.public_jwk(), actor="test"
    ).value.service
    with TestClient(create_app(t), raise_server_exceptions=False) as http:
        iss = t.config.issuer
        yield World(
            t,
            http,
            op_key,
            op.id,
            SessionClient(iss, parent.id, keys["parent"], keys["parent_dpop"], http),
            SessionClient(iss, child.id, keys["child"], keys["child_dpop"], http),
            keys["child"],
            keys["child_dpop"],
            svc.id,
            svc_key,
        )


def _claims(w: World, token: str) -> dict[str, Any]:
    return verify_jwt(
        token,
        keys=JwksKeys.from_jwks(w.t.keyring.jwks()),
        algorithms=["ES256"],
        typ="at+jwt",
        issuer=w.t.config.issuer,
        audience=RESOURCE,
        now=time.time(),
    ).claims


def test_metadata_advertises_endpoints(world: World) -> None:
    md = world.http.get("/.well-known/oauth-authorization-server").json()
    iss = world.t.config.issuer
    assert md["issuer"] == iss
    assert md["token_endpoint"] == f"{iss}/oauth/token"
    assert md["jwks_uri"] == f"{iss}/.well-known/jwks.json"
    assert "urn:ietf:params:oauth:grant-type:token-exchange" in md["grant_types_supported"]
    assert md["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA"]


def test_autonomous_session_is_dpop_bound_and_carries_every_layer(world: World) -> None:
    body = world.root()
    assert body["token_type"] == "DPoP"
    assert body["expires_in"] == 900
    c = _claims(world, body["access_token"])
    agent = world.t.identity.get_agent("planner")
    assert c["sub"] == c["client_id"] == agent.id
    assert c["cnf"]["jkt"] == world.parent.dpop_jkt
    assert c["operator"] == world.op_id
    assert c["model"]["digest"] == DIGEST
    assert c["authorization_details"][0]["tools"] == ["docs/*"]
    assert c["authorization_details"][0]["budgets"] == {"tool_calls": 10}
    assert "act" not in c
    assert c["depth"] == 0
    intro = world.introspect(body["access_token"])
    assert intro["active"] is True
    assert intro["budgets_remaining"] == {"tool_calls": 10}


def test_on_behalf_of_is_intersected_with_the_users_rights(world: World) -> None:
    body = world.root(subject_token=world.user_token())
    c = _claims(world, body["access_token"])
    alice = world.t.identity.get_user("alice")
    assert c["sub"] == alice.id
    assert c["act"] == {"sub": c["client_id"]}
    # docs/* ∩ alice's [docs/read, docs/search]
    assert c["authorization_details"][0]["tools"] == ["docs/read", "docs/search"]
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    details = dict(DETAILS, tools=["mail/send"])  # explicit item outside alice's rights
    r = world.parent.session(
        details=details,
        resource=RESOURCE,
        attestation=world.attest(world.parent),
        subject_token=world.user_token(),
    )
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_authorization_details"


def test_delegation_narrows_nests_act_and_carves_budget(world: World) -> None:
    parent = world.root(subject_token=world.user_token())
    child_details = {
        "type": "tessera_session",
        "tools": ["docs/read"],
        "data_scope": ["doc:1"],
        "budgets": {"tool_calls": 4},
    }
    r = world.parent.delegate(
        parent["access_token"],
        child_id=world.child.client_id,
        child_key=world.child_key,
        child_dpop_jkt=world.child.dpop_jkt,
        details=child_details,
        child_attestation=world.attest(world.child),
    )
    assert r.status_code == 200, r.text
    c = _claims(world, r.json()["access_token"])
    p = _claims(world, parent["access_token"])
    assert c["client_id"] == world.child.client_id
    assert c["sub"] == p["sub"]
    assert c["act"] == {"sub": world.child.client_id, "act": {"sub": p["client_id"]}}
    assert c["depth"] == 1
    assert c["parent"]
    assert c["exp"] <= p["exp"]
    assert c["cnf"]["jkt"] == world.child.dpop_jkt
    assert c["authorization_details"][0]["tools"] == ["docs/read"]
    assert world.introspect(parent["access_token"])["budgets_remaining"] == {"tool_calls": 6}
    # a second child asking for more than is left is refused
    r = world.parent.delegate(
        parent["access_token"],
        child_id=world.child.client_id,
        child_key=world.child_key,
        child_dpop_jkt=world.child.dpop_jkt,
        details=dict(child_details, budgets={"tool_calls": 7}),
        child_attestation=world.attest(world.child),
    )
    assert r.status_code == 400
    # revoking the parent revokes the child
    child_token = _first_child_token(world, parent, child_details)
    aud = f"{world.t.config.issuer}/oauth/token"
    r = world.http.post(
        "/oauth/revoke",
        data={
            "token": parent["access_token"],
            "client_assertion": client_assertion(world.parent.key, world.parent.client_id, aud),
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        },
    )
    assert r.status_code == 200
    assert world.introspect(parent["access_token"]) == {"active": False}
    assert world.introspect(child_token) == {"active": False}


def _first_child_token(world: World, parent: dict[str, Any], details: dict[str, Any]) -> str:
    r = world.parent.delegate(
        parent["access_token"],
        child_id=world.child.client_id,
        child_key=world.child_key,
        child_dpop_jkt=world.child.dpop_jkt,
        details=dict(details, budgets={"tool_calls": 1}),
        child_attestation=world.attest(world.child),
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def test_only_the_holder_with_its_dpop_key_may_delegate(world: World) -> None:
    parent = world.root()
    # the child tries to use the parent's token itself
    r = world.child.delegate(
        parent["access_token"],
        child_id=world.child.client_id,
        child_key=world.child_key,
        child_dpop_jkt=world.child.dpop_jkt,
        details=DETAILS,
        child_attestation=world.attest(world.child),
    )
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_grant"
    # the parent with a different DPoP key (a thief holding the token and the client key)
    thief = SessionClient(
        world.parent.issuer,
        world.parent.client_id,
        world.parent.key,
        generate_signing_key(),
        world.http,
    )
    r = thief.delegate(
        parent["access_token"],
        child_id=world.child.client_id,
        child_key=world.child_key,
        child_dpop_jkt=world.child.dpop_jkt,
        details=DETAILS,
        child_attestation=world.attest(world.child),
    )
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_dpop_proof"


def test_model_attestation_rules(world: World) -> None:
    # attestation bound to another key
    wrong = world.parent.attest(world.op_key, world.op_id, DIGEST)
    other = SessionClient(
        world.parent.issuer,
        world.parent.client_id,
        world.parent.key,
        generate_signing_key(),
        world.http,
    )
    r = other.session(details=DETAILS, resource=RESOURCE, attestation=wrong)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_grant"
    # a registered model the ceiling does not allow
    r = world.parent.session(
        details=DETAILS, resource=RESOURCE, attestation=world.attest(world.parent, OTHER_DIGEST)
    )
    assert r.status_code == 400
    assert r.json()["error"] == "unauthorized_client"
    # self-asserted digests are refused for agents that require attestation
    r = world.parent.session(details=DETAILS, resource=RESOURCE, model_digest=DIGEST)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_grant"
    # a revoked model can no longer start sessions, and its sessions die at once
    body = world.root()
    world.t.identity.revoke_model(DIGEST, actor="test")
    assert world.introspect(body["access_token"]) == {"active": False}
    r = world.parent.session(
        details=DETAILS, resource=RESOURCE, attestation=world.attest(world.parent)
    )
    assert r.status_code == 400


@pytest.mark.parametrize(
    "change", ["suspend_agent", "decommission_agent", "suspend_operator", "disable_user"]
)
def test_lifecycle_changes_revoke_sessions_immediately(world: World, change: str) -> None:
    body = world.root(subject_token=world.user_token())
    assert world.introspect(body["access_token"])["active"] is True
    ident = world.t.identity
    {
        "suspend_agent": lambda: ident.suspend_agent("planner", actor="t"),
        "decommission_agent": lambda: ident.decommission_agent("planner", actor="t"),
        "suspend_operator": lambda: ident.suspend_operator("acme", None, actor="t"),
        "disable_user": lambda: ident.disable_user("alice", actor="t"),
    }[change]()
    assert world.introspect(body["access_token"]) == {"active": False}
    sessions = world.t.sessions.list_sessions()
    assert sessions[0].status == "revoked"
    r = world.parent.session(
        details=DETAILS, resource=RESOURCE, attestation=world.attest(world.parent)
    )
    if change != "disable_user":
        assert r.status_code == 401
        assert r.json()["error"] == "invalid_client"


def test_client_assertion_rules(world: World) -> None:
    aud = world.t.config.issuer
    assertion = client_assertion(world.parent.key, world.parent.client_id, aud)
    form = {
        "grant_type": "client_credentials",
        "client_assertion": assertion,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "authorization_details": json.dumps([DETAILS]),
        "resource": RESOURCE,
        "model_attestation": world.attest(world.parent),
    }
    proof = create_proof(
        world.parent.dpop_key,
        htm="POST",  # type: ignore[arg-type]
        htu=f"{aud}/oauth/token",
        iat=time.time(),
    )
    r = world.http.post("/oauth/token", data=form, headers={"DPoP": proof})
    assert r.status_code == 200, r.text
    # the same assertion again is a replay
    proof = create_proof(
        world.parent.dpop_key,
        htm="POST",  # type: ignore[arg-type]
        htu=f"{aud}/oauth/token",
        iat=time.time(),
    )
    form["model_attestation"] = world.attest(world.parent)
    r = world.http.post("/oauth/token", data=form, headers={"DPoP": proof})
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"
    assert r.headers["cache-control"] == "no-store"
    # wrong audience, and a key that is not registered
    for bad in (
        client_assertion(world.parent.key, world.parent.client_id, "https://evil"),
        client_assertion(generate_signing_key(), world.parent.client_id, aud),
    ):
        r = world.http.post("/oauth/token", data=dict(form, client_assertion=bad))
        assert r.status_code == 401
        assert r.json() == {
            "error": "invalid_client",
            "error_description": "client authentication failed",
        }


def test_dpop_is_required_and_single_use(world: World) -> None:
    bearer = SessionClient(
        world.parent.issuer, world.parent.client_id, world.parent.key, None, world.http
    )
    r = bearer.session(details=DETAILS, resource=RESOURCE, attestation=world.attest(world.parent))
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_dpop_proof"
    aud = world.t.config.issuer
    proof = create_proof(
        world.parent.dpop_key,
        htm="POST",  # type: ignore[arg-type]
        htu=f"{aud}/oauth/token",
        iat=time.time(),
    )
    ok = 0
    for _ in range(3):
        form = {
            "grant_type": "client_credentials",
            "client_assertion": client_assertion(world.parent.key, world.parent.client_id, aud),
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "authorization_details": json.dumps([DETAILS]),
            "resource": RESOURCE,
            "model_attestation": world.attest(world.parent),
        }
        r = world.http.post("/oauth/token", data=form, headers={"DPoP": proof})
        ok += r.status_code == 200
    assert ok == 1


def test_bad_requests_get_oauth_errors(world: World) -> None:
    r = world.http.post("/oauth/token", data={"grant_type": "password"})
    assert r.status_code == 400
    assert r.json()["error"] == "unsupported_grant_type"
    r = world.http.post("/oauth/token", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request"
    r = world.http.post(
        "/oauth/token",
        content=b"grant_type=a&grant_type=b",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.json()["error"] == "invalid_request"
    r = world.http.post("/oauth/token", data={"grant_type": "client_credentials"})
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"
    r = world.parent.session(
        details={"type": "other"}, resource=RESOURCE, attestation=world.attest(world.parent)
    )
    assert r.json()["error"] == "invalid_authorization_details"
    r = world.parent.session(
        details=DETAILS, resource="not a uri or service", attestation=world.attest(world.parent)
    )
    assert r.json()["error"] == "invalid_target"


def test_introspection_needs_the_introspect_scope(world: World) -> None:
    body = world.root()
    aud = f"{world.t.config.issuer}/oauth/token"
    r = world.http.post(
        "/oauth/introspect",
        data={
            "token": body["access_token"],
            "client_assertion": client_assertion(world.parent.key, world.parent.client_id, aud),
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        },
    )
    assert r.status_code == 403
    assert r.json()["error"] == "unauthorized_client"
    assert world.introspect("not.a.token") == {"active": False}


def test_admin_session_revoke_cuts_the_subtree(world: World) -> None:
    parent = world.root()
    child = _first_child_token(
        world, parent, {"type": "tessera_session", "tools": ["docs/read"], "data_scope": ["doc:1"]}
    )
    sid = world.t.sessions.list_sessions(agent="planner")[0].sid
    revoked = world.t.sessions.revoke_session(sid, "incident", actor="test")
    assert len(revoked) == 2
    assert world.introspect(child) == {"active": False}


def test_service_client_credentials_token(world: World) -> None:
    aud = f"{world.t.config.issuer}/oauth/token"
    r = world.http.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "scope": "pdp.evaluate",
            "client_assertion": client_assertion(world.svc_key, world.svc_id, aud),
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "pdp.evaluate"
    assert r.json()["token_type"] == "Bearer"
    r = world.http.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "scope": "ssf.manage",
            "client_assertion": client_assertion(world.svc_key, world.svc_id, aud),
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        },
    )
    assert r.json()["error"] == "invalid_scope"


def test_dpop_key_thumbprint_helper_agrees(world: World) -> None:
    assert world.parent.dpop_jkt == jwk_thumbprint(world.parent.dpop_key.public_jwk())  # type: ignore[union-attr]


def test_issuance_is_evidence_with_every_identity_layer(world: World) -> None:
    from tessera.audit.ports import AuditQuery

    body = world.root(subject_token=world.user_token())
    claims = _claims(world, body["access_token"])
    world.t.audit.chain_pending()
    records = world.t.audit.query(AuditQuery(event_type="session.issued"))
    assert len(records) == 1
    actor = records[0]["actor"]
    assert actor["agent"] == claims["client_id"]
    assert actor["user"] == claims["sub"]
    assert actor["session"] == claims["sid"]
    assert actor["operator"] == claims["operator"]
    assert actor["model_digest"] == DIGEST
    assert records[0]["jti"] == claims["jti"]
    assert body["access_token"] not in json.dumps(records)
