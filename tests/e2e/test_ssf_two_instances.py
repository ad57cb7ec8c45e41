"""Two Tessera instances with separate SQLite databases (issue 7): the transmitter's SSF
stream pushes a RISC ``account-disabled`` SET to the other's receiver when a user is
disabled there; the receiver verifies it against the transmitter's JWKS (fetched under the
outbound rules) and revokes every agent session acting for that user (matched by e-mail),
leaving other sessions alone."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from tests.e2e.test_server_process import TESSERA, _free_port, _start, _stop, _wait_healthy

from tessera.app import build, load_dev_issuer_key
from tessera.config import load_config
from tessera.crypto.keys import generate_signing_key
from tessera.sdk import SessionClient, client_assertion
from tessera.signals.caep import ACCOUNT_DISABLED, SESSION_REVOKED
from tessera.tokens.dev import mint_dev_user_token
from tessera.tokens.peek import unverified_claim

ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DIGEST = "sha256:" + "c" * 64
EMAIL = "alice@example.com"


def _env(tmp: Path, name: str, **extra: str) -> dict[str, str]:
    port = _free_port()
    return {
        "TESSERA_DATA_DIR": str(tmp / name),
        "TESSERA_PORT": str(port),
        "TESSERA_KEK": ("ab" if name == "t" else "cd") * 32,
        "TESSERA_OUTBOUND_ALLOW_PRIVATE": "1",  # both run on loopback
        "TESSERA_RATE_LIMIT": "0",
        **extra,
    }


def _init(env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run([TESSERA, "init", "--json"], env=env, capture_output=True, check=True)
    return {"Authorization": f"Bearer {json.loads(out.stdout)['admin_token']}"}


def _wait_not_live(base: str, admin: dict[str, str], sid: str, deadline: float = 30) -> None:
    end = time.monotonic() + deadline
    body: dict[str, Any] = {}
    while time.monotonic() < end:
        body = httpx.get(f"{base}/admin/v1/sessions/{sid}", headers=admin).json()
        if body["live"] is False:
            return
        time.sleep(0.05)
    raise AssertionError(f"the receiver's session is still live: {body}")


def test_a_user_disabled_on_the_transmitter_loses_agent_sessions_on_the_receiver(
    tmp_path: Path,
) -> None:
    t_env = _env(tmp_path, "t", TESSERA_SSF_PUSH_HOSTS="127.0.0.1")
    t_base = f"http://127.0.0.1:{t_env['TESSERA_PORT']}"
    t_admin = _init(t_env)
    svc_key = generate_signing_key()
    t = build(load_config(t_env))
    try:
        t.identity.create_user("alice", email=EMAIL, actor="test")
        svc_id = t.identity.register_service(
            "receiver", scopes=["ssf.manage"], jwk=svc_key.public_jwk(), actor="test"
        ).value.service.id
    finally:
        t.close()

    transmitters = tmp_path / "transmitters.json"
    transmitters.write_text(
        json.dumps(
            [
                {
                    "issuer": t_base,
                    "jwks_uri": f"{t_base}/.well-known/jwks.json",
                    "audience": svc_id,
                }
            ]
        )
    )
    r_env = _env(tmp_path, "r", TESSERA_DEV_MODE="1", TESSERA_SSF_TRANSMITTERS=str(transmitters))
    r_base = f"http://127.0.0.1:{r_env['TESSERA_PORT']}"
    r_admin = _init(r_env)
    r = build(load_config(r_env))
    agent_key, dpop_key, op_key = (generate_signing_key() for _ in range(3))
    try:
        alice = r.identity.create_user(
            "alice", email=EMAIL, grants={"tools": ["docs/*"]}, actor="test"
        ).value
        op = r.identity.create_operator("acme", None, actor="test").value
        r.identity.add_operator_key("acme", op_key.public_jwk(), actor="test")
        r.identity.register_model("acme", "llm", "1", DIGEST, actor="test")
        agent_id = r.identity.register_agent(
            "helper",
            operator="acme",
            owner="alice",
            purpose="acts for alice",
            expires_in_days=30,
            ceiling={"tools": ["docs/*"], "models": [DIGEST]},
            jwk=agent_key.public_jwk(),
            actor="test",
        ).value.agent.id
        dev_key = load_dev_issuer_key(r.config)
        assert dev_key is not None
    finally:
        r.close()

    servers = [_start(["serve"], t_env), _start(["serve"], r_env)]
    try:
        for base, proc in zip((t_base, r_base), servers, strict=True):
            _wait_healthy(base, proc)
        client = SessionClient(r_base, agent_id, agent_key, dpop_key)
        details = {"type": "tessera_session", "tools": ["docs/*"]}

        def session(**kw: Any) -> str:
            att = client.attest(op_key, op.id, DIGEST)
            resp = client.session(
                details=details, resource="https://tools.example/mcp", attestation=att, **kw
            )
            assert resp.status_code == 200, resp.text
            sid = unverified_claim(resp.json()["access_token"], "sid")
            assert sid is not None
            return sid

        user_token = mint_dev_user_token(dev_key, r_base, alice.id, now=time.time())
        for_alice = session(subject_token=user_token)
        autonomous = session()
        for sid in (for_alice, autonomous):
            live = httpx.get(f"{r_base}/admin/v1/sessions/{sid}", headers=r_admin).json()
            assert live["live"] is True

        # the receiver (as the registered service) subscribes to the transmitter
        tok = httpx.post(
            f"{t_base}/oauth/token",
            data={
                "grant_type": "client_credentials",
                "scope": "ssf.manage",
                "client_assertion_type": ASSERTION,
                "client_assertion": client_assertion(svc_key, svc_id, f"{t_base}/oauth/token"),
            },
        )
        assert tok.status_code == 200, tok.text
        auth = {"Authorization": f"Bearer {tok.json()['access_token']}"}
        stream = httpx.post(
            f"{t_base}/ssf/streams",
            headers=auth,
            json={
                "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": f"{r_base}/ssf/events"},
                "events_requested": [SESSION_REVOKED, ACCOUNT_DISABLED],
            },
        )
        assert stream.status_code == 201, stream.text

        disabled = httpx.post(f"{t_base}/admin/v1/users/alice/disable", headers=t_admin, json={})
        assert disabled.status_code == 200, disabled.text
        _wait_not_live(r_base, r_admin, for_alice)
        detail = httpx.get(f"{r_base}/admin/v1/sessions/{for_alice}", headers=r_admin).json()
        assert detail["status"] == "revoked"
        still = httpx.get(f"{r_base}/admin/v1/sessions/{autonomous}", headers=r_admin).json()
        assert still["live"] is True  # not acting for alice
        # the receiver recorded what it applied, with the transmitter as the actor
        records = httpx.get(
            f"{r_base}/admin/v1/audit",
            params={"event_type": "ssf.set_received"},
            headers=r_admin,
        ).json()["records"]
        assert any(x["outcome"].startswith("applied") for x in records)
        assert all(x["actor"]["principal"] == f"ssf:{t_base}" for x in records)
    finally:
        logs = [_stop(p) for p in servers]
    assert "Traceback" not in "".join(logs), logs
