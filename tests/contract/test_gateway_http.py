"""The gateway over HTTP, in-process, in front of a real upstream MCP server on loopback:
DPoP binding (htm, htu, ath, replay), JSON-RPC errors, session binding, budget release when
the upstream is down, the approval port, static upstream credentials, resources/read."""

from __future__ import annotations

import hashlib
import json
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient
from tests.conftest import make_config
from tests.e2e.test_gateway_mcp import _wait_upstream
from tests.e2e.test_server_process import _free_port, _stop

from tessera.app import Tessera, build, initialise
from tessera.audit.ports import AuditQuery
from tessera.clock import SystemClock
from tessera.crypto.dpop import create_proof
from tessera.crypto.keys import SigningKey, generate_signing_key
from tessera.gateway.ports import ApprovalTicket, CallToApprove
from tessera.gateway.wiring import build_gateway
from tessera.http.asgi import create_app
from tessera.policy.bundle import read_bundle_dir
from tessera.sdk import GatewayAuth, SessionClient, SessionTokenSource
from tessera.sdk.mcp_auth import httpx2_auth
from tessera.tokens.peek import unverified_claim

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + hashlib.sha256(b"gateway contract model").hexdigest()
ACCEPT = {"Accept": "application/json, text/event-stream"}
MODERN = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The official SDK's MCPServer, answering JSON (json_response=True)."""
    tmp = tmp_path_factory.mktemp("upstream")
    port, seen = _free_port(), tmp / "seen.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.mcp_upstream", str(port), str(seen), "json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_upstream(port, proc)
        yield f"http://127.0.0.1:{port}/mcp", seen
    finally:
        _stop(proc)


class Approvals:
    """A ``CallApprovals`` that answers as told (the approval service is another part)."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.requested: list[CallToApprove] = []
        self.redeemed: list[str] = []

    def request_for_call(
        self, call: CallToApprove, *, request_id: str | None = None
    ) -> ApprovalTicket:
        self.requested.append(call)
        return ApprovalTicket("areq_1", 120, 0, "pending")

    def status(self, auth_req_id: str) -> ApprovalTicket:
        return ApprovalTicket(auth_req_id, 120, 0, self.answer)

    def redeem_for_call(self, auth_req_id: str, call: CallToApprove) -> bool:
        self.redeemed.append(auth_req_id)
        return call == self.requested[-1]


@dataclass
class Gw:
    t: Tessera
    http: TestClient
    resource: str
    agent: str
    key: SigningKey
    dpop: SigningKey
    op_key: SigningKey
    op_id: str

    def token(self, *, tool_calls: int = 10, dpop: SigningKey | None = None) -> str:
        client = SessionClient(self.t.config.issuer, self.agent, self.key, dpop or self.dpop)
        client.http = self.http
        r = client.session(
            details={
                "type": "tessera_session",
                "tools": ["tools/*"],
                "data_scope": ["mcp_server:tools", "file:*"],
                "budgets": {"tool_calls": tool_calls},
            },
            resource=self.resource,
            attestation=client.attest(self.op_key, self.op_id, DIGEST),
        )
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def post(
        self,
        token: str,
        body: Any,
        *,
        proof: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        h = {
            **ACCEPT,
            "Authorization": f"DPoP {token}",
            "DPoP": proof or self.proof(token),
        }
        if isinstance(body, dict) and body.get("method") != "initialize":
            # The stateless protocol (2026-07-28): version header and _meta on every request.
            h["MCP-Protocol-Version"] = MODERN
            h["Mcp-Method"] = str(body.get("method"))
            if body.get("method") == "tools/call" and isinstance(body.get("params"), dict):
                h["Mcp-Name"] = str(body["params"].get("name"))
            if isinstance(body.get("params", {}), dict):
                body = {**body, "params": {**body.get("params", {}), "_meta": META}}
        h.update(headers or {})
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post("/mcp/tools", content=raw, headers=h)

    def proof(self, token: str, *, htm: str = "POST", htu: str | None = None) -> str:
        return create_proof(
            self.dpop, htm=htm, htu=htu or self.resource, access_token=token, iat=time.time()
        )

    def budget(self, token: str) -> dict[str, int]:
        with self.t.store.read() as tx:
            return tx.sessions.remaining_budgets(str(unverified_claim(token, "sid")))


def _call(tool: str, args: dict[str, Any], msg_id: int = 1) -> dict[str, Any]:
    params = {"name": tool, "arguments": args}
    return {"jsonrpc": "2.0", "id": msg_id, "method": "tools/call", "params": params}


def _setup(
    t: Tessera,
    tmp: Path,
    url: str,
    *,
    credential: str = "{mode: exchange, audience: https://tools.internal.example}",
    taint: str = "deny",
    approvals: Approvals | None = None,
) -> Gw:
    ident = t.identity
    ident.create_operator("acme", None, actor="test")
    op_key = generate_signing_key()
    ident.add_operator_key("acme", op_key.public_jwk(), actor="test")
    ident.create_user("alice", actor="test")
    ident.register_model("acme", "llm", "1", DIGEST, actor="test")
    key = generate_signing_key()
    agent = ident.register_agent(
        "worker",
        operator="acme",
        owner="alice",
        purpose="test",
        expires_in_days=1,
        ceiling={
            "tools": ["tools/read_file", "tools/send_email", "tools/fetch_url"],
            "data_scopes": ["mcp_server:tools", "file:*"],
            "models": [DIGEST],
            "budgets": {"tool_calls": 20},
        },
        jwk=key.public_jwk(),
        actor="test",
    ).value.agent
    ident.register_service(
        "mcp-gateway",
        scopes=["pdp.evaluate"],
        jwk=generate_signing_key().public_jwk(),
        actor="test",
    )
    files = read_bundle_dir(ROOT / "examples/gateway/bundle")
    files["bundle.yaml"] = files["bundle.yaml"].replace("taint: deny", f"taint: {taint}")
    t.pdp.policies.apply(files, actor="test")
    cfg = tmp / "gateway.yaml"
    cfg.write_text(
        f"""service: mcp-gateway
approval_wait: 5
upstreams:
  tools:
    url: {url}
    credential: {credential}
    tools:
      read_file: {{resource: {{type: file, id_argument: path}}}}
      fetch_url: {{untrusted_input: true}}
      send_email: {{egress: true}}
"""
    )
    t.gateway = build_gateway(t, cfg)
    t.gateway.approvals = approvals
    http = TestClient(create_app(t), base_url=t.config.issuer)
    return Gw(
        t,
        http,
        t.gateway.resource_uri("tools"),
        agent.id,
        key,
        generate_signing_key(),
        op_key,
        ident.get_operator("acme").id,
    )


@pytest.fixture
def live(engine: Engine, tmp_path: Path) -> Iterator[Tessera]:
    """A Tessera on each backend with the real clock (tokens and proofs carry real times)."""
    config = make_config(tmp_path)
    initialise(config, clock=SystemClock(), engine=engine)
    t = build(config, clock=SystemClock(), engine=engine)
    yield t
    t.close()  # before the engine fixture drops its schema


@pytest.fixture
def gw(live: Tessera, tmp_path: Path, upstream: tuple[str, Path]) -> Iterator[Gw]:
    g = _setup(live, tmp_path, upstream[0])
    with g.http:
        yield g


def test_dpop_proofs_bind_method_uri_and_token(gw: Gw) -> None:
    token = gw.token()
    ping = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    bad = [
        gw.proof(token, htm="GET"),
        gw.proof(token, htu="http://127.0.0.1:8080/mcp/other"),
        create_proof(gw.dpop, htm="POST", htu=gw.resource, access_token="x", iat=time.time()),
        create_proof(
            generate_signing_key(), htm="POST", htu=gw.resource, access_token=token, iat=time.time()
        ),
    ]
    for proof in bad:
        r = gw.post(token, ping, proof=proof)
        assert r.status_code == 401
        assert 'error="invalid' in r.headers["www-authenticate"]
    good = gw.proof(token)
    assert gw.post(token, ping, proof=good).status_code == 200
    replayed = gw.post(token, ping, proof=good)
    assert replayed.status_code == 401  # the proof's jti is single use
    assert 'error="invalid_dpop_proof"' in replayed.headers["www-authenticate"]


def test_json_rpc_errors(gw: Gw) -> None:
    token = gw.token()
    evil = gw.post(
        token,
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Origin": "http://evil.example"},
    )
    assert evil.status_code == 403  # DNS rebinding guard (MCP transports)
    r = gw.post(token, b"{not json")
    assert (r.status_code, r.json()["error"]["code"]) == (400, -32700)
    r = gw.post(token, [{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}])
    assert (r.status_code, r.json()["error"]["code"]) == (400, -32600)
    sneaky = {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "read_file"}}
    r = gw.post(token, sneaky)  # no id: a "notification" that would skip the decision
    assert (r.status_code, r.json()["error"]["code"]) == (400, -32600)
    r = gw.post(token, {"jsonrpc": "2.0", "id": 2, "method": "tasks/cancel", "params": {}})
    assert r.json()["error"]["code"] == -32601  # unknown methods are refused, not relayed
    r = gw.post(token, {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": []})
    assert r.json()["error"]["code"] == -32602
    r = gw.post(token, _call("read_file", {"path": "/srv/public/a"}), headers={"Mcp-Name": "x"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, -32600)
    assert gw.budget(token) == {"tool_calls": 10}  # nothing was spent on a refused message


def test_resources_and_prompts_are_decided(gw: Gw) -> None:
    token = gw.token()
    for method, params in [
        ("resources/read", {"uri": "file:///etc/passwd"}),
        ("prompts/get", {"name": "leak"}),
    ]:
        r = gw.post(token, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        err = r.json()["error"]
        assert err["code"] == -32001
        assert err["data"]["reason"] in ("tool_not_granted", "unmapped_action")


def test_sessions_are_bound_to_the_agent(gw: Gw) -> None:
    token = gw.token()
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    r = gw.post(token, init)
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    assert "." in sid  # the gateway's binding, not the upstream's bare id
    follow = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    listed = gw.post(token, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=follow)
    assert {t["name"] for t in listed.json()["result"]["tools"]} == {
        "read_file",
        "send_email",
        "fetch_url",
    }
    forged = {**follow, "Mcp-Session-Id": sid.split(".")[0] + ".AAAAAAAAAAAAAAAAAAAAAAAA"}
    r = gw.post(token, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, headers=forged)
    assert r.status_code == 404


def test_a_call_that_cannot_reach_the_upstream_gives_its_budget_back(
    live: Tessera, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{_free_port()}/mcp"
    gw = _setup(live, tmp_path, dead)
    with gw.http:
        token = gw.token(tool_calls=3)
        r = gw.post(token, _call("read_file", {"path": "/srv/public/a"}))
        assert r.status_code == 502
        assert r.json()["error"]["code"] == -32002
        assert gw.budget(token) == {"tool_calls": 3}
    rows = gw.t.audit.query(AuditQuery(event_type="gateway.call", limit=10))
    assert [r["outcome"] for r in rows] == ["allow", "not_executed"]
    assert rows[0]["details"]["decision_id"] == rows[1]["details"]["decision_id"]


def _taint_then_mail(gw: Gw, token: str) -> Any:
    fetched = gw.post(token, _call("fetch_url", {"url": "https://example.org"}))
    assert "result" in fetched.json(), fetched.text
    return gw.post(token, _call("send_email", {"to": "bob@example.com", "body": "x"}, 2))


@pytest.mark.parametrize("answer", ["approved", "denied"])
def test_approval_required_waits_for_the_approval_port(
    live: Tessera, tmp_path: Path, upstream: tuple[str, Path], answer: str
) -> None:
    approvals = Approvals(answer)
    gw = _setup(live, tmp_path, upstream[0], taint="approval_required", approvals=approvals)
    with gw.http:
        token = gw.token()
        r = _taint_then_mail(gw, token).json()
    (asked,) = approvals.requested
    assert asked.action == "tools/send_email"
    assert asked.arguments == {"to": "bob@example.com", "body": "x"}
    assert asked.argument_hash.startswith("sha256:")
    assert asked.dpop_jkt is not None
    if answer == "approved":
        assert r["result"]["content"][0]["text"] == "sent to bob@example.com"
        assert approvals.redeemed == ["areq_1"]
        assert gw.budget(token) == {"tool_calls": 8}
    else:
        assert r["error"]["data"]["reason"] == "approval_denied"
        assert gw.budget(token) == {"tool_calls": 9}


def test_a_human_approves_through_the_approval_service_while_the_gateway_waits(
    live: Tessera, tmp_path: Path, upstream: tuple[str, Path]
) -> None:
    """The real approval service (issue 8) behind the gateway's port: the call waits, the
    agent's owner approves, the call runs once and the approval cannot be spent again."""
    gw = _setup(live, tmp_path, upstream[0], taint="approval_required", approvals=None)
    gw.t.gateway.approvals = live.approvals
    answer: dict[str, Any] = {}
    with gw.http:
        token = gw.token()
        worker = threading.Thread(target=lambda: answer.update(_taint_then_mail(gw, token).json()))
        worker.start()
        deadline = time.monotonic() + 30
        pending: list[Any] = []
        while not pending and time.monotonic() < deadline:
            pending = live.approvals.list(status="pending")
            time.sleep(0.05)
        assert len(pending) == 1
        req = pending[0]
        assert req.action == "tools/send_email"
        # As the console does once alice's passkey assertion verified (tested with a real
        # authenticator in tests/contract/test_approver_console.py).
        alice = live.identity.get_user("alice").id
        live.approvals.decide(req.auth_req_id, alice, "approve", "ok", method="passkey")
        worker.join(30)
    assert answer["result"]["content"][0]["text"] == "sent to bob@example.com"
    assert live.approvals.get(req.auth_req_id).redeemed_at is not None  # spent by this call
    assert gw.budget(token) == {"tool_calls": 8}
    # The same call again needs a new approval: the spent one is not reused.
    again = live.approvals.redeem_for_call(req.auth_req_id, _as_call(req))
    assert again is False


def _as_call(req: Any) -> CallToApprove:
    return CallToApprove(
        req.session_id,
        req.agent_id,
        req.user_id,
        req.act_chain,
        req.action,
        req.resource,
        req.arguments,
        req.argument_hash,
        req.dpop_jkt,
        req.decision_id,
        req.reasons,
        req.risk,
    )


def test_approval_required_without_an_answer_tells_the_agent_how_to_get_one(
    live: Tessera, tmp_path: Path, upstream: tuple[str, Path]
) -> None:
    approvals = Approvals("pending")
    gw = _setup(live, tmp_path, upstream[0], taint="approval_required", approvals=approvals)
    gw.t.gateway.config = type(gw.t.gateway.config)(
        gw.t.gateway.config.service, gw.t.gateway.config.upstreams, approval_wait=0.2
    )
    with gw.http:
        err = _taint_then_mail(gw, gw.token()).json()["error"]
    assert err["code"] == -32001
    assert err["message"] == "approval required"
    data = err["data"]
    assert data["reason"] == "approval_required"
    assert data["auth_req_id"] == "areq_1"
    assert data["grant_type"] == "urn:openid:params:grant-type:ciba"
    assert data["token_endpoint"] == f"{gw.t.config.issuer}/oauth/token"
    assert {"expires_in", "interval", "decision_id"} <= set(data)


def test_without_an_approval_port_the_answer_has_no_auth_req_id(
    live: Tessera, tmp_path: Path, upstream: tuple[str, Path]
) -> None:
    gw = _setup(live, tmp_path, upstream[0], taint="approval_required")
    with gw.http:
        data = _taint_then_mail(gw, gw.token()).json()["error"]["data"]
    assert set(data) == {"reason", "decision_id"}
    assert data["reason"] == "approval_required"


def test_static_upstream_credentials(
    live: Tessera,
    tmp_path: Path,
    upstream: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GW_TEST_UPSTREAM_KEY", "static-upstream-key")
    gw = _setup(
        live,
        tmp_path,
        upstream[0],
        credential="{mode: static, env: GW_TEST_UPSTREAM_KEY}",
    )
    with gw.http:
        token = gw.token()
        r = gw.post(token, _call("read_file", {"path": "/srv/public/x"}))
        assert "result" in r.json()
    last = upstream[1].read_text().splitlines()[-1]
    assert last == "POST Bearer static-upstream-key"
    assert token not in upstream[1].read_text()


def test_sdk_auth_follows_nonces_and_renews_a_refused_token(
    tmp_path: Path, upstream: tuple[str, Path]
) -> None:
    """``tessera.sdk.GatewayAuth``: RFC 9449 §8 nonce retry; a new session on invalid_token."""
    config = make_config(tmp_path, TESSERA_DPOP_NONCES="1")
    initialise(config, clock=SystemClock())
    t = build(config, clock=SystemClock())
    gw = _setup(t, tmp_path, upstream[0])
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/list",
        "params": {"_meta": META},
    }
    headers = {**ACCEPT, "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"}
    with gw.http:
        client = SessionClient(t.config.issuer, gw.agent, gw.key, gw.dpop)
        client.http = gw.http
        source = SessionTokenSource(
            client,
            resource=gw.resource,
            details={"type": "tessera_session", "tools": ["tools/*"]},
            attestation=lambda: client.attest(gw.op_key, gw.op_id, DIGEST),
        )
        auth = httpx2_auth(GatewayAuth(source, dpop_key=gw.dpop))  # the test client's httpx2
        bare = gw.http.post("/mcp/tools", json=body, headers=headers, auth=None)
        assert bare.status_code == 401
        r = gw.http.post("/mcp/tools", json=body, headers=headers, auth=auth)
        assert r.status_code == 200, r.text  # after one use_dpop_nonce round
        assert "result" in r.json()
        first = source.token()
        t.sessions.revoke_session(str(unverified_claim(first, "sid")), "test", actor="test")
        r = gw.http.post("/mcp/tools", json=body, headers=headers, auth=auth)
        assert r.status_code == 200, r.text
        assert source.token() != first
    t.close()


def test_a_session_that_ends_between_authentication_and_the_decision_is_a_401(
    gw: Gw, upstream: tuple[str, Path]
) -> None:
    """The node learns a revocation after the guard let the request in and before the PDP
    decides: the answer is the 401 invalid_token authentication would have given (so a
    client gets a new token), not a JSON-RPC deny, and nothing reaches the upstream."""
    token = gw.token()
    sid = str(unverified_claim(token, "sid"))
    assert "result" in gw.post(token, _call("read_file", {"path": "/srv/public/a"})).json()
    gate = gw.t.gateway.gate
    real = gate.decide

    def revoked_in_between(*args: Any, **kwargs: Any) -> Any:
        gw.t.sessions.revoke_session(sid, "test", actor="test")
        gw.t.tailer.catch_up(timeout=5)  # the node learns it now, after authentication
        return real(*args, **kwargs)

    gate.decide = revoked_in_between  # type: ignore[method-assign]
    before, seen = gw.budget(token), len(upstream[1].read_text().splitlines())
    r = gw.post(token, _call("read_file", {"path": "/srv/public/a"}))
    assert r.status_code == 401, r.text
    assert 'error="invalid_token"' in ",".join(r.headers.get_list("www-authenticate"))
    assert gw.budget(token) == before
    (last,) = gw.t.audit.query(AuditQuery(event_type="gateway.call", newest_first=True, limit=1))
    assert last["outcome"] == "deny"
    assert "invalid_token" in json.dumps(last)
    assert len(upstream[1].read_text().splitlines()) == seen  # nothing reached the upstream


class _Misbehaving(socketserver.BaseRequestHandler):
    """An upstream that reads one request and answers it wrongly (``server.answer``)."""

    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            data += chunk
        answer: bytes = self.server.answer  # type: ignore[attr-defined]
        if answer:
            self.request.sendall(answer)


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # the connection closed without an answer
        b"SSH-2.0-OpenSSH_9\r\n\r\n",  # not HTTP
        b"HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/\r\ncontent-length: 0\r\n\r\n",
        b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n{"a"',
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked"
        b"\r\n\r\nzz\r\n",
    ],
    ids=["dropped", "not-http", "redirect", "short-body", "bad-chunk"],
)
def test_a_misbehaving_upstream_is_a_502_and_gives_the_budget_back(
    live: Tessera, tmp_path: Path, answer: bytes
) -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Misbehaving)
    server.daemon_threads = True
    server.answer = answer  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gw = _setup(live, tmp_path, f"http://127.0.0.1:{server.server_address[1]}/mcp")
        with gw.http:
            token = gw.token(tool_calls=3)
            r = gw.post(token, _call("read_file", {"path": "/srv/public/a"}))
            assert r.status_code == 502
            assert r.json()["error"]["code"] == -32002
            assert gw.budget(token) == {"tool_calls": 3}
    finally:
        server.shutdown()
        server.server_close()
    rows = gw.t.audit.query(AuditQuery(event_type="gateway.call", limit=10))
    assert [r["outcome"] for r in rows] == ["allow", "not_executed"]
