"""A minimal receiver for Tessera's audit checkpoint webhook (docs/audit.md, "Checkpoint
sinks"), standard library only, so it can run on the host that keeps the checkpoints.

It stores each checkpoint it accepts as ``checkpoint-<tree size>.jws`` (written once,
fsync'd), the layout ``tessera audit verify --checkpoints DIR`` reads, and answers 201
(200 when it already holds that tree size). It checks the shared secret (bearer or HMAC),
the media type, the size and that the body is a compact JWS whose ``tree_size`` claim matches
the ``Tessera-Checkpoint-Tree-Size`` header. It does not check signatures: the auditor does,
with ``tessera audit verify --checkpoints DIR [--jwks pinned-jwks.json]``.

    python receiver.py --dir /srv/tessera-checkpoints --port 9443 --secret-file /etc/cp-secret
    python receiver.py ... --auth hmac      # for TESSERA_AUDIT_CHECKPOINT_WEBHOOK_AUTH=hmac

Put it behind TLS (a reverse proxy) in production; Tessera sends plain http only to private
addresses with TESSERA_OUTBOUND_ALLOW_PRIVATE=1.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MEDIA_TYPE = "application/tessera-audit-checkpoint+jwt"
MAX_BYTES = 8192
TOLERANCE = 300  # seconds of clock difference accepted in an HMAC timestamp
_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


def authorised(mode: str, secret: str | None, headers: object, body: bytes) -> bool:
    if secret is None:
        return True
    get = headers.get  # type: ignore[attr-defined]
    if mode == "bearer":
        return hmac.compare_digest(get("Authorization", ""), f"Bearer {secret}")
    fields = dict(p.strip().partition("=")[::2] for p in get("Tessera-Signature", "").split(","))
    t, given = fields.get("t", ""), fields.get("v1", "")
    if not t.isdigit() or abs(time.time() - int(t)) > TOLERANCE:
        return False
    want = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, given)


def tree_size_of(body: bytes) -> int | None:
    """The ``tree_size`` claim of a compact JWS (unverified), or None if it is not one."""
    text = body.decode("ascii", "replace").strip()
    if not _JWS.fullmatch(text):
        return None
    payload = text.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        return None
    size = claims.get("tree_size") if isinstance(claims, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


def store(directory: Path, size: int, body: bytes) -> bool:
    """Write ``checkpoint-<size>.jws`` once; False when it already exists."""
    path = directory / f"checkpoint-{size:012d}.jws"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(body.strip() + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


def make_handler(directory: Path, mode: str, secret: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BYTES:
                return self._answer(413)
            body = self.rfile.read(length)
            if not authorised(mode, secret, self.headers, body):
                return self._answer(401)
            if self.headers.get("Content-Type", "").split(";")[0].strip() != MEDIA_TYPE:
                return self._answer(415)
            size = tree_size_of(body)
            if size is None or self.headers.get("Tessera-Checkpoint-Tree-Size") != str(size):
                return self._answer(400)
            return self._answer(201 if store(directory, size, body) else 200)

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, fmt: str, *args: object) -> None:  # no headers, no secret
            print(f"{self.address_string()} {fmt % args}", flush=True)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9443)
    parser.add_argument("--secret-file", type=Path)
    parser.add_argument("--auth", choices=("bearer", "hmac"), default="bearer")
    args = parser.parse_args()
    secret = args.secret_file.read_text().strip() if args.secret_file else None
    args.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(args.dir, args.auth, secret))
    print(f"receiving checkpoints on {args.host}:{args.port} into {args.dir}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
