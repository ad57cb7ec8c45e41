"""A real `tessera` server process: what `make run` does, then the admin API over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import PG_URL, require_postgres

TESSERA = str(Path(sys.executable).parent / "tessera")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], deadline: float = 60) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"server exited early ({proc.returncode}): {out[-2000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become healthy in time")


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [TESSERA, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.stdout.read().decode() if proc.stdout else ""


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = _free_port()
    e = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    e.update({"TESSERA_DATA_DIR": str(tmp_path / "data"), "TESSERA_PORT": str(port)})
    return e


def test_dev_up_initialises_loads_demo_serves_and_reuses_data(env: dict[str, str]) -> None:
    env = {**env, "TESSERA_DEV_MODE": "1"}
    base = f"http://127.0.0.1:{env['TESSERA_PORT']}"
    proc = _start(["dev", "up"], env)
    try:
        _wait_healthy(base, proc)
        token = (Path(env["TESSERA_DATA_DIR"]) / "admin-token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        agents = httpx.get(f"{base}/admin/v1/agents", headers=auth).json()
        assert sorted(a["name"] for a in agents) == [
            "legacy-reporter",  # the demo's posture example
            "mcp-client",
            "research-assistant",
            "summarizer",
        ]
        assert httpx.get(f"{base}/readyz").json() == {"status": "ready"}
        jwks = httpx.get(f"{base}/.well-known/jwks.json").json()
        assert jwks["keys"][0]["alg"] == "ES256"
        r = httpx.post(f"{base}/admin/v1/agents/summarizer/suspend", headers=auth, json={})
        assert r.status_code == 200
        assert r.headers["tessera-consistency-token"]
    finally:
        first_output = _stop(proc)
    assert "demo loaded" in first_output
    proc = _start(["dev", "up"], env)
    try:
        _wait_healthy(base, proc)
        token = (Path(env["TESSERA_DATA_DIR"]) / "admin-token").read_text().strip()
        agent = httpx.get(
            f"{base}/admin/v1/agents/summarizer", headers={"Authorization": f"Bearer {token}"}
        ).json()
        assert agent["status"] == "suspended"  # data survived the restart
    finally:
        second_output = _stop(proc)
    assert "reusing existing data" in second_output


@pytest.mark.postgres
def test_server_on_postgresql(env: dict[str, str], pg_schema_url: tuple[str, str]) -> None:
    require_postgres()
    url, schema = pg_schema_url
    env = {
        **env,
        "TESSERA_DATABASE_URL": f"{url}?options=-csearch_path%3D{schema}",
        "TESSERA_KEK": "cd" * 32,
    }
    init = subprocess.run([TESSERA, "init", "--json"], env=env, capture_output=True, check=True)
    token = json.loads(init.stdout)["admin_token"]
    base = f"http://127.0.0.1:{env['TESSERA_PORT']}"
    proc = _start(["serve"], env)
    try:
        _wait_healthy(base, proc)
        auth = {"Authorization": f"Bearer {token}"}
        assert (
            httpx.post(
                f"{base}/admin/v1/operators", headers=auth, json={"name": "pg-op"}
            ).status_code
            == 201
        )
        # the CLI sees the same database in-process
        out = subprocess.run(
            [TESSERA, "operator", "list", "--json"], env=env, capture_output=True, check=True
        )
        assert [o["name"] for o in json.loads(out.stdout)] == ["pg-op"]
    finally:
        _stop(proc)
    assert PG_URL
