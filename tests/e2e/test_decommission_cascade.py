"""Decommissioning an agent, end to end against two real server processes sharing one
store: credentials disabled, sessions and their delegation subtrees revoked, relationship
tuples removed, pending approvals cancelled, RISC ``account-disabled`` delivered on the
SSF stream, audit records written, safe to retry; afterwards no token, introspection or PDP
decision of that agent succeeds on either node.

The checks after the decommission are plain functions in ``CASCADE_CHECKS``, each taking
the ``Cascade`` context.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.test_server_process import TESSERA, _free_port, _start, _stop, _wait_healthy

from tessera.app import build
from tessera.approvals.ports import CallToApprove
from tessera.config import load_config
from tessera.crypto.canonical import argument_hash
from tessera.crypto.jws import JwksKeys, verify_jwt
from tessera.crypto.keys import jwk_thumbprint
from tessera.sdk import SessionClient, client_assertion, load_private_jwk, model_attestation
from tessera.signals.caep import ACCOUNT_DISABLED as RISC_ACCOUNT_DISABLED

BUNDLE = Path(__file__).resolve().parents[2] / "examples" / "policy-bundle"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DETAILS = {
    "type": "tessera_session",
    "tools": ["docs/read"],
    "data_scope": ["doc:*"],
    "budgets": {"tool_calls": 20},
}


@dataclass
class Cascade:
    """Everything a cascade check needs: both nodes, admin auth, ids, the agent's tokens
    from before the decommission, and the event sequence the decommission started at."""

    nodes: list[str]  # base URLs; nodes[0] is the issuer's node
    env: dict[str, str]
    admin: dict[str, str]
    ids: dict[str, str]
    agent: str  # the decommissioned agent (research-assistant)
    parent_token: str
    child_token: str
    child_agent: str
    parent_sid: str
    child_sid: str
    gateway_token: str
    events_before: int
    client: SessionClient  # the decommissioned agent's own client (node 0)
    keys: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, node: int, path: str, **params: Any) -> Any:
        r = httpx.get(f"{self.nodes[node]}{path}", headers=self.admin, params=params, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()


def _cli(env: dict[str, str], *args: str) -> Any:
    out = subprocess.run([TESSERA, *args], env=env, capture_output=True, check=True, text=True)
    return json.loads(out.stdout) if "--json" in args else out.stdout


def _ids(env: dict[str, str]) -> dict[str, str]:
    ids: dict[str, str] = {}
    for kind in ("agent", "operator", "service", "user"):
        for item in _cli(env, kind, "list", "--json"):
            ids[item.get("name") or item.get("username")] = item["id"]
    return ids


@pytest.fixture(scope="module")
def two_nodes(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[list[str], dict[str, str]]]:
    data = tmp_path_factory.mktemp("cascade") / "data"
    port_a, port_b = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env.update(
        {
            "TESSERA_DATA_DIR": str(data),
            "TESSERA_DEV_MODE": "1",
            # one issuer for both nodes, as behind a load balancer
            "TESSERA_ISSUER": f"http://127.0.0.1:{port_a}",
        }
    )
    a = _start(["dev", "up"], {**env, "TESSERA_PORT": str(port_a)})
    b: subprocess.Popen[bytes] | None = None
    try:
        base_a, base_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
        _wait_healthy(base_a, a)
        _cli(env, "policy", "apply", str(BUNDLE))
        b = _start(["serve"], {**env, "TESSERA_PORT": str(port_b)})
        _wait_healthy(base_b, b)
        yield [base_a, base_b], env
    finally:
        if b is not None:
            _stop(b)
        _stop(a)


def _gateway_token(base: str, ids: dict[str, str], keys: Path) -> str:
    key = load_private_jwk(keys / "mcp-gateway.jwk")
    r = httpx.post(
        f"{base}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "scope": "pdp.evaluate introspect",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": client_assertion(key, ids["mcp-gateway"], f"{base}/oauth/token"),
        },
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _decide(c: Cascade, node: int, token: str, jkt: str | None, agent: str) -> dict[str, Any]:
    r = httpx.post(
        f"{c.nodes[node]}/access/v1/evaluation",
        headers={"Authorization": f"Bearer {c.gateway_token}"},
        json={
            "subject": {"type": "agent", "id": agent, "properties": {"token": token, "jkt": jkt}},
            "action": {"name": "docs/read"},
            "resource": {"type": "document", "id": "roadmap"},
        },
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _introspect(c: Cascade, node: int, token: str) -> dict[str, Any]:
    key = load_private_jwk(c.keys / "mcp-gateway.jwk")
    iss = c.nodes[0]
    r = httpx.post(
        f"{c.nodes[node]}/oauth/introspect",
        data={
            "token": token,
            "client_assertion_type": JWT_BEARER,
            "client_assertion": client_assertion(key, c.ids["mcp-gateway"], f"{iss}/oauth/token"),
        },
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _on_node(client: SessionClient, base: str) -> SessionClient:
    """The same agent client, sending to another node (the proof's htu names the issuer)."""
    port = httpx.URL(base).port

    def to_node(request: httpx.Request) -> None:
        request.url = request.url.copy_with(port=port)

    http = httpx.Client(timeout=10, event_hooks={"request": [to_node]})
    return SessionClient(client.issuer, client.client_id, client.key, client.dpop_key, http)


@pytest.fixture(scope="module")
def cascade(two_nodes: tuple[list[str], dict[str, str]]) -> Cascade:
    nodes, env = two_nodes
    data = Path(env["TESSERA_DATA_DIR"])
    keys = data / "demo"
    admin = {"Authorization": f"Bearer {(data / 'admin-token').read_text().strip()}"}
    ids = _ids(env)
    digest = _cli(env, "model", "list", "--json")[0]["digest"]
    op_key = load_private_jwk(keys / "acme-operator.jwk")
    iss = nodes[0]
    ra = SessionClient(
        iss,
        ids["research-assistant"],
        load_private_jwk(keys / "research-assistant.jwk"),
        load_private_jwk(keys / "research-assistant.dpop.jwk"),
        httpx.Client(timeout=10),
    )
    assert ra.dpop_jkt is not None
    attestation = model_attestation(op_key, ids["acme"], ra.client_id, digest, ra.dpop_jkt, iss)
    r = ra.session(details=DETAILS, resource="mcp-gateway", attestation=attestation)
    assert r.status_code == 200, r.text
    parent = str(r.json()["access_token"])
    child_id = ids["summarizer"]
    child_key = load_private_jwk(keys / "summarizer.jwk")
    child_jkt = jwk_thumbprint(load_private_jwk(keys / "summarizer.dpop.jwk").private_jwk)
    r = ra.delegate(
        parent,
        child_id=child_id,
        child_key=child_key,
        child_dpop_jkt=child_jkt,
        details={"type": "tessera_session", "tools": ["docs/read"], "data_scope": ["doc:*"]},
        child_attestation=model_attestation(op_key, ids["acme"], child_id, digest, child_jkt, iss),
    )
    assert r.status_code == 200, r.text
    child = str(r.json()["access_token"])
    c = Cascade(
        nodes,
        env,
        admin,
        ids,
        ra.client_id,
        parent,
        child,
        child_id,
        "",
        "",
        _gateway_token(iss, ids, keys),
        0,
        ra,
        keys,
    )
    sessions = c.get(0, "/admin/v1/sessions", agent=ra.client_id)
    c.parent_sid = sessions[0]["sid"]
    c.child_sid = c.get(0, "/admin/v1/sessions", agent=child_id)[0]["sid"]
    c.extra["child_jkt"] = child_jkt
    # before: everything works on both nodes
    for node in (0, 1):
        assert _decide(c, node, parent, ra.dpop_jkt, ra.client_id)["decision"] is True
        assert _introspect(c, node, parent)["active"] is True
        assert _introspect(c, node, child)["active"] is True
    tuples = c.get(0, "/rebac/v1/tuples", user=f"agent:{ra.client_id}")["tuples"]
    assert tuples, "the demo relates the research assistant to team research"
    c.extra["approval"] = _pending_approval(c, ra.dpop_jkt)
    c.events_before = _event_head(c)
    r = httpx.post(
        f"{iss}/admin/v1/agents/{ra.client_id}/decommission",
        headers=admin,
        json={"reason": "project ended"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "decommissioned"
    return c


def _pending_approval(c: Cascade, jkt: str) -> str:
    """A call of the agent waiting for a human (what the gateway asks the approval service
    for on ``approval_required``), created in-process against the same store."""
    t = build(load_config(c.env))
    try:
        args = {"title": "Roadmap 2027"}
        ticket = t.approvals.request_for_call(
            CallToApprove(
                session_id=c.parent_sid,
                agent_id=c.agent,
                user_id=None,
                act_chain=(),
                action="docs/publish",
                resource={"type": "document", "id": "roadmap"},
                arguments=args,
                argument_hash=argument_hash("docs", "publish", args),
                dpop_jkt=jkt,
                decision_id="dec_cascade",
                reasons=({"stage": "approval", "code": "approval_rule"},),
                risk=None,
            )
        )
    finally:
        t.close()
    assert ticket.status == "pending"
    return ticket.auth_req_id


def _verified_set(c: Cascade, token: str) -> dict[str, Any]:
    """A SET's claims, verified against the issuer's published JWKS (RFC 8417 §2)."""
    jwks = httpx.get(f"{c.nodes[0]}/.well-known/jwks.json", timeout=10).json()
    return verify_jwt(
        token,
        keys=JwksKeys.from_jwks(jwks),
        algorithms=["ES256"],
        typ="secevent+jwt",
        issuer=c.nodes[0],
        audience=c.ids["siem"],
        now=time.time(),
        require=("iat", "jti"),
    ).claims


def _sets(c: Cascade) -> list[dict[str, Any]]:
    """Everything on the demo SIEM's poll stream (RFC 8936), acknowledged as read."""
    key = (c.keys / "siem.api-key").read_text().strip()
    auth = {"Authorization": f"Bearer {key}"}
    [stream] = httpx.get(f"{c.nodes[0]}/ssf/streams", headers=auth, timeout=10).json()
    url = f"{c.nodes[0]}/ssf/poll/{stream['stream_id']}"
    r = httpx.post(url, headers=auth, json={"returnImmediately": True, "maxEvents": 1000})
    assert r.status_code == 200, r.text
    sets = r.json()["sets"]
    c.extra.setdefault("sets", []).extend(_verified_set(c, v) for v in sets.values())
    if sets:
        httpx.post(url, headers=auth, json={"ack": list(sets), "returnImmediately": True})
    return list(c.extra["sets"])


def _event_head(c: Cascade) -> int:
    seq, after = 0, 0
    while True:
        page = c.get(0, "/admin/v1/events", after=after, limit=1000)
        if not page["events"]:
            return seq
        seq = after = page["events"][-1]["seq"]


def _eventually(check: Callable[[], bool], what: str, deadline: float = 15) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {deadline} s: {what}")


# -- the checks ------------------------------------------------------------------------


def check_credentials_disabled(c: Cascade) -> None:
    creds = c.get(0, f"/admin/v1/agents/{c.agent}/credentials")
    assert creds
    assert {x["status"] for x in creds} == {"disabled"}


def check_sessions_and_subtree_revoked(c: Cascade) -> None:
    for sid in (c.parent_sid, c.child_sid):
        s = c.get(0, f"/admin/v1/sessions/{sid}")
        assert s["status"] == "revoked"
        assert s["revoked_reason"] == "agent.decommissioned"
        assert s["live"] is False


def check_relationships_removed(c: Cascade) -> None:
    assert c.get(0, "/rebac/v1/tuples", user=f"agent:{c.agent}")["tuples"] == []


def check_no_token_on_any_node(c: Cascade) -> None:
    for node in (0, 1):
        client = c.client if node == 0 else _on_node(c.client, c.nodes[1])
        r = client.session(details=DETAILS, resource="mcp-gateway")
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "invalid_client"


def check_no_introspection_or_decision_on_any_node(c: Cascade) -> None:
    jkt = c.client.dpop_jkt
    child_jkt = c.extra["child_jkt"]
    for node in (0, 1):
        for token in (c.parent_token, c.child_token):
            _eventually(
                lambda n=node, tok=token: _introspect(c, n, tok) == {"active": False},
                f"token inactive on node {node}",
            )
        _eventually(
            lambda n=node: _decide(c, n, c.parent_token, jkt, c.agent)["decision"] is False,
            f"parent denied on node {node}",
        )
        _eventually(
            lambda n=node: (
                _decide(c, n, c.child_token, child_jkt, c.child_agent)["decision"] is False
            ),
            f"delegated child denied on node {node}",
        )


def check_audit_records(c: Cascade) -> None:
    def records(event_type: str) -> list[dict[str, Any]]:
        return list(c.get(0, "/admin/v1/audit", event_type=event_type, limit=1000)["records"])

    _eventually(lambda: bool(records("agent.decommissioned")), "decommission chained")
    [rec] = records("agent.decommissioned")
    assert rec["resource"] == c.agent
    assert rec["details"]["reason"] == "project ended"
    assert rec["details"]["credentials_disabled"]
    assert rec["actor"]["principal"].startswith("admin:")
    revoked = [r for r in records("session.revoked") if r["resource"] == c.agent]
    assert sorted(revoked[-1]["details"]["sessions"]) == sorted([c.parent_sid, c.child_sid])
    tuples = [r for r in records("rebac.tuples_written") if r["resource"] == c.agent]
    assert tuples[-1]["details"]["reason"] == "agent.decommissioned"


def check_retry_changes_nothing(c: Cascade) -> None:
    head = _event_head(c)
    r = httpx.post(
        f"{c.nodes[1]}/admin/v1/agents/{c.agent}/decommission",
        headers=c.admin,
        json={"reason": "again"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "decommissioned"
    assert r.json()["status_reason"] == "project ended"
    assert _event_head(c) == head


def check_posture_sees_the_retired_workload(c: Cascade) -> None:
    """The failed attempts of check_no_token_on_any_node are evidence: the next scan
    reports a decommissioned agent whose workload is still trying (shadow_client)."""
    r = httpx.post(f"{c.nodes[1]}/admin/v1/posture/scans", headers=c.admin, timeout=30)
    assert r.status_code == 201, r.text
    found = c.get(1, "/admin/v1/posture/findings", rule="shadow_client")["findings"]
    mine = [f for f in found if f["subject"] == c.agent]
    assert mine
    assert mine[0]["evidence"]["decommissioned_agent"] is True
    assert mine[0]["evidence"]["count"] >= 2


def check_pending_approvals_cancelled(c: Cascade) -> None:
    shown = _cli(c.env, "approvals", "show", c.extra["approval"], "--json")
    assert shown["status"] == "cancelled"


def check_risc_account_disabled_on_the_ssf_stream(c: Cascade) -> None:
    """The decommission reaches SSF receivers as RISC account-disabled for the agent."""

    def disabled() -> bool:
        return any(
            RISC_ACCOUNT_DISABLED in s["events"] and s["sub_id"].get("sub") == c.agent
            for s in _sets(c)
        )

    _eventually(disabled, "RISC account-disabled SET for the agent")


CASCADE_CHECKS: list[Callable[[Cascade], None]] = [
    check_credentials_disabled,
    check_sessions_and_subtree_revoked,
    check_relationships_removed,
    check_no_token_on_any_node,
    check_no_introspection_or_decision_on_any_node,
    check_audit_records,
    check_retry_changes_nothing,
    check_posture_sees_the_retired_workload,
    check_pending_approvals_cancelled,
    check_risc_account_disabled_on_the_ssf_stream,
]


def test_decommission_cascade_end_to_end(cascade: Cascade) -> None:
    for check in CASCADE_CHECKS:
        check(cascade)
