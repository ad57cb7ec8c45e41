"""The relationship API over in-process ASGI: models, tuples, queries, tokens, errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tessera.app import Tessera
from tessera.http.asgi import create_app
from tessera.policy.bundle import read_bundle_dir

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
MODEL = """model
  schema 1.1
type user
type group
  relations
    define member: [user]
type doc
  relations
    define viewer: [user, user:*, group#member, user with office]
    define editor: [user]
condition office(ip: ipaddress) {
  ip.in_cidr("10.0.0.0/8")
}
"""


@pytest.fixture
def client(sqlite_tessera: Tessera) -> Iterator[TestClient]:
    _, token = sqlite_tessera.admin_tokens.create("api-test", actor="test")
    with TestClient(create_app(sqlite_tessera), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


def _model(client: TestClient) -> dict[str, Any]:
    r = client.post("/rebac/v1/models", json={"dsl": MODEL})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _write(client: TestClient, *tuples: dict[str, Any], **extra: Any) -> dict[str, Any]:
    r = client.post("/rebac/v1/tuples/write", json={"writes": list(tuples), **extra})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _problem(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == code


def test_every_rebac_route_requires_an_admin_token(client: TestClient) -> None:
    for method, path in [
        ("get", "/rebac/v1/models"),
        ("get", "/rebac/v1/tuples"),
        ("post", "/rebac/v1/check"),
        ("post", "/rebac/v1/tuples/write"),
    ]:
        r = getattr(client, method)(path, headers={"Authorization": "Bearer tadm_wrong"})
        _problem(r, 401, "unauthenticated")


def test_models_apply_show_and_list(client: TestClient) -> None:
    _problem(client.get("/rebac/v1/models/active"), 404, "rebac_no_model")
    body = _model(client)
    assert body["id"].startswith("rbm_")
    assert body["active"] is True
    r = client.post("/rebac/v1/models", json={"json": body["json"]})
    assert r.status_code == 201
    assert r.headers["tessera-consistency-token"].startswith("ct1.")
    assert client.get("/rebac/v1/models/active").json()["id"] == r.json()["id"]
    assert [m["active"] for m in client.get("/rebac/v1/models").json()] == [True, False]
    bad = client.post("/rebac/v1/models", json={"dsl": "model\n  schema 1.1\ntype doc x\n"})
    _problem(bad, 400, "rebac_invalid_model")
    _problem(client.post("/rebac/v1/models", json={}), 400, "invalid_input")
    _problem(client.post("/rebac/v1/models", json={"dsl": MODEL, "json": {}}), 400, "invalid_input")


def test_a_model_the_active_bundle_does_not_pin_is_a_409_unless_forced(
    client: TestClient, sqlite_tessera: Tessera
) -> None:
    bundle = read_bundle_dir(EXAMPLES / "policy-bundle")
    sqlite_tessera.pdp.policies.apply(bundle, actor="test", with_model=True)
    pinned = client.get("/rebac/v1/models/active").json()
    refused = client.post("/rebac/v1/models", json={"dsl": MODEL})
    _problem(refused, 409, "policy_model_mismatch")  # decisions.md 89
    assert "pins ReBAC model sha256:" in refused.json()["detail"]
    assert client.get("/rebac/v1/models/active").json()["id"] == pinned["id"]
    again = client.post("/rebac/v1/models", json={"dsl": pinned["dsl"]})
    assert again.status_code == 201, again.text  # the pinned model itself needs no flag
    forced = client.post("/rebac/v1/models", params={"force": "true"}, json={"dsl": MODEL})
    assert forced.status_code == 201, forced.text
    assert client.get("/rebac/v1/models/active").json()["id"] == forced.json()["id"]


def test_write_then_check_with_the_consistency_token(client: TestClient) -> None:
    _model(client)
    out = _write(
        client,
        {"object": "group:eng", "relation": "member", "user": "user:anne"},
        {"object": "doc:1", "relation": "viewer", "user": "group:eng#member"},
    )
    assert (out["written"], out["deleted"]) == (2, 0)
    token = out["consistency_token"]
    r = client.post(
        "/rebac/v1/check",
        json={
            "user": "user:anne",
            "relation": "viewer",
            "object": "doc:1",
            "consistency_token": token,
        },
    )
    assert r.status_code == 200
    assert r.json() == {"allowed": True, "consistency_token": token}
    r = client.post(
        "/rebac/v1/check", json={"user": "user:bob", "relation": "viewer", "object": "doc:1"}
    )
    assert r.json()["allowed"] is False
    r = client.post(
        "/rebac/v1/check",
        json={
            "user": "user:bob",
            "relation": "viewer",
            "object": "doc:1",
            "contextual_tuples": [
                {"object": "group:eng", "relation": "member", "user": "user:bob"}
            ],
        },
    )
    assert r.json()["allowed"] is True


def test_conditions_expiry_and_read(client: TestClient) -> None:
    _model(client)
    _write(
        client,
        {
            "object": "doc:1",
            "relation": "viewer",
            "user": "user:anne",
            "condition": {"name": "office", "context": {"ip": "10.0.0.1"}},
        },
        {
            "object": "doc:2",
            "relation": "viewer",
            "user": "user:anne",
            "expires_at": "2099-01-01T00:00:00Z",
        },
    )
    r = client.get("/rebac/v1/tuples", params={"user": "user:anne"})
    assert r.status_code == 200
    tuples = r.json()["tuples"]
    assert tuples[0]["condition"] == {"name": "office", "context": {"ip": "10.0.0.1"}}
    assert tuples[1]["expires_at"] == "2099-01-01T00:00:00Z"
    page = client.get("/rebac/v1/tuples", params={"object": "doc:", "limit": 1}).json()
    assert len(page["tuples"]) == 1
    nxt = client.get(
        "/rebac/v1/tuples", params={"object": "doc:", "limit": 1, "cursor": page["next_cursor"]}
    ).json()
    assert nxt["tuples"][0]["object"] == "doc:2"
    assert nxt["next_cursor"] is None
    _problem(client.get("/rebac/v1/tuples", params={"cursor": "@@"}), 400, "invalid_cursor")


def test_invalid_tuples_are_refused_with_nothing_written(client: TestClient) -> None:
    _model(client)
    r = client.post(
        "/rebac/v1/tuples/write",
        json={
            "writes": [
                {"object": "doc:1", "relation": "viewer", "user": "user:anne"},
                {"object": "doc:1", "relation": "editor", "user": "group:eng#member"},
            ]
        },
    )
    _problem(r, 400, "rebac_invalid_tuple")
    assert client.get("/rebac/v1/tuples").json()["tuples"] == []
    r = client.post(
        "/rebac/v1/tuples/write",
        json={"writes": [{"object": "doc:1", "relation": "viewer", "user": "user:a", "x": 1}]},
    )
    _problem(r, 400, "invalid_input")
    r = client.post(
        "/rebac/v1/tuples/write",
        json={
            "writes": [
                {
                    "object": "doc:1",
                    "relation": "viewer",
                    "user": "user:a",
                    "expires_at": "2030-01-01T00:00:00",
                }
            ]
        },
    )
    _problem(r, 400, "rebac_invalid_tuple")  # naive timestamps are ambiguous


def test_delete_and_list_endpoints(client: TestClient) -> None:
    _model(client)
    _write(
        client,
        {"object": "doc:1", "relation": "viewer", "user": "user:anne"},
        {"object": "doc:2", "relation": "viewer", "user": "user:anne"},
        {"object": "doc:3", "relation": "viewer", "user": "user:*"},
    )
    r = client.post(
        "/rebac/v1/list-objects", json={"user": "user:anne", "relation": "viewer", "type": "doc"}
    )
    assert r.json()["objects"] == ["doc:1", "doc:2", "doc:3"]
    r = client.post(
        "/rebac/v1/tuples/delete",
        json={"tuples": [{"object": "doc:2", "relation": "viewer", "user": "user:anne"}]},
    )
    assert r.json()["deleted"] == 1
    token = r.headers["tessera-consistency-token"]
    r = client.post(
        "/rebac/v1/list-objects",
        json={"user": "user:anne", "relation": "viewer", "type": "doc", "consistency_token": token},
    )
    assert r.json()["objects"] == ["doc:1", "doc:3"]
    r = client.post(
        "/rebac/v1/list-users",
        json={"object": "doc:3", "relation": "viewer", "user_filters": ["user"]},
    )
    assert r.json() == {"users": ["user:*"], "complete": True, "consistency_token": token}


def test_query_errors_are_4xx(client: TestClient) -> None:
    _problem(
        client.post(
            "/rebac/v1/check", json={"user": "user:a", "relation": "viewer", "object": "doc:1"}
        ),
        404,
        "rebac_no_model",
    )
    _model(client)
    _problem(
        client.post(
            "/rebac/v1/check", json={"user": "user:a", "relation": "nope", "object": "doc:1"}
        ),
        400,
        "rebac_invalid_request",
    )
    _problem(
        client.post(
            "/rebac/v1/list-objects", json={"user": "user:a", "relation": "viewer", "type": "nope"}
        ),
        400,
        "rebac_unknown_type",
    )
    _problem(
        client.post(
            "/rebac/v1/check",
            json={
                "user": "user:a",
                "relation": "viewer",
                "object": "doc:1",
                "consistency_token": "ct1.AAAAAAAAJxA",
            },
        ),
        400,
        "invalid_consistency_token",
    )
    _write(
        client,
        {
            "object": "doc:1",
            "relation": "viewer",
            "user": "user:a",
            "condition": {"name": "office"},
        },
    )
    r = client.post(
        "/rebac/v1/check", json={"user": "user:a", "relation": "viewer", "object": "doc:1"}
    )
    _problem(r, 400, "rebac_condition_missing_parameters")


def test_openapi_documents_the_rebac_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/rebac/v1/models",
        "/rebac/v1/models/active",
        "/rebac/v1/tuples",
        "/rebac/v1/tuples/write",
        "/rebac/v1/tuples/delete",
        "/rebac/v1/check",
        "/rebac/v1/list-objects",
        "/rebac/v1/list-users",
    ):
        assert path in paths
