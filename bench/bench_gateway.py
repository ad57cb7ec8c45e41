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
from harness import Row, percentile, process_cpu

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


class _Gateway:
    """One ``tessera gateway`` process (its own data directory and agents)."""

    def __init__(self, tmp: Path, label: str, up_port: int, src: str | None) -> None:
        self.label = label
        self.port = _port()
        self.env, cfg, self.agents = _setup(tmp / label / "data", self.port, up_port)
        env = dict(self.env)
        if src is None:
            cmd = [TESSERA, "gateway", "--config", str(cfg)]
        else:  # another source tree (the A/B baseline), same virtualenv
            env["PYTHONPATH"] = src
            cmd = [sys.executable, "-c", "from tessera.cli.main import main; main()"]
            cmd += ["gateway", "--config", str(cfg)]
        self.cfg = cfg
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self.via = f"{self.base}/mcp/tools"

    def ready(self) -> None:
        _wait(f"{self.base}/healthz", self.proc)
        self.bearer = {"Authorization": f"Bearer {self._token('bearer-agent')}"}
        self.dpop_token = self._token("dpop-agent")

    def _token(self, name: str) -> str:
        return _session(self.base, self.agents[name], self.agents["operator"])

    def proofs(self, n: int) -> list[dict[str, str]]:
        from tessera.crypto.dpop import create_proof

        key = self.agents["dpop-agent"][2]
        return [
            {
                "Authorization": f"DPoP {self.dpop_token}",
                "DPoP": create_proof(
                    key, htm="POST", htu=self.via, access_token=self.dpop_token, iat=time.time()
                ),
            }
            for _ in range(n)
        ]

    def fire(
        self, headers: list[dict[str, str]], conns: int
    ) -> tuple[list[float], float, int, float]:
        """(latencies, calls/s, errors, gateway CPU µs per call)."""
        c0 = process_cpu(self.proc.pid)
        lat, rate, errors = asyncio.run(_fire(self.via, headers, conns))
        c1 = process_cpu(self.proc.pid)
        cpu = float("nan") if c0 is None or c1 is None else (c1 - c0) * 1e6 / len(headers)
        return lat, rate, errors, cpu

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run(quick: bool) -> list[Row]:
    """The gateway of this tree; with ``TESSERA_BENCH_GATEWAY_BASELINE=<src dir>`` (e.g. a
    ``git archive`` of main's ``src``) also that tree's gateway, measured in alternating
    rounds against the same upstream (an A/B in one run)."""
    n = 300 if quick else 2000
    baseline = os.environ.get("TESSERA_BENCH_GATEWAY_BASELINE")
    with tempfile.TemporaryDirectory() as tmp:
        up_port = _port()
        seen = Path(tmp) / "seen.log"
        upstream = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.mcp_upstream", str(up_port), str(seen), "json"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        gateways: list[_Gateway] = []
        rows: list[Row] = []
        try:
            gateways.append(_Gateway(Path(tmp), "new", up_port, None))
            if baseline:
                gateways.append(_Gateway(Path(tmp), "base", up_port, baseline))
            _wait(f"http://127.0.0.1:{up_port}/mcp", upstream)
            for gw in gateways:
                gw.ready()
            rows = _measure(f"http://127.0.0.1:{up_port}/mcp", gateways, n)
            new = gateways[0]
            rows += _in_process(new.env, new.cfg, new.base, new.agents, n)
        finally:
            for gw in gateways:
                gw.stop()
            upstream.terminate()
            try:
                upstream.wait(timeout=20)
            except subprocess.TimeoutExpired:
                upstream.kill()
                upstream.wait()
    return rows


ROUNDS = 6


def _measure(direct: str, gateways: list[_Gateway], n: int) -> list[Row]:
    """Rounds alternate between the direct upstream and each gateway (the machine's load
    drifts; alternating spreads it over every side alike)."""
    sys.path.insert(0, str(ROOT))
    asyncio.run(_fire(direct, [{}] * 50, 1))
    for gw in gateways:
        gw.fire([gw.bearer] * 50, 1)  # warm caches and connections
    per = max(20, n // ROUNDS)
    d_lat: list[float] = []
    lat: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    errs: dict[tuple[str, str], int] = {}

    def keep(key: tuple[str, str], got: tuple[list[float], float, int, float]) -> None:
        lat.setdefault(key, []).extend(got[0])
        cpu.setdefault(key, []).append(got[3])
        errs[key] = errs.get(key, 0) + got[2]

    for _ in range(ROUNDS):
        d_lat += asyncio.run(_fire(direct, [{}] * per, 1))[0]
        for gw in gateways:
            keep((gw.label, "bearer"), gw.fire([gw.bearer] * per, 1))
            keep((gw.label, "dpop"), gw.fire(gw.proofs(per), 1))
    rates: dict[str, list[float]] = {}
    for _ in range(2):
        for gw in gateways:
            got = gw.fire([gw.bearer] * n, CONCURRENCY)
            rates.setdefault(gw.label, []).append(got[1])
            cpu.setdefault((gw.label, "16"), []).append(got[3])
            errs[(gw.label, "16")] = errs.get((gw.label, "16"), 0) + got[2]
    _, d_rate, _ = asyncio.run(_fire(direct, [{}] * n, CONCURRENCY))
    d50, d99 = statistics.median(d_lat), percentile(d_lat, 99)
    rows = [_row("tools/call direct to the upstream (1 conn)", d_lat, "")]
    for gw in gateways:
        tag = "" if len(gateways) == 1 else f" [{gw.label}]"
        b, p = lat[(gw.label, "bearer")], lat[(gw.label, "dpop")]
        rows += [
            _row(f"tools/call via gateway, bearer{tag}", b, f"{errs[(gw.label, 'bearer')]} errors"),
            _row(f"tools/call via gateway, DPoP{tag}", p, f"{errs[(gw.label, 'dpop')]} errors"),
            Row(
                f"added by the gateway, bearer{tag}",
                "µs/op",
                statistics.median(b) - d50,
                percentile(b, 99) - d99,
                len(b),
                "p50 / p99 difference; aim: <= 2000 µs at p50",
            ),
            Row(
                f"added by the gateway, DPoP{tag}",
                "µs/op",
                statistics.median(p) - d50,
                None,
                len(p),
                "",
            ),
            Row(
                f"gateway CPU per call, bearer / DPoP{tag}",
                "µs/op",
                statistics.median(cpu[(gw.label, "bearer")]),
                statistics.median(cpu[(gw.label, "dpop")]),
                ROUNDS,
                "every thread of the gateway process; the p99 column is DPoP",
            ),
            Row(
                f"tools/call through one gateway worker{tag}",
                "calls/s",
                statistics.median(rates[gw.label]),
                None,
                n,
                f"{CONCURRENCY} conns, {errs[(gw.label, '16')]} errors, "
                f"{statistics.median(cpu[(gw.label, '16')]):,.0f} µs CPU per call; "
                f"upstream alone {d_rate:,.0f}/s",
            ),
        ]
    return rows


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
