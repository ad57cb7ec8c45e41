"""The MCP gateway end to end: the official ``mcp`` SDK on both sides.

A real upstream (``MCPServer`` with read_file, send_email, delete_records and an untrusted
fetch_url) on loopback; a real ``tessera gateway`` process; the real ``mcp`` client. The same
scenario runs twice: with a stock client and a bearer token (an agent registered with
``dpop_required: false``) and through ``tessera.sdk``'s DPoP auth.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.test_server_process import _free_port, _start, _stop, _wait_healthy

from tessera.app import Tessera, build, initialise
from tessera.config import load_config
from tessera.crypto.jws import JwksKeys, verify_jwt
from tessera.crypto.keys import SigningKey, generate_signing_key
from tessera.policy.bundle import read_bundle_dir
from tessera.sdk import GatewayAuth, SessionClient, SessionTokenSource, mcp_http_client

mcp = pytest.importorskip("mcp")
from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + hashlib.sha256(b"gateway e2e model").hexdigest()
UPSTREAM_AUDIENCE = "https://tools.internal.example"
TOOLS = ["tools/read_file", "tools/send_email", "tools/fetch_url"]  # no delete_records


@dataclass
class Agent:
    id: str
    key: SigningKey
    dpop: SigningKey | None


@dataclass
class World:
    base: str
    resource: str
    env: dict[str, str]
    tessera: Tessera
    seen: Path
    operator: str
    op_key: SigningKey
    bearer: Agent
    dpop: Agent


def _agent(t: Tessera, name: str, *, dpop: bool) -> Agent:
    key = generate_signing_key("ES256")
    reg = t.identity.register_agent(
        name,
        operator="acme",
        owner="alice",
        purpose="gateway e2e",
        expires_in_days=1,
        ceiling={
            "tools": TOOLS,
            "data_scopes": ["mcp_server:tools", "file:*"],
            "models": [DIGEST],
            "budgets": {"tool_calls": 50, "external_calls": 10},
            "dpop_required": dpop,
        },
        jwk=key.public_jwk(),
        actor="test",
    ).value
    return Agent(reg.agent.id, key, generate_signing_key("ES256") if dpop else None)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("gateway")
    port, up_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env.update(
        {
            "TESSERA_DATA_DIR": str(tmp / "data"),
            "TESSERA_PORT": str(port),
            "TESSERA_KEK": "b" * 64,
            "TESSERA_RATE_LIMIT": "0",
        }
    )
    config = load_config(env)
    initialise(config)
    t = build(config)
    t.identity.create_operator("acme", "Acme", actor="test")
    t.identity.create_user("alice", grants={"tools": ["tools/*"]}, actor="test")
    op_key = generate_signing_key("ES256")
    t.identity.add_operator_key("acme", op_key.public_jwk(), actor="test")
    t.identity.register_model("acme", "llm", "1", DIGEST, actor="test")
    operator = t.identity.get_operator("acme").id
    t.identity.register_service(
        "mcp-gateway",
        scopes=["pdp.evaluate"],
        jwk=generate_signing_key("ES256").public_jwk(),
        actor="test",
    )
    t.pdp.policies.apply(read_bundle_dir(ROOT / "examples/gateway/bundle"), actor="test")
    bearer, dpop = _agent(t, "stock-client", dpop=False), _agent(t, "sdk-client", dpop=True)
    seen = tmp / "upstream-authorization.log"
    gw_config = tmp / "gateway.yaml"
    gw_config.write_text(
        (ROOT / "examples/gateway/gateway.yaml")
        .read_text()
        .replace("http://127.0.0.1:8080/dev/demo-upstream/mcp", f"http://127.0.0.1:{up_port}/mcp")
    )
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.mcp_upstream", str(up_port), str(seen)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = _start(["gateway", "--config", str(gw_config)], env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, server)
        _wait_upstream(up_port, upstream)
        yield World(base, f"{base}/mcp/tools", env, t, seen, operator, op_key, bearer, dpop)
    finally:
        out = _stop(server)
        _stop(upstream)
        t.close()
        if "Traceback" in out:
            print(out[-4000:])


def _wait_upstream(port: int, proc: subprocess.Popen[bytes]) -> None:
    import time

    end = time.monotonic() + 30
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError("upstream exited early")
        try:
            httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("upstream did not start")


def _source(w: World, agent: Agent, *, tool_calls: int = 20) -> SessionTokenSource:
    client = SessionClient(w.base, agent.id, agent.key, agent.dpop)
    return SessionTokenSource(
        client,
        resource=w.resource,
        details={
            "type": "tessera_session",
            "tools": ["tools/*"],
            "data_scope": ["mcp_server:tools", "file:*"],
            "budgets": {"tool_calls": tool_calls, "external_calls": 5},
        },
        attestation=lambda: client.attest(w.op_key, w.operator, DIGEST),
    )


def _http_client(w: World, agent: Agent, source: SessionTokenSource) -> Any:
    """The stock client: a plain bearer header. The SDK client: GatewayAuth with DPoP."""
    if agent.dpop is None:
        import httpx2

        return httpx2.AsyncClient(headers={"Authorization": f"Bearer {source.token()}"})
    return mcp_http_client(GatewayAuth(source, dpop_key=agent.dpop))


def _error(result: Any) -> dict[str, Any]:
    """The JSON-RPC error a call came back with (the SDK raises MCPError)."""
    return {"code": result.error.code, "message": result.error.message, **(result.error.data or {})}


async def _call(client: Client, tool: str, args: dict[str, Any]) -> Any:
    from mcp.shared.exceptions import MCPError

    try:
        return await client.call_tool(tool, args)
    except MCPError as exc:
        return exc


def _sid(token: str) -> str:
    from tessera.tokens.peek import unverified_claim

    return str(unverified_claim(token, "sid"))


@pytest.fixture(params=["stock-bearer", "sdk-dpop"])
def agent(request: pytest.FixtureRequest, world: World) -> Agent:
    return world.bearer if request.param == "stock-bearer" else world.dpop


def test_discovery_from_the_401_and_metadata(world: World) -> None:
    """MCP authorization: 401 → resource_metadata → authorization server → token endpoint."""
    r = httpx.post(world.resource, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert r.status_code == 401
    challenges = r.headers.get_list("www-authenticate")
    assert any(c.startswith("Bearer ") for c in challenges)
    assert any(c.startswith("DPoP ") for c in challenges)
    from mcp.client.auth.utils import extract_resource_metadata_from_www_auth

    meta_url = extract_resource_metadata_from_www_auth(r)  # the SDK's own parser
    assert meta_url == f"{world.base}/.well-known/oauth-protected-resource/mcp/tools"
    meta = httpx.get(meta_url).json()
    assert meta["resource"] == world.resource
    (issuer,) = meta["authorization_servers"]
    asm = httpx.get(f"{issuer}/.well-known/oauth-authorization-server").json()
    assert asm["token_endpoint"] == f"{world.base}/oauth/token"
    # A token for another audience is refused with invalid_token.
    src = _source(world, world.bearer)
    other = SessionTokenSource(
        SessionClient(world.base, world.bearer.id, world.bearer.key, None),
        resource="https://elsewhere.example/mcp",
        details={"type": "tessera_session", "tools": ["tools/*"]},
        attestation=lambda: src._client.attest(world.op_key, world.operator, DIGEST),
    )
    r = httpx.post(
        world.resource,
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Authorization": f"Bearer {other.token()}"},
    )
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_a_dpop_agent_cannot_use_a_bearer_header(world: World) -> None:
    token = _source(world, world.dpop).token()
    r = httpx.post(
        world.resource,
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    assert r.status_code == 401
    r = httpx.post(
        world.resource,
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Authorization": f"DPoP {token}"},  # no proof
    )
    assert r.status_code == 401
    assert 'error="invalid_dpop_proof"' in r.headers["www-authenticate"]


def test_scenario(world: World, agent: Agent) -> None:
    jwks = httpx.get(f"{world.base}/.well-known/jwks.json").json()
    asyncio.run(_scenario(world, agent, JwksKeys.from_jwks(jwks)))


async def _scenario(w: World, agent: Agent, tessera_keys: JwksKeys) -> None:
    source = _source(w, agent)
    token = source.token()
    http = _http_client(w, agent, source)
    # The stock client speaks the session-based handshake (initialize, Mcp-Session-Id, SSE
    # answers, the GET stream, DELETE at the end); the SDK client the stateless 2026 protocol.
    mode = "legacy" if agent.dpop is None else "auto"
    transport = streamable_http_client(w.resource, http_client=http)
    async with http, Client(transport, mode=mode) as client:
        listed = {t.name for t in (await client.list_tools()).tools}
        assert listed == {"read_file", "send_email", "fetch_url"}  # delete_records is absent

        ok = await _call(client, "read_file", {"path": "/srv/public/a.txt"})
        assert not ok.is_error
        assert ok.content[0].text == "contents of /srv/public/a.txt"

        refused = await _call(client, "delete_records", {"table": "users"})
        err = _error(refused)
        assert err["code"] == -32001
        assert err["reason"] == "tool_not_granted"
        assert err["decision_id"].startswith("dec_")
        assert set(err) == {"code", "message", "reason", "decision_id"}  # no policy text

        outside = _error(await _call(client, "read_file", {"path": "/etc/shadow"}))
        assert (outside["code"], outside["reason"]) == (-32001, "no_permit")
        mail_out = _error(
            await _call(client, "send_email", {"to": "eve@evil.example", "body": "x"})
        )
        assert mail_out["reason"] == "no_permit"
        mail_in = await _call(client, "send_email", {"to": "bob@example.com", "body": "hi"})
        assert mail_in.content[0].text == "sent to bob@example.com"

        # Taint: after reading untrusted content, egress is refused (even where policy allows).
        page = await _call(client, "fetch_url", {"url": "https://example.org"})
        assert "ignore previous instructions" in page.content[0].text
        tainted = _error(await _call(client, "send_email", {"to": "bob@example.com", "body": "x"}))
        assert tainted["reason"] == "session_tainted"
        still = await _call(client, "read_file", {"path": "/srv/public/b.txt"})
        assert not still.is_error  # reading stays allowed

        # The upstream never saw the agent's token; it saw an exchanged one for its audience.
        seen = w.seen.read_text().splitlines()
        assert seen
        assert not any(token in line for line in seen)
        upstream_token = seen[-1].split(" ", 2)[2]
        claims = verify_jwt(
            upstream_token,
            keys=tessera_keys,
            algorithms=("ES256",),
            typ="at+jwt",
            issuer=w.base,
            audience=UPSTREAM_AUDIENCE,
            now=__import__("time").time(),
        ).claims
        assert claims["act"]["act"]["sub"] == agent.id  # gateway, then the agent
        assert claims["sid"] == _sid(token)
        if mode == "legacy":  # the session's server-to-client stream went through the gateway
            assert any(line.startswith("GET ") for line in seen)

        # Revocation mid-session: the next message with the revoked token is refused.
        # The revocation is written by another process (this test), so the gateway's node
        # learns it from its event tailer within the staleness bound (DESIGN 6): poll for it.
        w.tessera.sessions.revoke_session(_sid(token), "test", actor="test")
        deadline = time.monotonic() + 15
        while True:
            before = len(w.seen.read_text().splitlines())
            cut = await _call(client, "read_file", {"path": "/srv/public/a.txt"})
            cut_off = isinstance(cut, Exception) or (
                agent.dpop is not None and source.token() != token
            )
            if cut_off or time.monotonic() > deadline:
                break
        if agent.dpop is None:  # the stock client holds one token: it is cut off
            assert isinstance(cut, Exception)
            assert len(w.seen.read_text().splitlines()) == before  # nothing reached upstream
        else:  # the SDK was told invalid_token and started a new session for the retry
            assert source.token() != token, repr(cut)
            assert not cut.is_error
            last = w.seen.read_text().splitlines()[-1].split(" ", 2)[2]
            assert _sid(last) == _sid(source.token()) != _sid(token)


def test_budget_runs_out(world: World, agent: Agent) -> None:
    asyncio.run(_budget(world, agent))


async def _budget(w: World, agent: Agent) -> None:
    source = _source(w, agent, tool_calls=2)
    http = _http_client(w, agent, source)
    mode = "legacy" if agent.dpop is None else "auto"
    deletes = w.seen.read_text().count("DELETE ")
    async with http, Client(streamable_http_client(w.resource, http_client=http), mode=mode) as c:
        for _ in range(2):
            assert not (await _call(c, "read_file", {"path": "/srv/public/a"})).is_error
        spent = _error(await _call(c, "read_file", {"path": "/srv/public/a"}))
        assert spent["reason"] == "budget_exhausted"
    if mode == "legacy":  # closing the client ended its upstream session through the gateway
        assert w.seen.read_text().count("DELETE ") == deletes + 1


def test_every_call_is_in_the_audit_ledger(world: World, agent: Agent) -> None:
    asyncio.run(_allowed_and_refused(world, agent))  # its own calls, whatever ran before
    rows = world.tessera.audit.query(
        __import__("tessera.audit.ports", fromlist=["AuditQuery"]).AuditQuery(
            event_type="gateway.call", limit=500
        )
    )
    outcomes = {r["outcome"] for r in rows}
    assert {"allow", "deny"} <= outcomes
    for r in rows:
        assert r["details"]["decision_id"].startswith("dec_")
        assert "arguments" not in r["details"]
        assert json.dumps(r).find("eyJ") == -1  # no token in evidence


async def _allowed_and_refused(w: World, agent: Agent) -> None:
    source = _source(w, agent)
    http = _http_client(w, agent, source)
    mode = "legacy" if agent.dpop is None else "auto"
    async with http, Client(streamable_http_client(w.resource, http_client=http), mode=mode) as c:
        assert not (await _call(c, "read_file", {"path": "/srv/public/a"})).is_error
        assert _error(await _call(c, "delete_records", {"table": "t"}))["code"] == -32001
