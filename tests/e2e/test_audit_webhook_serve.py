"""The checkpoint webhook end to end: a real `tessera serve` delivering to the example
receiver (examples/checkpoint-webhook/receiver.py) running as its own process. The receiver
dies; the server keeps serving, says so (/readyz, the sink status, its log) and keeps the
undelivered checkpoints, the shutdown one included; `tessera audit checkpoint` delivers
them once the receiver is back; `tessera audit verify --checkpoints` verifies the receiver's
directory. The secret appears in no output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.test_server_process import TESSERA, _free_port, _start, _stop, _wait_healthy

RECEIVER = Path(__file__).resolve().parents[2] / "examples" / "checkpoint-webhook" / "receiver.py"
SECRET = "e2e-" + "9f" * 20


def _wait(cond: Callable[[], Any], deadline: float = 30.0) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


class ReceiverProcess:
    def __init__(self, directory: Path, port: int, secret_file: Path) -> None:
        self.args = [
            sys.executable,
            str(RECEIVER),
            "--dir",
            str(directory),
            "--port",
            str(port),
            "--secret-file",
            str(secret_file),
        ]
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1).status_code > 0
            except httpx.HTTPError:
                return False

        _wait(up)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ReceiverProcess]:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    r = ReceiverProcess(tmp_path / "received", _free_port(), secret_file)
    r.start()
    yield r
    r.kill()


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("checkpoint-*.jws"))


def test_serve_delivers_checkpoints_and_keeps_them_while_the_receiver_is_down(
    tmp_path: Path, receiver: ReceiverProcess
) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env.update(
        {
            "TESSERA_DATA_DIR": str(tmp_path / "data"),
            "TESSERA_PORT": str(port),
            "TESSERA_AUDIT_CHECKPOINT_INTERVAL": "1",
            "TESSERA_AUDIT_CHECKPOINT_WEBHOOK": f"http://127.0.0.1:{receiver.port}/checkpoints",
            "TESSERA_AUDIT_CHECKPOINT_WEBHOOK_SECRET_FILE": str(tmp_path / "secret"),
            "TESSERA_AUDIT_CHECKPOINT_WEBHOOK_TIMEOUT": "1",
            "TESSERA_OUTBOUND_ALLOW_PRIVATE": "1",
        }
    )
    init = subprocess.run([TESSERA, "init", "--json"], env=env, capture_output=True, check=True)
    admin = {"Authorization": f"Bearer {json.loads(init.stdout)['admin_token']}"}
    base = f"http://127.0.0.1:{port}"
    received = tmp_path / "received"
    outputs = [init.stdout.decode(), init.stderr.decode()]

    server = _start(["serve"], env)
    try:
        _wait_healthy(base, server)
        with httpx.Client(base_url=base, headers=admin, timeout=10) as http:
            assert http.post("/admin/v1/users", json={"username": "u1"}).status_code == 201
            _wait(lambda: _files(received))  # the interval checkpoint reached the receiver
            assert http.get("/readyz").json() == {
                "status": "ready",
                "audit_checkpoint_webhook": "ok",
            }

            receiver.kill()
            for i in range(3):  # the server goes on writing while the receiver is down
                assert http.post("/admin/v1/users", json={"username": f"d{i}"}).status_code == 201
            sink = _wait(
                lambda: (
                    (s := http.get("/admin/v1/audit/checkpoint-sink").json())["webhook"]["pending"]
                    and s["webhook"]["last_error"]
                    and s
                )
            )
            assert sink["webhook"]["webhook"] == f"http://127.0.0.1:{receiver.port}"
            assert sink["webhook"]["last_error"].startswith("transport: ")
            ready = http.get("/readyz")
            assert ready.status_code == 200  # the node keeps serving
            assert ready.json()["audit_checkpoint_webhook"].startswith("behind: ")
            outputs.append(json.dumps(sink))
    finally:
        outputs.append(_stop(server))  # SIGTERM: the shutdown checkpoint is marked too
    log = outputs[-1]
    assert "not delivered" in log

    undelivered = tmp_path / "data" / "checkpoints-undelivered"
    assert _files(undelivered)
    receiver.start()
    cli = subprocess.run(
        [TESSERA, "audit", "checkpoint", "--json"], env=env, capture_output=True, check=True
    )
    outputs += [cli.stdout.decode(), cli.stderr.decode()]
    assert json.loads(cli.stdout)["webhook"]["pending"] == 0
    assert _files(undelivered) == []

    verify = subprocess.run(
        [TESSERA, "audit", "verify", "--json", "--checkpoints", str(received)],
        env=env,
        capture_output=True,
    )
    report = json.loads(verify.stdout)
    assert verify.returncode == 0, report
    assert report["largest_checkpoint"] == report["records"]  # the receiver holds the head
    assert set(_files(tmp_path / "data" / "checkpoints")) <= set(_files(received))
    assert all(SECRET not in text for text in outputs)
