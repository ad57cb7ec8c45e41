"""Export (JSON Lines) and reading an export back for verification.

Each line is the canonical JSON (RFC 8785) of one record *with* its ``hash``. Removing
``hash`` and canonicalising again gives the exact bytes that were hashed, so an export can
be verified without the database (``tessera audit verify --file``): the basis of archiving
a segment and of checks by a third party.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from tessera.audit.encoding import record_bytes
from tessera.errors import InvalidInput

MAX_LINE = 1 << 20


def export_line(record: dict[str, Any]) -> str:
    return record_bytes(record).decode("utf-8") + "\n"


def rows_from_export(
    lines: Iterable[str], batch: int = 5000
) -> Iterator[list[tuple[int, bytes, str]]]:
    """``(seq, hashed bytes, hash)`` rows of an export, in batches, for ``verify_ledger``.

    A malformed line becomes a row that cannot verify (its hash is empty), so the report
    names it instead of the reader failing.
    """
    out: list[tuple[int, bytes, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            if len(line) > MAX_LINE:
                raise ValueError("line too long")
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
            digest = record.pop("hash")
            seq = record["seq"]
            if not isinstance(seq, int) or not isinstance(digest, str):
                raise ValueError("seq or hash malformed")
            out.append((seq, record_bytes(record), digest))
        except (ValueError, KeyError, InvalidInput):
            seq = out[-1][0] + 1 if out else number
            out.append((seq, b"", ""))
        if len(out) >= batch:
            yield out
            out = []
    if out:
        yield out
