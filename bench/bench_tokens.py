"""Token service: issuance, token exchange and introspection over HTTP (one uvicorn worker,
32 concurrent connections, loopback, SQLite), and the in-process cost of an exchange against
the signature operations it performs."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from harness import Row, percentile

from tessera.crypto.dpop import create_proof, verify_proof
from tessera.crypto.jws import JwksKeys, sign_jwt, verify_jwt
from tessera.crypto.keys import jwk_thumbprint
from tessera.sdk import client_assertion, load_private_jwk, model_attestation

TESSERA = str(Path(sys.executable).parent / "tessera")
RESOURCE = "https://tools.example/mcp"
DETAILS = json.dumps(
    [
        {
            "type": "tessera_session",
            "tools": ["docs/read"],
            "data_scope": ["doc:*"],
            "budgets": {"tool_calls": 5},
        }
    ]
)
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CONCURRENCY = 32


def _cli(env: dict[str, str], *args: str) -> Any:
    out = subprocess.run([TESSERA, *args], env=env, capture_output=True, check=True, text=True)
    return json.loads(out.stdout) if "--json" in args else out.stdout.strip()


class Fixture:
    def __init__(self, data: Path, port: int) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
        self.env.update(
            {
                "TESSERA_DATA_DIR": str(data),
                "TESSERA_PORT": str(port),
                "TESSERA_DEV_MODE": "1",
                "TESSERA_RATE_LIMIT": "0",
            }
        )
        self.base = f"http://127.0.0.1:{port}"
        self.endpoint = f"{self.base}/oauth/token"
        _cli(self.env, "init", "--json")
        _cli(self.env, "demo", "load", "--json")
        keys = data / "demo"
        self.ids = {a["name"]: a["id"] for a in _cli(self.env, "agent", "list", "--json")}
        self.op_id = _cli(self.env, "operator", "list", "--json")[0]["id"]
        self.svc_id = _cli(self.env, "service", "list", "--json")[0]["id"]
        self.digest = _cli(self.env, "model", "list", "--json")[0]["digest"]
        self.key = load_private_jwk(keys / "research-assistant.jwk")
        self.dpop = load_private_jwk(keys / "research-assistant.dpop.jwk")
        self.op_key = load_private_jwk(keys / "acme-operator.jwk")
        self.svc_key = load_private_jwk(keys / "mcp-gateway.jwk")
        self.jkt = jwk_thumbprint(self.dpop.private_jwk)
        self.agent = self.ids["research-assistant"]
        self.user_token = _cli(self.env, "dev", "user-token", "alice")

    def session_form(self, exchange: bool) -> tuple[dict[str, str], dict[str, str]]:
        form = {
            "grant_type": "client_credentials",
            "resource": RESOURCE,
            "authorization_details": DETAILS,
            "client_assertion_type": ASSERTION,
            "client_assertion": client_assertion(self.key, self.agent, self.endpoint, lifetime=240),
            "model_attestation": model_attestation(
                self.op_key, self.op_id, self.agent, self.digest, self.jkt, self.base
            ),
        }
        if exchange:
            form.update(
                {
                    "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                    "subject_token": self.user_token,
                    "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                }
            )
        proof = create_proof(self.dpop, htm="POST", htu=self.endpoint, iat=time.time() + 30)
        return form, {"DPoP": proof}

    def introspect_form(self, token: str) -> tuple[dict[str, str], dict[str, str]]:
        return {
            "token": token,
            "client_assertion_type": ASSERTION,
            "client_assertion": client_assertion(
                self.svc_key, self.svc_id, self.endpoint, lifetime=240
            ),
        }, {}


async def _fire(
    url: str, items: list[tuple[dict[str, str], dict[str, str]]]
) -> tuple[list[float], float, int]:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    lat: list[float] = []
    errors = 0
    queue = list(reversed(items))
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal errors
            while queue:
                form, headers = queue.pop()
                t0 = time.perf_counter()
                r = await client.post(url, data=form, headers=headers)
                lat.append((time.perf_counter() - t0) * 1e6)
                errors += r.status_code != 200

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - t0
    return lat, len(items) / elapsed, errors


def _http_rows(n: int) -> list[Row]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        fx = Fixture(Path(tmp) / "data", port)
        proc = subprocess.Popen(
            [TESSERA, "serve"], env=fx.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            for _ in range(100):
                try:
                    httpx.get(f"{fx.base}/healthz", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            rows = []
            tokens: list[str] = []
            for name, exchange in (
                ("issuance client_credentials", False),
                ("token exchange on-behalf-of", True),
            ):
                items = [fx.session_form(exchange) for _ in range(n)]
                lat, rate, errors = asyncio.run(_fire(fx.endpoint, items))
                rows.append(
                    Row(
                        f"HTTP {name}",
                        "µs/op",
                        statistics.median(lat),
                        percentile(lat, 99),
                        n,
                        f"{rate:,.0f}/s, {CONCURRENCY} conns, {errors} errors",
                    )
                )
            with httpx.Client() as c:
                form, headers = fx.session_form(False)
                tokens.append(
                    c.post(fx.endpoint, data=form, headers=headers).json()["access_token"]
                )
            items = [fx.introspect_form(tokens[0]) for _ in range(n)]
            lat, rate, errors = asyncio.run(_fire(f"{fx.base}/oauth/introspect", items))
            rows.append(
                Row(
                    "HTTP introspection",
                    "µs/op",
                    statistics.median(lat),
                    percentile(lat, 99),
                    n,
                    f"{rate:,.0f}/s, {CONCURRENCY} conns, {errors} errors",
                )
            )
            return rows
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def _in_process_rows(n: int) -> list[Row]:
    """One on-behalf-of exchange in-process vs the 5 signature operations it performs:
    verify client assertion, DPoP proof, model attestation and user token; sign the token."""
    from tessera.app import build
    from tessera.config import load_config
    from tessera.tokens.service import TokenRequest

    with tempfile.TemporaryDirectory() as tmp:
        fx = Fixture(Path(tmp) / "data", 8099)
        t = build(load_config(fx.env))
        items = [fx.session_form(True) for _ in range(n)]
        lat = []
        for form, headers in items:
            req = TokenRequest(
                {k: v for k, v in form.items() if k != "resource"},
                (RESOURCE,),
                None,
                headers["DPoP"],
            )
            t0 = time.perf_counter_ns()
            t.tokens.token(req)
            lat.append((time.perf_counter_ns() - t0) / 1000)
        # the signature operations alone, on the same inputs
        jwks = JwksKeys([fx.key.public_jwk()])
        sig = []
        for form, headers in items[: min(n, 300)]:
            t0 = time.perf_counter_ns()
            verify_jwt(
                form["client_assertion"],
                keys=jwks,
                algorithms=["ES256"],
                typ=None,
                issuer=None,
                audience=None,
                now=time.time(),
            )
            verify_proof(headers["DPoP"], htm="POST", htu=fx.endpoint, now=time.time() + 30)
            verify_jwt(
                form["model_attestation"],
                keys=JwksKeys([fx.op_key.public_jwk()]),
                algorithms=["ES256"],
                typ=None,
                issuer=None,
                audience=None,
                now=time.time(),
            )
            verify_jwt(
                fx.user_token,
                keys=JwksKeys([t.dev_issuer_key.public_jwk()]),  # type: ignore[union-attr]
                algorithms=["ES256"],
                typ=None,
                issuer=None,
                audience=None,
                now=time.time(),
            )
            sign_jwt({"a": 1}, t.keyring.active_key(), typ="at+jwt")
            sig.append((time.perf_counter_ns() - t0) / 1000)
        t.close()
    ratio = statistics.median(lat) / statistics.median(sig)
    return [
        Row(
            "in-process exchange (on-behalf-of)",
            "µs/op",
            statistics.median(lat),
            percentile(lat, 99),
            len(lat),
            f"{ratio:.2f}x its 5 signature ops",
        ),
        Row(
            "  the 5 signature ops alone",
            "µs/op",
            statistics.median(sig),
            percentile(sig, 99),
            len(sig),
            "4 verify + 1 sign",
        ),
    ]


def run(quick: bool) -> list[Row]:
    n = 300 if quick else 2000
    return _http_rows(n) + _in_process_rows(200 if quick else 1000)
