"""MCP gateway: latency a ``tools/call`` gains through the gateway (``tessera gateway``, one
uvicorn worker, SQLite) over calling the upstream MCP server directly, and calls per second
through the gateway.

The upstream is the official SDK's ``MCPServer`` (stateless 2026 protocol, JSON answers) on
loopback. Requests go over raw keep-alive HTTP/1.1 connections (as in ``bench_pdp``), so the
figures are the servers', not a Python client's. Each gateway call is authenticated (bearer
agent, or DPoP with a fresh proof and a replay-cache write), decided by the full pipeline
(token, limits, Cedar with the call's arguments), reserves a budget unit, is recorded in the
audit ledger (group commit) and is forwarded with an exchanged upstream token.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from harness import Row, percentile

ROOT = Path(__file__).resolve().parents[1]
TESSERA = str(Path(sys.executable).parent / "tessera")
DIGEST = "sha256:" + hashlib.sha256(b"bench gateway model").hexdigest()
CONCURRENCY = 16
MODERN = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
CALL = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "read_file", "arguments": {"path": "/srv/public/a.txt"}, "_meta": META},
    }
).encode()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raw(host: str, path: str, extra: dict[str, str]) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: {MODERN}\r\n"
        f"Mcp-Method: tools/call\r\nMcp-Name: read_file\r\nContent-Length: {len(CALL)}\r\n"
    )
    head += "".join(f"{k}: {v}\r\n" for k, v in extra.items())
    return (head + "\r\n").encode() + CALL


async def _fire(
    url: str, headers: list[dict[str, str]], conns: int
) -> tuple[list[float], float, int]:
    """Send one request per entry of ``headers`` over ``conns`` keep-alive connections."""
    host, _, rest = url.removeprefix("http://").partition("/")
    hostname, _, port = host.partition(":")
    queue = [_raw(host, "/" + rest, h) for h in headers]
    queue.reverse()
    lat: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(hostname, int(port))
        try:
            while queue:
                message = queue.pop()
                t0 = time.perf_counter()
                writer.write(message)
                status = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                payload = await reader.readexactly(length)
                lat.append((time.perf_counter() - t0) * 1e6)
                errors += not (b" 200 " in status and b'"result"' in payload)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    return lat, len(headers) / (time.perf_counter() - t0), errors


def _setup(data: Path, port: int, up_port: int) -> tuple[dict[str, str], Path, dict[str, Any]]:
    sys.path.insert(0, str(ROOT / "src"))
    from tessera.app import build, initialise
    from tessera.config import load_config
    from tessera.crypto.keys import generate_signing_key
    from tessera.policy.bundle import read_bundle_dir

    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env.update(
        {
            "TESSERA_DATA_DIR": str(data),
            "TESSERA_PORT": str(port),
            "TESSERA_KEK": "c" * 64,
            "TESSERA_RATE_LIMIT": "0",
        }
    )
    config = load_config(env)
    initialise(config)
    t = build(config)
    ident = t.identity
    op_id = ident.create_operator("acme", None, actor="bench").value.id
    op_key = generate_signing_key()
    ident.add_operator_key("acme", op_key.public_jwk(), actor="bench")
    ident.create_user("alice", actor="bench")
    ident.register_model("acme", "llm", "1", DIGEST, actor="bench")
    ident.register_service(
        "mcp-gateway",
        scopes=["pdp.evaluate"],
        jwk=generate_signing_key().public_jwk(),
        actor="bench",
    )
    t.pdp.policies.apply(read_bundle_dir(ROOT / "examples/gateway/bundle"), actor="bench")
    agents = {}
    for name, dpop in (("bearer-agent", False), ("dpop-agent", True)):
        key = generate_signing_key()
        reg = ident.register_agent(
            name,
            operator="acme",
            owner="alice",
            purpose="bench",
            expires_in_days=1,
            ceiling={
                "tools": ["tools/read_file"],
                "data_scopes": ["file:*"],
                "models": [DIGEST],
                "budgets": {"tool_calls": 1_000_000},
                "dpop_required": dpop,
            },
            jwk=key.public_jwk(),
            actor="bench",
        ).value.agent
        agents[name] = (reg.id, key, generate_signing_key() if dpop else None)
    cfg = data.parent / "gateway.yaml"
    cfg.write_text(
        (ROOT / "examples/gateway/gateway.yaml")
        .read_text()
        .replace("http://127.0.0.1:8080/dev/demo-upstream/mcp", f"http://127.0.0.1:{up_port}/mcp")
    )
    t.close()
    agents["operator"] = (op_key, op_id)
    return env, cfg, agents


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url}: no answer")


def _row(name: str, lat: list[float], note: str) -> Row:
    return Row(name, "µs/op", statistics.median(lat), percentile(lat, 99), len(lat), note)


def run(quick: bool) -> list[Row]:
    n = 300 if quick else 2000
    with tempfile.TemporaryDirectory() as tmp:
        port, up_port = _port(), _port()
        env, cfg, agents = _setup(Path(tmp) / "data", port, up_port)
        seen = Path(tmp) / "seen.log"
        upstream = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.mcp_upstream", str(up_port), str(seen), "json"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        gateway = subprocess.Popen(
            [TESSERA, "gateway", "--config", str(cfg)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        rows: list[Row] = []
        try:
            _wait(f"http://127.0.0.1:{up_port}/mcp", upstream)
            _wait(f"{base}/healthz", gateway)
            rows = _measure(base, f"http://127.0.0.1:{up_port}/mcp", agents, n)
            rows += _in_process(env, cfg, base, agents, n)
        finally:
            for proc in (gateway, upstream):
                proc.terminate()
            for proc in (gateway, upstream):
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return rows


def _measure(base: str, direct: str, agents: dict[str, Any], n: int) -> list[Row]:
    from tessera.crypto.dpop import create_proof

    sys.path.insert(0, str(ROOT))
    via = f"{base}/mcp/tools"
    bearer = _session(base, agents["bearer-agent"], agents["operator"])
    dpop_agent = agents["dpop-agent"]
    dpop = _session(base, dpop_agent, agents["operator"])
    plain = {"Authorization": f"Bearer {bearer}"}
    asyncio.run(_fire(direct, [{}] * 50, 1))
    asyncio.run(_fire(via, [plain] * 50, 1))  # warm caches and connections
    d_lat, _, d_err = asyncio.run(_fire(direct, [{}] * n, 1))
    g_lat, _, g_err = asyncio.run(_fire(via, [plain] * n, 1))
    proofs = [
        {
            "Authorization": f"DPoP {dpop}",
            "DPoP": create_proof(
                dpop_agent[2], htm="POST", htu=via, access_token=dpop, iat=time.time()
            ),
        }
        for _ in range(n)
    ]
    p_lat, _, p_err = asyncio.run(_fire(via, proofs, 1))
    _, d_rate, _ = asyncio.run(_fire(direct, [{}] * n, CONCURRENCY))
    _, g_rate, g2_err = asyncio.run(_fire(via, [plain] * n, CONCURRENCY))
    added = statistics.median(g_lat) - statistics.median(d_lat)
    added99 = percentile(g_lat, 99) - percentile(d_lat, 99)
    addedp = statistics.median(p_lat) - statistics.median(d_lat)
    return [
        _row("tools/call direct to the upstream (1 conn)", d_lat, f"{d_err} errors"),
        _row("tools/call through the gateway, bearer (1 conn)", g_lat, f"{g_err} errors"),
        _row("tools/call through the gateway, DPoP (1 conn)", p_lat, f"{p_err} errors"),
        Row(
            "added by the gateway, bearer (p50 / p99 difference)",
            "µs/op",
            added,
            added99,
            n,
            "aim: <= 2000 µs at p50",
        ),
        Row("added by the gateway, DPoP (p50 difference)", "µs/op", addedp, None, n, ""),
        Row(
            "tools/call through one gateway worker",
            "calls/s",
            g_rate,
            None,
            n,
            f"{CONCURRENCY} conns, {g2_err} errors; upstream alone {d_rate:,.0f}/s",
        ),
    ]


def _session(base: str, agent: Any, operator: tuple[Any, str]) -> str:
    """A session token for ``/mcp/tools`` (RFC 8707 resource), model attested."""
    from tessera.sdk import SessionClient

    agent_id, key, dpop = agent
    client = SessionClient(base, agent_id, key, dpop)
    r = client.session(
        details={
            "type": "tessera_session",
            "tools": ["tools/read_file"],
            "data_scope": ["file:*"],
            "budgets": {"tool_calls": 1_000_000},
        },
        resource=f"{base}/mcp/tools",
        attestation=client.attest(operator[0], operator[1], DIGEST),
    )
    if r.status_code != 200:
        raise RuntimeError(r.text)
    return str(r.json()["access_token"])


def _in_process(
    env: dict[str, str], cfg: Path, base: str, agents: dict[str, Any], n: int
) -> list[Row]:
    """The gateway's own synchronous work per tools/call, without HTTP: authentication (bearer,
    token cache warm), the decision with its budget reservation and the upstream token;
    and the audit record of the call (group commit, one caller)."""
    from harness import time_each

    from tessera.app import build
    from tessera.config import load_config
    from tessera.gateway.authorize import CallRequest, call_record
    from tessera.gateway.wiring import build_gateway

    t = build(load_config(env))
    try:
        gw = build_gateway(t, cfg)
        token = _session(base, agents["bearer-agent"], agents["operator"])
        headers = {"authorization": f"Bearer {token}"}
        params = {"name": "read_file", "arguments": {"path": "/srv/public/a.txt"}}
        verdicts: list[str] = []

        def admit_once() -> None:
            # Paced like the HTTP run (one connection, a few ms a call): a tight loop of
            # ~2000 decisions a second is what the behaviour engine rightly calls high risk,
            # and it would deny and revoke the session mid-loop.
            time.sleep(0.005)
            t0 = time.perf_counter_ns()
            verdict = gw.admit("POST", "tools", headers, "tools/call", params).verdict
            admit.append((time.perf_counter_ns() - t0) / 1000)
            verdicts.append("none" if verdict is None else verdict.verdict)

        admit: list[float] = []
        for _ in range(n):
            admit_once()
        adm = gw.admit("POST", "tools", headers, "tools/call", params)
        if adm.verdict is None or verdicts[0] != "allow":
            raise RuntimeError("the benchmark call is not allowed")
        auth = time_each(
            lambda: gw.guard.authenticate(
                "POST", gw.resource_uri("tools"), headers, gw.caller("tools")
            ),
            n,
        )
        call = CallRequest("tools", "tools/call", "read_file", params["arguments"])
        entry = call_record(
            call=call,
            agent=adm.auth.agent,
            verdict=adm.verdict,
            outcome="allow",
            service_id=gw.service_id,
            request_id=None,
        )
        record = time_each(lambda: t.audit.record(entry), max(50, n // 4))
    finally:
        t.close()
    return [
        _row("in-process: authenticate (bearer, cached token)", auth, ""),
        _row(
            "in-process: admit tools/call (auth + decision + reserve)",
            admit,
            f"{sum(v != 'allow' for v in verdicts)} of {len(verdicts)} not allowed",
        ),
        _row("in-process: gateway.call audit record (durable)", record, "overlaps upstream"),
    ]
