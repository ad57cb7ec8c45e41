"""The webhook checkpoint sink against a real HTTP receiver on loopback (no transport mocks):
delivered and verifiable from what the receiver stored, receiver down then up (retried, also
after a restart), bad statuses, a slow receiver (timeout; appends never wait), and the
secret never in logs, status or evidence."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import make_config

from tessera.app import Tessera, build, initialise
from tessera.audit import ActorLayers, AuditEntry
from tessera.audit.ports import AuditQuery
from tessera.audit.webhook import (
    CHECKPOINT_MEDIA_TYPE,
    SIGNATURE_HEADER,
    TREE_SIZE_HEADER,
    WebhookCheckpointSink,
    WebhookSettings,
    hmac_signature_valid,
    webhook_of,
)
from tessera.errors import ConfigError
from tessera.store.engine import make_engine

SECRET = "s3cr3t-webhook-value-" + "x" * 16
FAST = WebhookSettings(attempts=3, retry_delay=0.05, base_backoff=0.1, max_backoff=0.5, idle=0.2)


class Receiver:
    """A checkpoint receiver: stores each accepted body as ``checkpoint-<size>.jws`` (the
    layout ``tessera audit verify --checkpoints`` reads). ``answers`` are given first (a
    status, or ``"hold"`` to wait on ``release``), then 201."""

    def __init__(self, directory: Path, port: int = 0, *, mode: str = "bearer") -> None:
        self.directory = directory
        self.answers: list[int | str] = []
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.mode = mode
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                answer = receiver.answers.pop(0) if receiver.answers else 201
                if answer == "hold":
                    receiver.release.wait(30)
                    answer = 201
                if answer == 201 and not receiver.authorised(self.headers, body):
                    answer = 401
                if answer == 201:
                    size = int(self.headers[TREE_SIZE_HEADER])
                    path = receiver.directory / f"checkpoint-{size:012d}.jws"
                    if not path.exists():
                        path.write_bytes(body + b"\n")
                self.send_response(int(answer))
                if answer == 302:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        directory.mkdir(parents=True, exist_ok=True)
        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://localhost:{self.port}/hooks/checkpoints"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def authorised(self, headers: Any, body: bytes) -> bool:
        if self.mode == "bearer":
            return bool(headers.get("Authorization") == f"Bearer {SECRET}")
        return hmac_signature_valid(
            SECRET, body, headers.get(SIGNATURE_HEADER, ""), now=time.time()
        )

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(cond: Callable[[], bool], deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(tmp_path / "received")
    yield r
    r.close()


def _tessera(tmp_path: Path, url: str, **extra: str) -> Tessera:
    env = {
        "TESSERA_AUDIT_CHECKPOINT_WEBHOOK": url,
        "TESSERA_AUDIT_CHECKPOINT_WEBHOOK_SECRET": SECRET,
        "TESSERA_OUTBOUND_ALLOW_PRIVATE": "1",
        "TESSERA_AUDIT_CHECKPOINT_WEBHOOK_TIMEOUT": "0.5",
        **extra,
    }
    config = make_config(tmp_path, **env)
    engine = make_engine(config.database_url)
    initialise(config, engine=engine)
    t = build(config, engine=engine)
    hook = webhook_of(t.audit.sink)
    assert hook is not None
    hook.settings = FAST
    return t


def _hook(t: Tessera) -> WebhookCheckpointSink:
    hook = webhook_of(t.audit.sink)
    assert hook is not None
    return hook


def _append(t: Tessera, n: int = 3) -> None:
    for i in range(n):
        t.audit.record(AuditEntry("test.event", ActorLayers("cli"), "test", f"r{i}", "success"))


def _events(t: Tessera, event_type: str) -> list[dict[str, Any]]:
    t.audit.chain_pending()
    return t.audit.query(AuditQuery(event_type=event_type, limit=100))


def test_delivered_checkpoints_verify_from_what_the_receiver_stored(
    tmp_path: Path, receiver: Receiver
) -> None:
    t = _tessera(tmp_path, receiver.url)
    hook = _hook(t)
    _append(t)
    first = t.audit.checkpoint()
    _append(t)
    second = t.audit.checkpoint()
    assert first is not None
    assert second is not None
    assert [size for size, _ in hook.pending()] == [first.tree_size, second.tree_size]
    assert hook.deliver_pending() == 2
    assert hook.pending() == []
    assert [r["body"].decode() for r in receiver.requests] == [first.jws, second.jws]
    headers = receiver.requests[0]["headers"]
    assert headers["Content-Type"] == CHECKPOINT_MEDIA_TYPE
    assert headers[TREE_SIZE_HEADER] == str(first.tree_size)
    # an auditor verifies the receiver's copies exactly like the directory sink's
    report = t.audit.verify(checkpoint_dirs=[receiver.directory])
    assert report.ok, report.problems
    assert report.largest_checkpoint == second.tree_size
    assert report.checkpoints_checked == 4  # two in the store, two the receiver stored
    assert hook.status()["healthy"]
    assert hook.status()["last_delivered_tree_size"] == second.tree_size


def test_hmac_signed_deliveries(tmp_path: Path) -> None:
    r = Receiver(tmp_path / "received", mode="hmac")
    try:
        t = _tessera(tmp_path, r.url, TESSERA_AUDIT_CHECKPOINT_WEBHOOK_AUTH="hmac")
        _append(t)
        cp = t.audit.checkpoint()
        assert cp is not None
        assert _hook(t).deliver_pending() == 1
        headers = r.requests[0]["headers"]
        assert "Authorization" not in headers
        assert headers[SIGNATURE_HEADER].startswith("t=")
        assert SECRET not in headers[SIGNATURE_HEADER]
        assert not hmac_signature_valid(
            "another-secret-value-123", cp.jws.encode(), headers[SIGNATURE_HEADER], now=time.time()
        )
        assert (r.directory / f"checkpoint-{cp.tree_size:012d}.jws").exists()
    finally:
        r.close()


def test_receiver_down_then_up_is_retried_by_the_worker(tmp_path: Path) -> None:
    port = _free_port()
    t = _tessera(tmp_path, f"http://localhost:{port}/hooks/checkpoints")
    hook = _hook(t)
    hook.start()
    try:
        _append(t)
        cp = t.audit.checkpoint()  # the receiver is down: appends and checkpoints go on
        assert cp is not None
        _wait(lambda: hook.failed_rounds >= 2)  # retried with backoff, still down
        _append(t)  # appends never wait for the webhook
        state = hook.status()
        assert state["pending"] == 1
        assert not state["healthy"]
        assert state["last_error"].startswith("transport: ")
        receiver = Receiver(tmp_path / "received", port)
        try:
            _wait(lambda: hook.pending() == [])
            assert receiver.requests[-1]["body"].decode() == cp.jws
        finally:
            receiver.close()
    finally:
        hook.stop()
    assert hook.status()["healthy"]
    assert hook.failed_rounds == 0
    # the stretch of late delivery is evidence in the ledger: one record each way
    failing = _events(t, "audit.checkpoint_webhook_failing")
    recovered = _events(t, "audit.checkpoint_webhook_recovered")
    assert len(failing) == 1
    assert len(recovered) == 1
    assert failing[0]["details"]["tree_size"] == cp.tree_size
    assert failing[0]["resource"] == f"http://localhost:{port}"


def test_an_undelivered_checkpoint_survives_a_restart(tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://localhost:{port}/hooks/checkpoints"
    t = _tessera(tmp_path, url)
    _append(t)
    cp = t.audit.checkpoint()
    assert cp is not None
    assert _hook(t).flush(1.0) == 0  # down: the marker stays on disk
    marker = tmp_path / "data" / "checkpoints-undelivered" / f"checkpoint-{cp.tree_size:012d}.jws"
    assert marker.read_text().strip() == cp.jws
    t.close()

    receiver = Receiver(tmp_path / "received", port)
    try:
        again = _tessera(tmp_path, url)  # a new process over the same data directory
        hook = _hook(again)
        hook.start()
        try:
            _wait(lambda: len(receiver.requests) == 1 and hook.pending() == [])
        finally:
            hook.stop()
        assert receiver.requests[0]["body"].decode() == cp.jws
        assert not marker.exists()
        assert again.audit.verify(checkpoint_dirs=[receiver.directory]).ok
    finally:
        receiver.close()


def test_bad_statuses_are_retried_a_bounded_number_of_times_then_later(
    tmp_path: Path, receiver: Receiver
) -> None:
    t = _tessera(tmp_path, receiver.url)
    hook = _hook(t)
    _append(t)
    cp = t.audit.checkpoint()
    assert cp is not None
    receiver.answers = [500, 503, 302]  # a redirect is not followed, so not a delivery
    assert hook.deliver_pending() == 0
    assert len(receiver.requests) == FAST.attempts  # bounded within a round
    assert hook.status()["last_error"] == "http 302"
    assert hook.status()["pending"] == 1
    receiver.answers = [400, 404, 429]
    assert hook.deliver_pending() == 0  # a 4xx is not a delivery either; the marker stays
    assert hook.status()["failed_rounds"] == 2
    assert hook.deliver_pending() == 1  # the receiver accepts now
    assert receiver.requests[-1]["body"].decode() == cp.jws
    assert len(list(receiver.directory.iterdir())) == 1


def test_a_wrong_secret_is_a_failed_delivery(tmp_path: Path, receiver: Receiver) -> None:
    t = _tessera(
        tmp_path, receiver.url, TESSERA_AUDIT_CHECKPOINT_WEBHOOK_SECRET="not-the-right-one-1234"
    )
    _append(t)
    t.audit.checkpoint()
    assert _hook(t).deliver_pending() == 0
    assert _hook(t).status()["last_error"] == "http 401"


def test_a_slow_receiver_times_out_and_never_holds_up_appends(
    tmp_path: Path, receiver: Receiver
) -> None:
    t = _tessera(tmp_path, receiver.url, TESSERA_AUDIT_CHECKPOINT_WEBHOOK_TIMEOUT="2")
    hook = _hook(t)
    hook.settings = replace(FAST, attempts=1)
    receiver.answers = ["hold"] * 50  # the receiver answers only when released
    hook.start()
    try:
        _append(t)
        cp = t.audit.checkpoint()
        assert cp is not None
        _wait(lambda: len(receiver.requests) == 1)  # the worker's POST hangs in the receiver
        _append(t, 5)  # appends and checkpoints go on while it hangs
        assert t.audit.checkpoint() is not None
        assert hook.failed_rounds == 0
        assert len(receiver.requests) == 1
        _wait(lambda: hook.status()["last_error"] == "transport: ReadTimeout")
        assert hook.status()["pending"] == 2
        receiver.answers.clear()
        receiver.release.set()
        _wait(lambda: hook.pending() == [])  # retried after the backoff, both delivered
    finally:
        hook.stop()
    assert t.audit.verify(checkpoint_dirs=[receiver.directory]).ok


def test_the_secret_is_never_logged_nor_shown(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    t = _tessera(tmp_path, receiver.url)
    hook = _hook(t)
    _append(t)
    t.audit.checkpoint()
    receiver.answers = [500, 500, 500, 401]
    hook.deliver_pending()
    hook.deliver_pending()
    hook.deliver_pending()
    assert hook.pending() == []
    assert "not delivered" in caplog.text  # the failures were logged...
    assert SECRET not in caplog.text  # ...without the secret
    assert "/hooks/checkpoints" not in json.dumps(hook.status())  # nor the URL's path
    assert SECRET not in json.dumps(hook.status())
    assert SECRET not in repr(t.config)
    assert SECRET not in repr(hook.__dict__)
    t.audit.chain_pending()
    ledger = json.dumps(t.audit.query(AuditQuery(limit=1000)))
    assert "checkpoint_webhook_failing" in ledger
    assert SECRET not in ledger
    assert all(SECRET not in p.read_text() for p in (tmp_path / "data").rglob("*.jws"))


def test_config_refuses_unsafe_webhook_settings(tmp_path: Path) -> None:
    base = {"TESSERA_AUDIT_CHECKPOINT_WEBHOOK": "https://receiver.example/cp"}
    cases = [
        ({"TESSERA_AUDIT_CHECKPOINT_WEBHOOK": "http://receiver.example/cp"}, "plain http"),
        ({"TESSERA_AUDIT_CHECKPOINT_WEBHOOK": "ftp://receiver.example/cp"}, "http(s) URL"),
        ({**base, "TESSERA_AUDIT_CHECKPOINT_WEBHOOK_SECRET": "short"}, "16 printable"),
        ({**base, "TESSERA_AUDIT_CHECKPOINT_WEBHOOK_AUTH": "hmac"}, "needs a secret"),
        ({"TESSERA_AUDIT_CHECKPOINT_WEBHOOK_SECRET": SECRET}, "no webhook URL"),
    ]
    for env, message in cases:
        with pytest.raises(ConfigError, match="TESSERA_AUDIT_CHECKPOINT_WEBHOOK") as err:
            make_config(tmp_path, **env)
        assert message in err.value.message
        assert SECRET not in err.value.message
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    os.chmod(secret_file, 0o600)
    config = make_config(
        tmp_path, **base, TESSERA_AUDIT_CHECKPOINT_WEBHOOK_SECRET_FILE=str(secret_file)
    )
    assert config.audit_checkpoint_webhook_secret == SECRET
    assert SECRET not in repr(config)


def test_without_a_webhook_nothing_changes(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    engine = make_engine(config.database_url)
    initialise(config, engine=engine)
    t = build(config, engine=engine)
    assert webhook_of(t.audit.sink) is None
    _append(t)
    assert t.audit.checkpoint() is not None
    assert not (tmp_path / "data" / "checkpoints-undelivered").exists()
