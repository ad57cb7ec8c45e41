"""Linked segments: archiving the ledger by export, and verifying across the links.

The ledger is one hash chain with one ``seq`` numbering for all time. A *segment* is a
range of it: segment 1 starts at seq 1 (linked to 64 zeros); archiving segment ``k`` (seq
``first..N``) writes its records and checkpoints to a directory and records a new segment
``k + 1`` starting at ``N + 1`` whose ``prev_hash`` is the archived head ``hash(N)`` (the
record ``N + 1`` links to it like every record links to its predecessor). Nothing about a
record's bytes or hash changes: an archive verifies with the same rules as the live ledger.

Archive directory layout (one per segment, several may share a directory)::

    segment-000001.jsonl          the segment's records, one export line each (with hash)
    segment-000001.json           manifest: range, link hashes, file SHA-256, checkpoint
    checkpoints/checkpoint-*.jws  every signed checkpoint in first-1 .. N

The manifest is a convenience (it is not signed); what proves an archive are the signed
checkpoints: the one at ``N`` fixes the archived head, and the one at ``first - 1`` (the
previous archive's last) fixes where it starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tessera.audit.chain import GENESIS_HASH, Problem
from tessera.audit.checkpoint import fsync_dir
from tessera.errors import InvalidInput, Unavailable

MANIFEST_VERSION = 1
_MANIFEST = re.compile(r"^segment-(\d{6,12})\.json$")
MAX_MANIFEST = 64 * 1024
ARCHIVED_EVENT = "audit.segment_started"
PURGED_EVENT = "audit.segment_purged"


@dataclass(frozen=True)
class Segment:
    """A row of ``audit_segments``: segment ``number`` starts at ``first_seq`` and links to
    ``prev_hash``, the head of the archive ``archive_name`` (``archive_sha256``)."""

    number: int
    first_seq: int
    prev_hash: str
    archive_name: str
    archive_sha256: str
    archived_records: int
    created_at: datetime


GENESIS_SEGMENT = Segment(1, 1, GENESIS_HASH, "", "", 0, datetime.min.replace(tzinfo=UTC))


@dataclass(frozen=True)
class Manifest:
    segment: int
    first_seq: int
    last_seq: int
    prev_hash: str
    head_hash: str
    records_file: str
    sha256: str
    archived_at: str
    checkpoint: str  # the signed checkpoint at last_seq (compact JWS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": MANIFEST_VERSION,
            "segment": self.segment,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "prev_hash": self.prev_hash,
            "head_hash": self.head_hash,
            "records_file": self.records_file,
            "sha256": self.sha256,
            "archived_at": self.archived_at,
            "checkpoint": self.checkpoint,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Manifest:
        try:
            m = Manifest(
                segment=int(d["segment"]),
                first_seq=int(d["first_seq"]),
                last_seq=int(d["last_seq"]),
                prev_hash=str(d["prev_hash"]),
                head_hash=str(d["head_hash"]),
                records_file=str(d["records_file"]),
                sha256=str(d["sha256"]),
                archived_at=str(d["archived_at"]),
                checkpoint=str(d["checkpoint"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput("archive manifest is malformed", detail=repr(exc)) from exc
        if d.get("v") != MANIFEST_VERSION or "/" in m.records_file or "\\" in m.records_file:
            raise InvalidInput("archive manifest is malformed")
        if not 1 <= m.first_seq <= m.last_seq + 1:
            raise InvalidInput("archive manifest has an impossible range")
        return m


def records_name(segment: int) -> str:
    return f"segment-{segment:06d}.jsonl"


def manifest_name(segment: int) -> str:
    return f"segment-{segment:06d}.json"


def write_records(path: Path, lines: Iterable[str]) -> tuple[str, int]:
    """Write export lines to ``path`` (create-exclusive through a temporary name, fsync'd,
    then renamed); returns the file's SHA-256 (hex) and how many lines it holds."""
    tmp = path.with_name(path.name + ".partial")
    digest, count = hashlib.sha256(), 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            for line in lines:
                data = line.encode("utf-8")
                digest.update(data)
                fh.write(data)
                count += 1
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            raise FileExistsError(str(path))
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise Unavailable(
            "the archive cannot be written",
            code="audit_archive_unavailable",
            detail=f"{path}: {exc.strerror or exc}",
        ) from exc
    return digest.hexdigest(), count


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    path = directory / manifest_name(manifest.segment)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(manifest.to_dict(), fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(directory)
    except OSError as exc:
        raise Unavailable(
            "the archive manifest cannot be written",
            code="audit_archive_unavailable",
            detail=f"{path}: {exc.strerror or exc}",
        ) from exc
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ArchivedSegment:
    """An archive found in a directory: its manifest and where its files are."""

    directory: Path
    manifest: Manifest

    @property
    def records_path(self) -> Path:
        return self.directory / self.manifest.records_file

    @property
    def checkpoint_dir(self) -> Path:
        return self.directory / "checkpoints"

    def lines(self) -> Iterator[str]:
        with self.records_path.open(encoding="utf-8") as fh:
            yield from fh


def find_archives(directories: Iterable[Path]) -> tuple[list[ArchivedSegment], list[Problem]]:
    """Every archive manifest in the directories, ordered by first seq; a manifest that
    cannot be read is a problem (never silently skipped)."""
    found: dict[int, ArchivedSegment] = {}
    problems: list[Problem] = []
    for directory in directories:
        if not directory.is_dir():
            problems.append(Problem("archive_missing", f"{directory}: not a directory"))
            continue
        for path in sorted(directory.iterdir()):
            if _MANIFEST.fullmatch(path.name) is None:
                continue
            try:
                if path.stat().st_size > MAX_MANIFEST:
                    raise InvalidInput("archive manifest too large")
                data = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(data, dict):
                    raise InvalidInput("archive manifest is not an object")
                m = Manifest.from_dict(data)
            except (OSError, ValueError, InvalidInput) as exc:
                problems.append(Problem("archive_unreadable", f"{path}: {exc}"))
                continue
            if m.first_seq in found:
                problems.append(
                    Problem(
                        "archive_duplicate",
                        f"{path}: a second archive starting at record {m.first_seq}",
                        m.first_seq,
                    )
                )
                continue
            found[m.first_seq] = ArchivedSegment(directory, m)
    return [found[k] for k in sorted(found)], problems
