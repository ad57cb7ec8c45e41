"""``/admin/v1/directory`` over in-process ASGI: admin auth, problem+json errors, consistency
tokens, and the AuthZEN decision point deciding on what was written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tessera.app import Tessera
from tessera.http.asgi import create_app
from tessera.policy.bundle import read_bundle_dir

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture
def client(sqlite_tessera: Tessera) -> Iterator[TestClient]:
    _, token = sqlite_tessera.admin_tokens.create("api-test", actor="test")
    with TestClient(create_app(sqlite_tessera), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


def test_directory_routes_require_an_admin_token(client: TestClient) -> None:
    for method, path, body in (
        ("GET", "/admin/v1/directory", None),
        ("GET", "/admin/v1/directory/user/alice", None),
        ("PUT", "/admin/v1/directory/user/alice", {"attributes": {}}),
        ("DELETE", "/admin/v1/directory/user/alice", None),
        ("POST", "/admin/v1/directory/load", {"entries": {}}),
    ):
        for headers in ({"Authorization": ""}, {"Authorization": "Bearer tsa_wrong"}):
            r = client.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (method, path)
            assert r.headers["content-type"].startswith("application/problem+json")


def test_put_get_list_delete_and_load(client: TestClient) -> None:
    r = client.put("/admin/v1/directory/user/alice", json={"attributes": {"role": "admin"}})
    assert r.status_code == 200, r.text
    assert r.headers["Tessera-Consistency-Token"].startswith("ct1.")
    assert r.json()["attributes"] == {"role": "admin"}
    assert r.json()["updated_by"].startswith("admin:")
    # ids may hold any printable character, including '/' and '@'
    r = client.put("/admin/v1/directory/record/a/b@c", json={"attributes": {"n": 1}})
    assert r.status_code == 200, r.text
    assert client.get("/admin/v1/directory/record/a/b@c").json()["id"] == "a/b@c"
    r = client.post(
        "/admin/v1/directory/load",
        json={"entries": {"user": {"bob": {"role": "viewer"}}, "record": {"1": {}}}},
    )
    assert r.json() == {"set": 2, "deleted": 0}
    assert "Tessera-Consistency-Token" in r.headers
    page = client.get("/admin/v1/directory", params={"type": "user", "limit": 1}).json()
    assert [e["id"] for e in page["entries"]] == ["alice"]
    more = client.get(
        "/admin/v1/directory", params={"type": "user", "cursor": page["next_cursor"]}
    ).json()
    assert [e["id"] for e in more["entries"]] == ["bob"]
    assert more["next_cursor"] is None
    r = client.delete("/admin/v1/directory/user/bob")
    assert r.status_code == 204
    assert r.headers["Tessera-Consistency-Token"].startswith("ct1.")
    r = client.post(
        "/admin/v1/directory/load", json={"entries": {"user": {"alice": {}}}, "replace": True}
    )
    assert r.json() == {"set": 1, "deleted": 2}


def test_bad_input_is_problem_json_and_writes_nothing(client: TestClient) -> None:
    cases = [
        ("PUT", "/admin/v1/directory/bad type/x", {"attributes": {}}, 400),
        ("PUT", "/admin/v1/directory/user/x", {"attributes": [1]}, 400),
        ("PUT", "/admin/v1/directory/user/x", {"attributes": {}, "extra": 1}, 400),
        ("PUT", "/admin/v1/directory/user/x", {"attributes": {"a": "b" * 20_000}}, 413),
        ("GET", "/admin/v1/directory/user/nobody", None, 404),
        ("DELETE", "/admin/v1/directory/user/nobody", None, 404),
        ("GET", "/admin/v1/directory?cursor=!!!", None, 400),
        ("GET", "/admin/v1/directory?limit=0", None, 400),
        ("POST", "/admin/v1/directory/load", {"entries": {"user": {"x": {}}, "9bad": {}}}, 400),
    ]
    for method, path, body, status in cases:
        r = client.request(method, path, json=body)
        assert r.status_code == status, (method, path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json"), path
    assert client.get("/admin/v1/directory").json()["entries"] == []
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    r = client.put("/admin/v1/directory/user/x", json={"attributes": {"deep": deep}})
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_directory_entry"


def test_the_pdp_decides_on_the_written_directory(
    client: TestClient, sqlite_tessera: Tessera
) -> None:
    t = sqlite_tessera
    t.pdp.policies.apply(read_bundle_dir(EXAMPLES / "authzen-search"), actor="test")
    reg = t.identity.register_service("pep", scopes=["pdp.evaluate"], api_key=True, actor="test")
    assert reg.value.api_key is not None
    pep = {"Authorization": f"Bearer {reg.value.api_key.secret}"}
    request = {
        "subject": {"type": "user", "id": "ann"},
        "action": {"name": "delete"},
        "resource": {"type": "record", "id": "1"},
    }
    ask = lambda: client.post("/access/v1/evaluation", json=request, headers=pep).json()  # noqa: E731
    assert ask()["decision"] is False  # the directory knows neither ann nor record 1
    r = client.post(
        "/admin/v1/directory/load",
        json={
            "entries": {
                "user": {"ann": {"id": "ann", "role": "employee", "department": "x"}},
                "record": {"1": {"id": "1", "owner": "ann", "department": "x"}},
            }
        },
    )
    request["context"] = {"consistency_token": r.headers["Tessera-Consistency-Token"]}
    assert ask()["decision"] is True
    r = client.put(
        "/admin/v1/directory/record/1",
        json={"attributes": {"id": "1", "owner": "someone-else", "department": "x"}},
    )
    request["context"] = {"consistency_token": r.headers["Tessera-Consistency-Token"]}
    assert ask()["decision"] is False
    search = client.post(
        "/access/v1/search/resource",
        json={
            "subject": {"type": "user", "id": "ann"},
            "action": {"name": "view"},
            "resource": {"type": "record"},
        },
        headers=pep,
    )
    assert search.status_code == 200
    assert [r["id"] for r in search.json()["results"]] == ["1"]  # same department
