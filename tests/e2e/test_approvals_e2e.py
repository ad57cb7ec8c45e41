"""Human approval end to end against a real server process (issue 8): a call needs
approval, the agent polls the CIBA grant, a human approves with a passkey on the approver
console, the one-shot token works once at the PDP, a second use is denied; a denial and an
expiry produce the CIBA errors ``access_denied`` and ``expired_token``."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.contract.soft_authenticator import SoftAuthenticator
from tests.e2e.test_server_process import TESSERA, _free_port, _start, _stop, _wait_healthy

from tessera.app import Tessera, build
from tessera.config import load_config
from tessera.policy.bundle import read_bundle_dir
from tessera.sdk import SessionClient, load_private_jwk
from tessera.sdk.approvals import poll_approval, request_approval, wait_for_approval

BUNDLE = Path(__file__).resolve().parents[2] / "examples" / "approvals-bundle"
H = {"X-Tessera-Console": "1"}
ARGS = {"title": "Roadmap 2027", "visibility": "public"}


@contextmanager
def approval_server(data: Path) -> Iterator[dict[str, Any]]:
    """``tessera dev up`` on ``localhost`` (WebAuthn needs a domain RP ID) with the demo;
    yields ``{base, data, env}`` (and ``local``, the same store in process, once used)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env.update(
        {
            "TESSERA_DATA_DIR": str(data),
            "TESSERA_PORT": str(port),
            "TESSERA_DEV_MODE": "1",
            # About approvals, not behaviour: against the demo's seeded baseline, the
            # rapid repeated calls of a never-used sensitive tool here score as a burst
            # (high risk: deny and revoke), which tests/contract/test_behavior_store.py covers.
            "TESSERA_BEHAVIOUR": "0",
            "TESSERA_ISSUER": f"http://localhost:{port}",
        }
    )
    proc = _start(["dev", "up"], env)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc)
        srv: dict[str, Any] = {"base": f"http://localhost:{port}", "data": data, "env": env}
        yield srv
        if "local" in srv:
            srv["local"].close()
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with approval_server(tmp_path_factory.mktemp("approvals") / "data") as srv:
        yield srv


def _cli(server: dict[str, Any], *args: str) -> Any:
    out = subprocess.run(
        [TESSERA, *args], env=server["env"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _local(server: dict[str, Any]) -> Tessera:
    """The server's database in process, as the CLI opens it (no subprocess start-up)."""
    if "local" not in server:
        server["local"] = build(load_config(server["env"]))
    return server["local"]  # type: ignore[no-any-return]


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
    digest = sorted(agent["ceiling"]["models"])[0]
    r = client.session(
        details={"type": "tessera_session", "tools": ["docs/*"], "data_scope": ["doc:*"]},
        resource="pep",
        attestation=client.attest(load_private_jwk(keys / "acme-operator.jwk"), op["id"], digest),
    )
    assert r.status_code == 200, r.text
    return client, str(r.json()["access_token"])


def _evaluate(
    server: dict[str, Any], key: str, client: SessionClient, token: str, **context: Any
) -> dict[str, Any]:
    body = {
        "subject": {
            "type": "agent",
            "id": client.client_id,
            "properties": {"token": token, "jkt": client.dpop_jkt},
        },
        "action": {"name": "docs/publish"},
        "resource": {"type": "document", "id": "roadmap"},
        "context": {"arguments": ARGS, **context},
    }
    r = httpx.post(
        f"{server['base']}/access/v1/evaluation",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_approval_flow_over_http(server: dict[str, Any]) -> None:
    base = server["base"]
    t = _local(server)
    t.pdp.policies.apply(read_bundle_dir(BUNDLE), actor="test", with_model=True)
    pep = t.identity.register_service("pep", scopes=["pdp.evaluate"], api_key=True, actor="test")
    assert pep.value.api_key is not None
    key = pep.value.api_key.secret
    md = httpx.get(f"{base}/.well-known/oauth-authorization-server").json()
    assert md["backchannel_authentication_endpoint"] == f"{base}/oauth/backchannel"
    client, token = _agent(server)

    # The call needs a human.
    first = _evaluate(server, key, client, token)
    assert first["decision"] is False
    assert first["context"]["approval_required"] is True

    # The agent asks (CIBA backchannel) and polls.
    ack = request_approval(
        client,
        token,
        action="docs/publish",
        resource={"type": "document", "id": "roadmap"},
        arguments=ARGS,
    )
    assert ack.status_code == 200, ack.text
    rid = ack.json()["auth_req_id"]
    assert poll_approval(client, rid).json()["error"] == "authorization_pending"

    # A human (alice, the agent's owner) enrols a passkey and approves on the console.
    url, _ = _local(server).approval_edges.passkeys.enroll_link("alice", actor="test")
    enroll = url.rsplit("/", 1)[1]
    browser = httpx.Client(base_url=base, timeout=10)
    auth = SoftAuthenticator(base, "localhost")
    opts = browser.post(f"/console/api/enroll/{enroll}/options", json={}, headers=H).json()
    assert (
        browser.post(
            f"/console/api/enroll/{enroll}/verify", json=auth.create(opts), headers=H
        ).status_code
        == 200
    )
    listing = browser.get("/console/api/approvals").json()
    assert [i["auth_req_id"] for i in listing["items"]] == [rid]
    body = {"decision": "approve", "note": "publish it"}
    o = browser.post(f"/console/api/approvals/{rid}/options", json=body, headers=H).json()
    done = browser.post(
        f"/console/api/approvals/{rid}/decide",
        json={**body, "nonce": o["nonce"], "credential": auth.get(o["publicKey"])},
        headers=H,
    )
    assert done.json()["status"] == "approved"

    # The waiting agent gets its one-shot token; it works once.
    got = wait_for_approval(client, rid, interval=2, deadline=60)
    assert got.status_code == 200, got.text
    one_shot = got.json()["access_token"]
    ok = _evaluate(server, key, client, token, approval_token=one_shot)
    assert ok["decision"] is True
    assert [r["code"] for r in ok["context"]["reasons"]] == ["approved_call"]
    again = _evaluate(server, key, client, token, approval_token=one_shot)
    assert again["decision"] is False

    # A denial: access_denied.
    other = {**ARGS, "title": "Roadmap 2028"}
    ack2 = request_approval(
        client,
        token,
        action="docs/publish",
        resource={"type": "document", "id": "roadmap"},
        arguments=other,
    )
    assert ack2.status_code == 200, ack2.text
    rid2 = ack2.json()["auth_req_id"]
    _cli(server, "approvals", "deny", rid2, "--note", "not yet")
    denied = wait_for_approval(client, rid2, interval=2, deadline=60)
    assert denied.json()["error"] == "access_denied"

    # An expiry: expired_token.
    rid3 = request_approval(
        client,
        token,
        action="docs/publish",
        resource={"type": "document", "id": "roadmap"},
        arguments={**ARGS, "title": "later"},
        requested_expiry=1,
    ).json()["auth_req_id"]
    expired = wait_for_approval(client, rid3, interval=2, deadline=60)
    assert expired.json()["error"] == "expired_token"

    # Every step is in the audit ledger.
    admin = (server["data"] / "admin-token").read_text().strip()
    audit = httpx.get(
        f"{base}/admin/v1/audit",
        params={"event_type": "approval.approved"},
        headers={"Authorization": f"Bearer {admin}"},
    ).text
    assert rid in audit
    assert "publish it" not in audit  # notes and arguments stay out of the event payloads
