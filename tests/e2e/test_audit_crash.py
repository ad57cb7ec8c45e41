"""Crash consistency: kill -9 a loaded server again and again; the ledger stays whole.

Concurrent admin API writes (users and operators) run against a real `tessera serve`
process that is killed with SIGKILL at a random moment, then restarted, ten times. After
the last cycle, `tessera audit verify` must pass and every write that was acknowledged
(HTTP 201 received) must have its record in the ledger. Once on SQLite, once on a real
PostgreSQL server (a fresh schema per run).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from tests.e2e.test_server_process import TESSERA, _free_port, _wait_healthy

CYCLES = 10
WRITERS = 4
MIN_ACKS_PER_CYCLE = 5
LOAD_DEADLINE = 60.0  # seconds for a cycle's first acknowledgements (a stuck server fails)


def _wait_for_acks(acked: list[str], count: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + LOAD_DEADLINE
    while len(acked) < count:
        if proc.poll() is not None:
            pytest.fail(f"tessera serve exited with {proc.returncode} under load")
        if time.monotonic() > deadline:
            pytest.fail(f"{count - len(acked)} writes short of {count} acknowledged in time")
        time.sleep(0.01)


def _writer(base: str, token: str, prefix: str, acked: list[str], stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=5) as client:
        i = 0
        while not stop.is_set():
            i += 1
            name = f"{prefix}-{i}"
            path, body = (
                ("/admin/v1/operators", {"name": name})
                if i % 4 == 0
                else ("/admin/v1/users", {"username": name})
            )
            try:
                r = client.post(path, json=body)
            except httpx.HTTPError:
                return  # the server died under us: this write was not acknowledged
            if r.status_code == 201:
                acked.append(r.json()["id"])


def _base_env(tmp_path: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env.update({"TESSERA_DATA_DIR": str(tmp_path / "data"), "TESSERA_PORT": str(port)})
    return env


def _kill_9_cycles(env: dict[str, str], port: int, seed: int) -> None:
    """Load, SIGKILL and restart a server ``CYCLES`` times; then the ledger must verify,
    hold every acknowledged write, and a clean shutdown must checkpoint all of it."""
    rng = random.Random(seed)
    init = subprocess.run([TESSERA, "init", "--json"], env=env, capture_output=True, check=True)
    token = json.loads(init.stdout)["admin_token"]
    base = f"http://127.0.0.1:{port}"
    acked: list[str] = []
    for cycle in range(CYCLES):
        proc = subprocess.Popen(
            [TESSERA, "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stop = threading.Event()
        threads: list[threading.Thread] = []
        try:
            _wait_healthy(base, proc)
            threads = [
                threading.Thread(target=_writer, args=(base, token, f"c{cycle}w{w}", acked, stop))
                for w in range(WRITERS)
            ]
            for th in threads:
                th.start()
            # The kill lands at a random moment once writes are flowing: on a loaded machine
            # the first acknowledgements can take a while, and a kill before any would test
            # nothing.
            _wait_for_acks(acked, len(acked) + MIN_ACKS_PER_CYCLE, proc)
            time.sleep(rng.uniform(0.05, 0.5))
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            stop.set()
            for th in threads:
                th.join(timeout=10)
            if proc.stdout:
                proc.stdout.close()
    assert len(acked) >= CYCLES * MIN_ACKS_PER_CYCLE

    verify = subprocess.run(
        [TESSERA, "audit", "verify", "--json"], env=env, capture_output=True, check=False
    )
    report = json.loads(verify.stdout)
    assert verify.returncode == 0, report
    assert report["ok"]
    assert report["pending"] == 0
    export = subprocess.run(
        [TESSERA, "audit", "export", "--format", "jsonl"], env=env, capture_output=True, check=True
    )
    records = [json.loads(line) for line in export.stdout.decode().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    created = {
        r["resource"] for r in records if r["event_type"] in ("user.created", "operator.created")
    }
    missing = set(acked) - created
    assert not missing, f"{len(missing)} acknowledged writes have no audit record"

    # A clean shutdown (SIGTERM) leaves a signed checkpoint of the whole ledger outside it.
    proc = subprocess.Popen(
        [TESSERA, "serve"], env=env, stdout=subprocess.DEVNULL, start_new_session=True
    )
    try:
        _wait_healthy(base, proc)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)  # uvicorn re-raises SIGTERM after a graceful shutdown
    last = Path(env["TESSERA_DATA_DIR"]) / "checkpoints" / f"checkpoint-{len(records):012d}.jws"
    assert last.exists()
    final = subprocess.run([TESSERA, "audit", "verify", "--json"], env=env, capture_output=True)
    assert json.loads(final.stdout)["largest_checkpoint"] == len(records)


@pytest.mark.slow
def test_kill_9_never_loses_an_acknowledged_record(tmp_path: Path) -> None:
    port = _free_port()
    _kill_9_cycles(_base_env(tmp_path, port), port, seed=20261123)


@pytest.mark.slow
@pytest.mark.postgres
def test_kill_9_never_loses_an_acknowledged_record_on_postgresql(
    tmp_path: Path, pg_schema_url: tuple[str, str]
) -> None:
    """The same on PostgreSQL: the server's commits go to a real PostgreSQL server (its
    own fsync and WAL), in a fresh schema; ``pg_schema_url`` fails instead of skipping
    under ``TESSERA_REQUIRE_SERVICES=1``."""
    url, schema = pg_schema_url
    port = _free_port()
    env = _base_env(tmp_path, port)
    env["TESSERA_DATABASE_URL"] = f"{url}?options=-csearch_path%3D{schema}"
    _kill_9_cycles(env, port, seed=20261202)


def test_tail_follow_prints_records_as_they_are_chained(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env["TESSERA_DATA_DIR"] = str(tmp_path / "data")
    subprocess.run([TESSERA, "init"], env=env, capture_output=True, check=True)
    tail = subprocess.Popen(
        [TESSERA, "audit", "tail", "-n", "1", "--follow", "--json", "--interval", "0.1"],
        env=env,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert tail.stdout is not None
        first = json.loads(tail.stdout.readline())
        subprocess.run([TESSERA, "user", "create", "late"], env=env, check=True)
        later = json.loads(tail.stdout.readline())  # blocks until the follower prints it
    finally:
        os.killpg(tail.pid, signal.SIGKILL)
        tail.wait()
    assert later["seq"] == first["seq"] + 1
    assert later["details"] == {"username": "late"}
