"""Signed checkpoints: ``(tree_size, head_hash)`` signed with Tessera's active key.

A checkpoint commits to every record up to ``tree_size``: changing, removing or reordering
any of them changes the head hash. Checkpoints are written to the store *and* to an external
sink (a directory always, plus a webhook when configured: ``audit/webhook.py``), so deleting
the ledger's tail is detected by the checkpoint outside the database that covers more
records than the ledger still has.

Format: a compact JWS (RFC 7515) with header ``typ: tessera-audit-checkpoint+jwt`` and
claims ``{"iss", "iat", "tree_size", "head_hash"}``; ``head_hash`` is lower-case hex.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tessera.audit.chain import ChainHead
from tessera.crypto.errors import TokenInvalid
from tessera.crypto.jws import JwksKeys, KeyLookup, sign_jwt, verify_jwt
from tessera.crypto.keys import SigningKey
from tessera.errors import Unavailable

CHECKPOINT_TYP = "tessera-audit-checkpoint+jwt"
ALGORITHMS = ("ES256", "EdDSA")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_FILE = re.compile(r"^checkpoint-(\d{1,19})\.jws$")
MAX_CHECKPOINT_BYTES = 8192


@dataclass(frozen=True)
class Checkpoint:
    tree_size: int
    head_hash: str
    issued_at: int
    issuer: str
    kid: str | None
    jws: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "head_hash": self.head_hash,
            "issued_at": self.issued_at,
            "issuer": self.issuer,
            "kid": self.kid,
        }


def sign_checkpoint(head: ChainHead, key: SigningKey, *, issuer: str, now: float) -> Checkpoint:
    claims = {
        "iss": issuer,
        "iat": int(now),
        "tree_size": head.size,
        "head_hash": head.hash,
    }
    jws = sign_jwt(claims, key, typ=CHECKPOINT_TYP)
    return Checkpoint(head.size, head.hash, int(now), issuer, key.kid, jws)


def verify_checkpoint(jws: str, keys: KeyLookup, *, now: float) -> Checkpoint:
    """Verify a checkpoint's signature and shape; any failure is ``TokenInvalid``."""
    if len(jws) > MAX_CHECKPOINT_BYTES:
        raise TokenInvalid(detail="checkpoint too large")
    verified = verify_jwt(
        jws.strip(),
        keys=keys,
        algorithms=ALGORITHMS,
        typ=CHECKPOINT_TYP,
        issuer=None,
        audience=None,
        now=now,
        require=("iss", "iat", "tree_size", "head_hash"),
    )
    c = verified.claims
    size, head, iss, iat = c["tree_size"], c["head_hash"], c["iss"], c["iat"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise TokenInvalid(detail="tree_size is not a non-negative integer")
    if not isinstance(head, str) or not _HEX64.fullmatch(head):
        raise TokenInvalid(detail="head_hash is not 64 hex digits")
    if not isinstance(iss, str) or isinstance(iat, bool) or not isinstance(iat, int | float):
        raise TokenInvalid(detail="iss or iat malformed")
    return Checkpoint(size, head, int(iat), iss, verified.kid, jws.strip())


def key_lookup(public_jwks: Collection[Mapping[str, Any]]) -> JwksKeys:
    """Every Tessera signing key ever used, retired ones included: checkpoints outlive the
    JWKS publication window of the key that signed them."""
    return JwksKeys(list(public_jwks))


class DirectoryCheckpointSink:
    """Checkpoints as files ``checkpoint-<tree size>.jws`` in a directory, each written once
    (create-exclusive, fsync'd). Point it at storage the database's users cannot change."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, checkpoint: Checkpoint) -> Path:
        try:
            # an existing file: another node checkpointed the same size first
            return write_checkpoint_file(self.directory, checkpoint)
        except OSError as exc:
            raise Unavailable(
                "the audit checkpoint sink cannot be written",
                code="audit_sink_unavailable",
                detail=f"{self.directory}: {exc.strerror}",
            ) from exc

    def read_all(self) -> list[tuple[str, str]]:
        """``(file name, content)`` of every checkpoint file, oldest first."""
        if not self.directory.is_dir():
            return []
        found: list[tuple[int, str, str]] = []
        for path in self.directory.iterdir():
            m = _FILE.fullmatch(path.name)
            if m is None:
                continue
            if path.stat().st_size > MAX_CHECKPOINT_BYTES:
                found.append((int(m.group(1)), path.name, "<oversized>"))
                continue
            found.append((int(m.group(1)), path.name, path.read_text()))
        return [(name, text) for _, name, text in sorted(found)]


def write_checkpoint_file(directory: Path, checkpoint: Checkpoint) -> Path:
    """``checkpoint-<size>.jws`` in ``directory``, written once and durably (file and
    directory synced); a file already there is left as it is. ``OSError`` on failure."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"checkpoint-{checkpoint.tree_size:012d}.jws"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as fh:
        fh.write(checkpoint.jws + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(directory)
    return path


def fsync_dir(directory: Path) -> None:
    """Make a file created or renamed in ``directory`` survive a crash (POSIX: the entry is
    durable only once the directory itself is synced)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
