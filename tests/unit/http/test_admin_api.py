"""The admin API over in-process ASGI: auth, problem+json errors, consistency tokens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tessera.app import Tessera
from tessera.crypto.keys import generate_signing_key
from tessera.http.asgi import create_app

DIGEST = "sha256:" + "12" * 32


@pytest.fixture
def client(sqlite_tessera: Tessera) -> Iterator[TestClient]:
    _, token = sqlite_tessera.admin_tokens.create("api-test", actor="test")
    with TestClient(create_app(sqlite_tessera), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


def _setup(client: TestClient) -> None:
    assert client.post("/admin/v1/operators", json={"name": "acme"}).status_code == 201
    assert (
        client.post(
            "/admin/v1/users", json={"username": "alice", "grants": {"tools": ["fs/*"]}}
        ).status_code
        == 201
    )
    assert (
        client.post(
            "/admin/v1/models",
            json={"operator": "acme", "name": "llm", "version": "1", "digest": DIGEST},
        ).status_code
        == 201
    )


def _register(client: TestClient, name: str = "bot") -> dict:  # type: ignore[type-arg]
    r = client.post(
        "/admin/v1/agents",
        json={
            "name": name,
            "operator": "acme",
            "owner": "alice",
            "purpose": "tests",
            "expires_in_days": 7,
            "ceiling": {"tools": ["fs/read"], "models": [DIGEST]},
            "jwk": generate_signing_key().public_jwk(),
        },
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_every_admin_route_requires_an_admin_token(client: TestClient) -> None:
    for headers in (
        {"Authorization": ""},
        {"Authorization": "Bearer tadm_wrong"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
    ):
        r = client.get("/admin/v1/agents", headers=headers)
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["code"] == "unauthenticated"


def test_agent_lifecycle_over_http(client: TestClient) -> None:
    _setup(client)
    body = _register(client)
    agent = body["agent"]
    assert agent["client_id"] == agent["id"]
    assert agent["effective_status"] == "active"
    assert body["credentials"][0]["kind"] == "jwk"
    r = client.post(f"/admin/v1/agents/{agent['id']}/suspend", json={"reason": "check"})
    assert r.status_code == 200
    assert r.json()["status"] == "suspended"
    assert r.headers["tessera-consistency-token"].startswith("ct1.")
    assert client.post("/admin/v1/agents/bot/resume").json()["status"] == "active"
    r = client.post("/admin/v1/agents/bot/decommission", json={})
    assert r.json()["status"] == "decommissioned"
    creds = client.get("/admin/v1/agents/bot/credentials").json()
    assert [c["status"] for c in creds] == ["disabled"]
    r = client.post("/admin/v1/agents/bot/resume")
    assert r.status_code == 409
    assert r.json()["code"] == "invalid_transition"


def test_operator_kill_switch_shows_in_effective_status(client: TestClient) -> None:
    _setup(client)
    _register(client)
    assert client.post("/admin/v1/operators/acme/suspend", json={}).status_code == 200
    agent = client.get("/admin/v1/agents/bot").json()
    assert agent["status"] == "active"
    assert agent["effective_status"] == "suspended"
    listed = client.get("/admin/v1/agents").json()
    assert [a["effective_status"] for a in listed] == ["suspended"]


def test_bad_input_is_problem_json_without_echo(client: TestClient) -> None:
    _setup(client)
    secretish = "sk-live-" + "x" * 20
    r = client.post(
        "/admin/v1/agents",
        json={
            "name": "bot",
            "operator": "acme",
            "owner": "alice",
            "purpose": secretish,
            "expires_in_days": 7,
            "jwk": {"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "d": secretish},
        },
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert secretish not in r.text
    r = client.post(
        "/admin/v1/agents", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_input"
    r = client.post(
        "/admin/v1/users", json={"username": "bob", "grants": {"tools": ["no-server-part"]}}
    )
    assert r.status_code == 400
    assert "grants.tools" in r.json()["detail"]
    assert client.get("/admin/v1/users").json()[0]["username"] == "alice"  # no partial write


def test_conflicts_and_unknown_things(client: TestClient) -> None:
    _setup(client)
    r = client.post("/admin/v1/operators", json={"name": "acme"})
    assert r.status_code == 409
    assert r.json()["code"] == "already_exists"
    r = client.get("/admin/v1/agents/nope")
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"
    r = client.get("/admin/v1/nothing-here")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    r = client.delete("/admin/v1/agents")
    assert r.status_code == 405


def test_oversized_body_is_refused(client: TestClient) -> None:
    r = client.post(
        "/admin/v1/operators", content=b"x" * 70_000, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"


def test_service_api_key_is_shown_once(client: TestClient, sqlite_tessera: Tessera) -> None:
    r = client.post(
        "/admin/v1/services", json={"name": "gw", "scopes": ["pdp.evaluate"], "api_key": True}
    )
    assert r.status_code == 201
    secret = r.json()["api_key"]["secret"]
    assert secret.startswith("tsk_")
    listed = client.get("/admin/v1/services").text
    assert secret not in listed


def test_events_page_and_keys(client: TestClient) -> None:
    _setup(client)
    page = client.get("/admin/v1/events", params={"after": 0, "limit": 2}).json()
    assert len(page["events"]) == 2
    nxt = client.get("/admin/v1/events", params={"after": page["next_after"]}).json()
    assert nxt["events"][0]["seq"] == page["events"][-1]["seq"] + 1
    keys = client.get("/admin/v1/keys").json()
    assert [k["status"] for k in keys] == ["active"]
    new = client.post("/admin/v1/keys/rotate", json={"alg": "EdDSA"}).json()
    jwks = client.get("/.well-known/jwks.json").json()
    assert jwks["keys"][0]["kid"] == new["kid"]
    assert len(jwks["keys"]) == 2


def test_health_and_request_id(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = client.get("/healthz", headers={"X-Request-ID": "bad id\twith tab"})
    assert r.headers["x-request-id"] != "bad id\twith tab"
