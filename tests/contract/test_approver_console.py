"""The approver console over HTTP with a software authenticator (issue 8): enrollment by a
one-time link, passkey sign-in, each decision a WebAuthn assertion over the request's
binding data; a stolen session cookie alone approves nothing; the dev fallback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from tests.contract.approvals_world import ApprovalWorld, build_world
from tests.contract.soft_authenticator import SoftAuthenticator

from tessera.tokens.dev import mint_dev_user_token

H = {"X-Tessera-Console": "1"}
PUBLISH = {"title": "Q3 plan"}


@pytest.fixture
def w(engine: Engine, tmp_path: Path) -> Iterator[ApprovalWorld]:
    # WebAuthn RP IDs are domain names, never IP addresses.
    world = build_world(engine, tmp_path, TESSERA_ISSUER="http://localhost:8080")
    yield world
    world.close()


def _enroll(w: ApprovalWorld, user: str) -> tuple[TestClient, SoftAuthenticator]:
    url, _ = w.t.approval_edges.passkeys.enroll_link(user, actor="test")
    token = url.rsplit("/", 1)[1]
    browser = TestClient(w.http.app, base_url=w.t.config.issuer)
    page = browser.get(f"/console/enroll/{token}")
    assert page.status_code == 200
    assert "Register your passkey" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    auth = SoftAuthenticator(w.t.config.issuer, "localhost")
    opts = browser.post(f"/console/api/enroll/{token}/options", json={}, headers=H).json()
    assert opts["authenticatorSelection"]["residentKey"] == "required"
    r = browser.post(f"/console/api/enroll/{token}/verify", json=auth.create(opts), headers=H)
    assert r.status_code == 200, r.text
    assert "httponly" in r.headers["set-cookie"].lower()
    # The link works once.
    again = browser.post(f"/console/api/enroll/{token}/options", json={}, headers=H)
    assert again.status_code == 401
    return browser, auth


def _approve(browser: TestClient, auth: SoftAuthenticator, rid: str, decision: str) -> Any:
    body = {"decision": decision, "note": "ok"}
    opts = browser.post(f"/console/api/approvals/{rid}/options", json=body, headers=H).json()
    cred = auth.get(opts["publicKey"])
    return browser.post(
        f"/console/api/approvals/{rid}/decide",
        json={**body, "nonce": opts["nonce"], "credential": cred},
        headers=H,
    )


def test_enroll_sign_in_and_approve_with_a_passkey(w: ApprovalWorld) -> None:
    browser, auth = _enroll(w, "alice")
    token = w.session()
    rid = w.backchannel(token, "docs/publish", "7", PUBLISH).json()["auth_req_id"]
    listing = browser.get("/console/api/approvals").json()
    (item,) = listing["items"]
    assert item["auth_req_id"] == rid
    assert item["layers"]["agent_name"] == "planner"
    assert item["layers"]["user_name"] == "alice"
    assert item["layers"]["operator"]
    page = browser.get("/console/approvals")
    assert rid in page.text
    assert "docs/publish" in page.text
    r = _approve(browser, auth, rid, "approve")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved"
    votes = w.t.approvals.get(rid).votes
    assert [(v.method, v.decision) for v in votes] == [("passkey", "approve")]
    assert w.agent.poll(rid).status_code == 200
    # A fresh sign-in with the passkey (discoverable credential) works too.
    fresh = TestClient(w.http.app, base_url=w.t.config.issuer)
    opts = fresh.post("/console/api/login/options", json={}, headers=H).json()
    assert (
        fresh.post("/console/api/login/verify", json=auth.get(opts), headers=H).status_code == 200
    )
    assert fresh.get("/console/api/approvals").status_code == 200


def test_an_assertion_is_bound_to_one_decision_on_one_request(w: ApprovalWorld) -> None:
    browser, auth = _enroll(w, "alice")
    token = w.session()
    rid = w.backchannel(token, "docs/publish", "7", PUBLISH).json()["auth_req_id"]
    rid2 = w.backchannel(token, "docs/publish", "8", PUBLISH).json()["auth_req_id"]
    deny = {"decision": "deny", "note": ""}
    opts = browser.post(f"/console/api/approvals/{rid}/options", json=deny, headers=H).json()
    cred = auth.get(opts["publicKey"])
    # The assertion made for "deny" cannot approve, nor decide another request.
    flipped = {"decision": "approve", "note": "", "nonce": opts["nonce"], "credential": cred}
    assert (
        browser.post(f"/console/api/approvals/{rid}/decide", json=flipped, headers=H).status_code
        == 401
    )
    other = {**deny, "nonce": opts["nonce"], "credential": cred}
    assert (
        browser.post(f"/console/api/approvals/{rid2}/decide", json=other, headers=H).status_code
        == 401
    )
    ok = browser.post(f"/console/api/approvals/{rid}/decide", json=other, headers=H)
    assert ok.status_code == 200
    assert ok.json()["status"] == "denied"
    # Replaying the same assertion (and nonce) fails.
    replay = browser.post(f"/console/api/approvals/{rid}/decide", json=other, headers=H)
    assert replay.status_code in (401, 409)


def test_stolen_session_without_the_authenticator_cannot_approve(w: ApprovalWorld) -> None:
    browser, _ = _enroll(w, "alice")
    token = w.session()
    rid = w.backchannel(token, "docs/publish", "7", PUBLISH).json()["auth_req_id"]
    thief = SoftAuthenticator(w.t.config.issuer, "localhost")
    thief.create({"user": {"id": "eA"}, "challenge": "AA"})
    body = {"decision": "approve", "note": ""}
    opts = browser.post(f"/console/api/approvals/{rid}/options", json=body, headers=H).json()
    cred = thief.get(opts["publicKey"], cred_id=next(iter(thief.keys)))
    r = browser.post(
        f"/console/api/approvals/{rid}/decide",
        json={**body, "nonce": opts["nonce"], "credential": cred},
        headers=H,
    )
    assert r.status_code == 401
    assert w.t.approvals.status(rid).status == "pending"
    # No console header: refused before anything else (CSRF guard).
    assert browser.post(f"/console/api/approvals/{rid}/options", json=body).status_code == 403


def test_bob_cannot_decide_alices_request_and_sees_nothing(w: ApprovalWorld) -> None:
    _enroll(w, "alice")
    bob, bob_auth = _enroll(w, "bob")
    token = w.session()
    rid = w.backchannel(token, "docs/publish", "7", PUBLISH).json()["auth_req_id"]
    assert bob.get("/console/api/approvals").json()["items"] == []
    r = _approve(bob, bob_auth, rid, "approve")
    assert r.status_code == 409
    assert r.json()["code"] == "not_an_approver"


def test_dev_fallback_is_dev_only_and_recorded_as_dev(w: ApprovalWorld) -> None:
    assert w.t.dev_issuer_key is not None
    browser = TestClient(w.http.app, base_url=w.t.config.issuer)
    assert "Development only" in browser.get("/console/approvals").text
    ut = mint_dev_user_token(
        w.t.dev_issuer_key, w.t.config.issuer, w.users["alice"], now=time.time()
    )
    assert (
        browser.post("/console/api/dev-login", json={"user_token": ut}, headers=H).status_code
        == 200
    )
    token = w.session()
    rid = w.backchannel(token, "docs/publish", "7", PUBLISH).json()["auth_req_id"]
    r = browser.post(
        f"/console/api/approvals/{rid}/dev-decide", json={"decision": "approve"}, headers=H
    )
    assert r.status_code == 200
    assert [v.method for v in w.t.approvals.get(rid).votes] == ["dev"]


def test_no_dev_fallback_outside_dev_mode(engine: Engine, tmp_path: Path) -> None:
    w = build_world(engine, tmp_path, TESSERA_ISSUER="http://localhost:8080")
    object.__setattr__(w.t.config, "dev_mode", False)
    browser = TestClient(w.http.app, base_url=w.t.config.issuer)
    assert "Development only" not in browser.get("/console/approvals").text
    r = browser.post("/console/api/dev-login", json={"user_token": "x"}, headers=H)
    assert r.status_code == 403
    w.close()


def test_expired_console_sessions_and_links_are_purged(w: ApprovalWorld) -> None:
    from tessera.store.sql_approvals import SqlApprovalRepo

    browser, _ = _enroll(w, "alice")
    w.t.approval_edges.passkeys.enroll_link("bob", actor="test")
    assert browser.get("/console/api/approvals").status_code == 200
    w.clock.advance(days=2)
    assert browser.get("/console/api/approvals").status_code == 401  # the session expired
    with w.t.store.write() as tx:
        assert SqlApprovalRepo(tx.connection).purge_sessions(w.clock.now()) == 3
