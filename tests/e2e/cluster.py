"""Several real ``tessera serve`` processes over one PostgreSQL schema, an agent with DPoP
and a PEP service, and the probes the multi-node test and ``bench/bench_signals.py`` use:
mint a session (through node A), ask a node's PDP, revoke through node A, wait until a
node denies because of the revocation (never because it is stale)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tests.e2e.test_server_process import TESSERA, _free_port, _start, _stop, _wait_healthy

from tessera.app import build
from tessera.config import load_config
from tessera.crypto.keys import SigningKey, generate_signing_key
from tessera.policy.bundle import read_bundle_dir
from tessera.sdk import SessionClient, client_assertion
from tessera.signals.events import decode_consistency_token
from tessera.tokens.peek import unverified_claim

BUNDLE = Path(__file__).resolve().parents[2] / "examples" / "policy-bundle"
DIGESTS = ["sha256:" + c * 64 for c in "0123456789abcdef"]
DETAILS = {"type": "tessera_session", "tools": ["docs/*"], "data_scope": ["doc:*"]}
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class Node:
    name: str
    base: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))


class Cluster:
    """``nodes`` servers sharing one database; ``node_env`` overrides settings per node."""

    def __init__(
        self,
        tmp: Path,
        database_url: str,
        *,
        nodes: int = 3,
        node_env: dict[str, dict[str, str]] | None = None,
        base_env: dict[str, str] | None = None,
    ) -> None:
        ports = [_free_port() for _ in range(nodes)]
        issuer = f"http://127.0.0.1:{ports[0]}"
        common = dict(base_env or {})
        common.update(
            {
                "TESSERA_DATABASE_URL": database_url,
                "TESSERA_KEK": "5e" * 32,
                "TESSERA_ISSUER": issuer,  # one issuer behind a load balancer
                "TESSERA_RATE_LIMIT": "0",
            }
        )
        names = [chr(ord("A") + i) for i in range(nodes)]
        self.nodes = [
            Node(
                n,
                f"http://127.0.0.1:{p}",
                {
                    **common,
                    "TESSERA_DATA_DIR": str(tmp / f"node-{n}"),
                    "TESSERA_PORT": str(p),
                    **(node_env or {}).get(n, {}),
                },
            )
            for n, p in zip(names, ports, strict=True)
        ]
        self.issuer = issuer
        self.digest_index = 0
        self._setup()

    # -- set-up ---------------------------------------------------------------------------

    def _setup(self) -> None:
        a = self.nodes[0]
        out = subprocess.run(
            [TESSERA, "init", "--json"], env=a.env, capture_output=True, check=True
        )
        self.admin = {"Authorization": f"Bearer {json.loads(out.stdout)['admin_token']}"}
        t = build(load_config(a.env))
        try:
            ident = t.identity
            op = ident.create_operator("acme", None, actor="test").value
            self.op_id = op.id
            self.op_key = generate_signing_key()
            ident.add_operator_key("acme", self.op_key.public_jwk(), actor="test")
            ident.create_user("owner", actor="test")
            for i, digest in enumerate(DIGESTS):
                ident.register_model("acme", "llm", str(i), digest, actor="test")
            self.agent_key, self.dpop_key = generate_signing_key(), generate_signing_key()
            self.agent_id = ident.register_agent(
                "worker",
                operator="acme",
                owner="owner",
                purpose="multi-node revocation",
                expires_in_days=30,
                ceiling={"tools": ["docs/*"], "data_scopes": ["doc:*"], "models": DIGESTS},
                jwk=self.agent_key.public_jwk(),
                actor="test",
            ).value.agent.id
            self.svc_key: SigningKey = generate_signing_key()
            self.svc_id = ident.register_service(
                "gw", scopes=["pdp.evaluate"], jwk=self.svc_key.public_jwk(), actor="test"
            ).value.service.id
            t.pdp.policies.apply(read_bundle_dir(BUNDLE), actor="test", with_model=True)
        finally:
            t.close()

    def start(self) -> None:
        for node in self.nodes:
            node.proc = _start(["serve"], node.env)
        for node in self.nodes:
            assert node.proc is not None
            _wait_healthy(node.base, node.proc)
        a = self.nodes[0]
        self.client = SessionClient(self.issuer, self.agent_id, self.agent_key, self.dpop_key)
        r = a.http.post(
            f"{a.base}/oauth/token",
            data={
                "grant_type": "client_credentials",
                "scope": "pdp.evaluate",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": client_assertion(
                    self.svc_key, self.svc_id, f"{self.issuer}/oauth/token"
                ),
            },
        )
        r.raise_for_status()
        self.service_token = str(r.json()["access_token"])

    def stop(self) -> dict[str, str]:
        logs = {}
        for node in self.nodes:
            if node.proc is not None:
                logs[node.name] = _stop(node.proc)
            node.http.close()
        return logs

    # -- probes ---------------------------------------------------------------------------

    def session(self) -> tuple[str, str]:
        """A new session (through node A) running the current model; (token, sid)."""
        attestation = self.client.attest(self.op_key, self.op_id, DIGESTS[self.digest_index])
        r = self.client.session(details=DETAILS, resource="gw", attestation=attestation)
        assert r.status_code == 200, r.text
        token = str(r.json()["access_token"])
        sid = unverified_claim(token, "sid")
        assert sid is not None
        return token, sid

    def ask(self, node: Node, token: str) -> str:
        """``allow``, ``revoked`` (deny because the token is no longer live), ``stale``
        (deny with stale_state) or the deny's reason codes."""
        body = {
            "subject": {
                "type": "agent",
                "id": self.agent_id,
                "properties": {"token": token, "jkt": self.client.dpop_jkt},
            },
            "action": {"name": "docs/search"},
            "resource": {"type": "document", "id": "1"},
        }
        r = node.http.post(
            f"{node.base}/access/v1/evaluation",
            json=body,
            headers={"Authorization": f"Bearer {self.service_token}"},
        )
        assert r.status_code == 200, r.text
        answer = r.json()
        if answer["decision"] is True:
            return "allow"
        codes = [x["code"] for x in answer["context"]["reasons"]]
        if "stale_state" in codes:
            return "stale"
        if codes == ["invalid_token"]:
            return "revoked"
        return ",".join(codes)

    def wait_for(self, node: Node, token: str, want: str, deadline: float = 15.0) -> float:
        """Poll ``node`` until it answers ``want``; the seconds it took. A generous
        deadline, never a timing assertion: raises TimeoutError with the last answer."""
        start = time.perf_counter()
        end = time.monotonic() + deadline
        last = ""
        while time.monotonic() < end:
            last = self.ask(node, token)
            if last == want:
                return time.perf_counter() - start
            time.sleep(0.002)
        raise TimeoutError(f"node {node.name} answered {last!r}, not {want!r}")

    def admin_post(self, path: str, body: dict[str, Any] | None = None) -> int | None:
        """POST to node A's admin API; the write's event sequence (consistency token)."""
        a = self.nodes[0]
        r = a.http.post(f"{a.base}/admin/v1{path}", json=body or {}, headers=self.admin)
        assert r.status_code == 200, r.text
        token = r.headers.get("tessera-consistency-token")
        return decode_consistency_token(token) if token else None

    def revocations(self) -> list[tuple[str, Callable[[str], None], Callable[[], None]]]:
        """(kind, revoke(sid) through node A, undo so the next session works)."""

        def next_model() -> None:
            self.digest_index += 1

        return [
            ("session", lambda sid: self.admin_post(f"/sessions/{sid}/revoke"), lambda: None),
            (
                "agent suspended",
                lambda _sid: self.admin_post("/agents/worker/suspend"),
                lambda: self.admin_post("/agents/worker/resume"),
            ),
            (
                "model revoked",
                lambda _sid: self.admin_post(f"/models/{DIGESTS[self.digest_index]}/revoke"),
                next_model,
            ),
            (
                "operator suspended",
                lambda _sid: self.admin_post("/operators/acme/suspend"),
                lambda: self.admin_post("/operators/acme/resume"),
            ),
        ]
