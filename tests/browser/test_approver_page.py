"""The approver page in a real browser (issue 8): Playwright driving Debian's Chromium
(headless) with Chromium's virtual WebAuthn authenticator (DevTools protocol, CTAP2,
internal transport, resident keys, user verification). A passkey is registered through the
enrollment link, a pending request is approved with it, and the waiting agent receives its
token; a dual-control request stays pending after the first approval and completes after
the second approver's."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import REQUIRE_SERVICES
from tests.e2e.test_approvals_e2e import _local, approval_server

from tessera.policy.bundle import read_bundle_dir
from tessera.sdk import SessionClient, load_private_jwk
from tessera.sdk.approvals import poll_approval, request_approval, wait_for_approval

CHROMIUM = os.environ.get("TESSERA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
BUNDLE = Path(__file__).resolve().parents[2] / "examples" / "approvals-bundle"


def _need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        why = f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
        if REQUIRE_SERVICES:
            pytest.fail(f"TESSERA_REQUIRE_SERVICES=1 but {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    _need_chromium()
    with approval_server(tmp_path_factory.mktemp("browser") / "data") as srv:
        _local(srv).pdp.policies.apply(read_bundle_dir(BUNDLE), actor="test", with_model=True)
        yield srv


@pytest.fixture(scope="module")
def browser(server: dict[str, Any]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def _agent(server: dict[str, Any]) -> tuple[SessionClient, str]:
    keys = server["data"] / "demo"
    t = _local(server)
    found = t.identity.get_agent("research-assistant")
    agent = {"id": found.id, "ceiling": {"models": sorted(found.ceiling.models)}}
    op = {"id": found.operator_id}
    client = SessionClient(
        server["base"],
        agent["id"],
        load_private_jwk(keys / "research-assistant.jwk"),
        load_private_jwk(keys / "research-assistant.dpop.jwk"),
    )
    r = client.session(
        details={"type": "tessera_session", "tools": ["docs/*"], "data_scope": ["doc:*"]},
        resource="https://tools.example/mcp",
        attestation=client.attest(
            load_private_jwk(keys / "acme-operator.jwk"),
            op["id"],
            sorted(agent["ceiling"]["models"])[0],
        ),
    )
    assert r.status_code == 200, r.text
    return client, str(r.json()["access_token"])


def _approver(browser: Any, server: dict[str, Any], user: str) -> Any:
    """A browser context with its own virtual authenticator; the user enrols a passkey
    through the one-time link and lands on the approvals page."""
    context = browser.new_context()
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    url, _ = _local(server).approval_edges.passkeys.enroll_link(user, actor="test")
    page.goto(url)
    page.get_by_role("button", name="Register passkey").click()
    page.wait_for_url("**/console/approvals")
    page.wait_for_selector(f"#who:has-text('{user}')")
    page._tessera_cdp = cdp  # keep the session (and its authenticator) alive
    return page


def _ask(client: SessionClient, token: str, action: str, doc: str, args: dict[str, Any]) -> str:
    r = request_approval(
        client, token, action=action, resource={"type": "document", "id": doc}, arguments=args
    )
    assert r.status_code == 200, r.text
    return str(r.json()["auth_req_id"])


def _approve(page: Any, rid: str) -> None:
    card = page.locator(f"article[data-id='{rid}']")
    card.wait_for(timeout=15_000)  # appears without a reload (the page polls)
    card.locator(".note").fill("checked in the browser")
    card.get_by_role("button", name="Approve with passkey").click()
    page.wait_for_selector(f"#status:has-text('{rid}')", timeout=15_000)


def test_register_passkey_approve_and_the_waiting_agent_gets_its_token(
    server: dict[str, Any], browser: Any
) -> None:
    alice = _approver(browser, server, "alice")
    client, token = _agent(server)
    rid = _ask(client, token, "docs/publish", "roadmap", {"title": "Roadmap 2027"})
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(wait_for_approval, client, rid, interval=2, deadline=90)
        card = alice.locator(f"article[data-id='{rid}']")
        card.wait_for(timeout=15_000)
        assert "docs/publish" in card.inner_text()
        assert "research-assistant" in card.inner_text()
        assert "Roadmap 2027" in card.locator("pre.args").inner_text()
        _approve(alice, rid)
        got = waiting.result(timeout=120)
    assert got.status_code == 200, got.text
    assert got.json()["authorization_details"][0]["type"] == "tessera_approved_call"
    assert alice.locator("#status:has-text('approved')").count() == 1
    alice.context.close()


def test_dual_control_stays_pending_until_the_second_approver(
    server: dict[str, Any], browser: Any
) -> None:
    alice = _approver(browser, server, "alice")
    bob = _approver(browser, server, "bob")
    client, token = _agent(server)
    rid = _ask(client, token, "docs/delete", "q3-budget", {"reason": "duplicate"})
    _approve(alice, rid)
    assert alice.locator("#status").inner_text().endswith("pending")
    assert poll_approval(client, rid).json()["error"] == "authorization_pending"
    _approve(bob, rid)
    assert bob.locator("#status").inner_text().endswith("approved")
    got = wait_for_approval(client, rid, interval=2, deadline=60)
    assert got.status_code == 200, got.text
    votes = _local(server).approvals.get(rid).votes
    assert sorted(v.method for v in votes) == ["passkey", "passkey"]
    alice.context.close()
    bob.context.close()
