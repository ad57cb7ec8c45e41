"""``/admin/v1/posture`` and ``/admin/v1/reviews`` over in-process ASGI: filters, paging,
problem+json errors, admin token required."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from tests.unit.posture.helpers import DIGEST, agent, base

from tessera.app import Tessera
from tessera.audit.ports import AuditQuery
from tessera.http.asgi import create_app


@pytest.fixture
def client(sqlite_tessera: Tessera) -> Iterator[TestClient]:
    base(sqlite_tessera)
    agent(sqlite_tessera, "lax", attestation_required=False)
    agent(sqlite_tessera, "legacy", legacy_secret=True, attestation_required=False)
    _, token = sqlite_tessera.admin_tokens.create("posture-test", actor="test")
    with TestClient(create_app(sqlite_tessera), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


def test_scan_then_list_findings_with_filters_and_paging(client: TestClient) -> None:
    r = client.post("/admin/v1/posture/scans")
    assert r.status_code == 201, r.text
    assert r.json()["counts"]["new"] == 3  # no attestation x2, legacy secret
    page = client.get("/admin/v1/posture/findings").json()
    assert len(page["findings"]) == 3
    assert page["next_after"] is None
    assert page["last_scan"]["id"] == r.json()["scan_id"]
    f = page["findings"][0]
    assert f["status"] == "open"
    assert f["first_seen"] == f["last_seen"]
    high = client.get("/admin/v1/posture/findings", params={"severity": "high"}).json()
    assert [x["rule"] for x in high["findings"]] == ["long_lived_credential"]
    rule = client.get(
        "/admin/v1/posture/findings", params={"rule": "agent_without_attestation"}
    ).json()
    assert {x["evidence"]["name"] for x in rule["findings"]} == {"lax", "legacy"}
    first = client.get("/admin/v1/posture/findings", params={"limit": 2}).json()
    assert len(first["findings"]) == 2
    rest = client.get(
        "/admin/v1/posture/findings", params={"after": first["next_after"], "limit": 2}
    ).json()
    keys = [x["key"] for x in first["findings"] + rest["findings"]]
    assert keys == sorted(keys)
    assert len(set(keys)) == 3
    one = client.get(f"/admin/v1/posture/findings/{keys[0]}")
    assert one.status_code == 200
    assert one.json()["key"] == keys[0]


@pytest.mark.parametrize(
    "params",
    [{"severity": "urgent"}, {"limit": "0"}, {"after": "not-a-key"}, {"rule": "Bad Rule"}],
)
def test_bad_filters_are_problem_json(client: TestClient, params: dict[str, str]) -> None:
    r = client.get("/admin/v1/posture/findings", params=params)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "invalid_input"


def test_unknown_finding_is_404_and_admin_token_is_required(client: TestClient) -> None:
    r = client.get("/admin/v1/posture/findings/" + "0" * 32)
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"
    for path in ("/admin/v1/posture/findings", "/admin/v1/reviews"):
        r = client.get(path, headers={"Authorization": "Bearer tadm_wrong"})
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"


def test_review_over_http_answer_and_close(client: TestClient) -> None:
    r = client.post("/admin/v1/reviews", json={"name": "q1", "on_expiry": "keep"})
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    assert r.json()["items"] == {"pending": 6}  # 2 agents x (1 tool, 1 scope, 1 model)
    items = client.get(f"/admin/v1/reviews/{cid}/items", params={"owner": "alice"}).json()
    tool = next(i for i in items["items"] if i["field"] == "tools" and i["item"] == "docs/read")
    r = client.post(f"/admin/v1/reviews/{cid}/items/{tool['id']}", json={"decision": "revoke"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "revoked"
    agent_ceiling = client.get(f"/admin/v1/agents/{tool['agent_id']}").json()["ceiling"]
    assert agent_ceiling["tools"] == []
    again = client.post(f"/admin/v1/reviews/{cid}/items/{tool['id']}", json={"decision": "revoke"})
    assert again.status_code == 409
    assert again.json()["code"] == "answered"
    bad = client.post(f"/admin/v1/reviews/{cid}/items/{tool['id']}", json={"decision": "maybe"})
    assert bad.status_code == 400
    early = client.post(f"/admin/v1/reviews/{cid}/close", json={})
    assert early.status_code == 409
    assert early.json()["code"] == "deadline_not_reached"
    closed = client.post(f"/admin/v1/reviews/{cid}/close", json={"force": True}).json()
    assert closed["status"] == "closed"
    assert closed["items"] == {"revoked": 1, "expired_kept": 5}
    models = client.get(f"/admin/v1/agents/{tool['agent_id']}").json()["ceiling"]["models"]
    assert models == [DIGEST]  # kept: on_expiry keep
    assert client.get("/admin/v1/reviews/rvw_nope").status_code == 404


def test_the_server_scans_on_a_schedule(sqlite_tessera: Tessera) -> None:
    assert sqlite_tessera.posture is not None
    base(sqlite_tessera)
    agent(sqlite_tessera, "lax", attestation_required=False)
    sqlite_tessera.posture.interval = 0.2  # TESSERA_POSTURE_INTERVAL, shortened for the test
    _, token = sqlite_tessera.admin_tokens.create("schedule-test", actor="test")
    with TestClient(create_app(sqlite_tessera), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        deadline = time.monotonic() + 30
        page: dict[str, object] = {}
        while time.monotonic() < deadline:
            page = c.get("/admin/v1/posture/findings").json()
            if page["findings"] and page["last_scan"]:  # the scan's log row commits last
                break
            time.sleep(0.05)
        assert [f["rule"] for f in page["findings"]] == ["agent_without_attestation"]  # type: ignore[index]
        last = page["last_scan"]
        assert isinstance(last, dict)
        assert last["id"].startswith("scan_")


def test_failed_client_authentication_is_evidence_without_secrets(client: TestClient) -> None:
    t: Tessera = client.app.state.tessera  # type: ignore[attr-defined]
    secret = "s3cr3t-never-recorded"
    basic = base64.b64encode(f"agt_ghostworkload0001:{secret}".encode()).decode()
    r = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert r.status_code == 401
    assert r.json() == {
        "error": "invalid_client",
        "error_description": r.json()["error_description"],
    }
    t.audit.chain_pending()
    [rec] = t.audit.query(AuditQuery(event_type="oauth.client_auth_failed"))
    assert rec["details"]["client_id"] == "agt_ghostworkload0001"
    assert rec["details"]["method"] == "client_secret_basic"
    assert rec["outcome"] == "failure"
    assert secret not in json.dumps(rec)
    assert basic not in json.dumps(rec)
    r = client.post("/admin/v1/posture/scans")
    found = client.get("/admin/v1/posture/findings", params={"rule": "shadow_client"}).json()
    assert [f["subject"] for f in found["findings"]] == ["agt_ghostworkload0001"]
