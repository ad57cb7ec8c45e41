"""The durable, sequenced event log (DESIGN section 6).

Every state change writes one or more event rows in the same transaction as the change (an
outbox); the commit is the acknowledgement. Events carry one global sequence number. Nodes
tail the log from their last sequence number; a *consistency token* is an encoding of a
sequence number that a caller can present to ask for an answer at least that fresh.

Events never carry secrets or tokens: payloads hold ids, statuses and reasons only.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tessera.clock import iso
from tessera.errors import InvalidInput

_TOKEN_PREFIX = "ct1."  # noqa: S105 - a name, not a secret


@dataclass(frozen=True)
class Event:
    seq: int
    type: str  # e.g. "agent.suspended"
    subject: str  # id of the thing that changed
    payload: dict[str, Any]
    actor: str  # who caused it: "admin:<token id>", "cli", "system"
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "type": self.type,
            "subject": self.subject,
            "payload": self.payload,
            "actor": self.actor,
            "created_at": iso(self.created_at),
            "consistency_token": encode_consistency_token(self.seq),
        }


def encode_consistency_token(seq: int) -> str:
    """An opaque, URL-safe token naming a position in the event log."""
    if seq < 0:
        raise ValueError("sequence numbers are non-negative")
    raw = seq.to_bytes(8, "big")
    return _TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_consistency_token(token: str) -> int:
    """The sequence number inside a consistency token; malformed tokens are ``InvalidInput``."""
    if not isinstance(token, str) or not token.startswith(_TOKEN_PREFIX) or len(token) > 32:
        raise InvalidInput("malformed consistency token", code="invalid_consistency_token")
    body = token[len(_TOKEN_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput("malformed consistency token", code="invalid_consistency_token") from exc
    if len(raw) != 8:
        raise InvalidInput("malformed consistency token", code="invalid_consistency_token")
    return int.from_bytes(raw, "big")


class EventReader(Protocol):
    """What a node needs to tail the log."""

    def read_after(self, seq: int, limit: int = 1000) -> list[Event]: ...

    def head(self) -> int: ...
