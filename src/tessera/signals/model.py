"""The data of SSF streams (SSF 1.0 §8.1): stored rows, settings, delivery methods, and
RFC 9493 subject identifiers (validation, the stable key a removed subject is stored by)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from tessera.crypto.canonical import canonical_json
from tessera.errors import InvalidInput
from tessera.outbound import OutboundPolicy
from tessera.signals.caep import subject_ids

PUSH: Final = "urn:ietf:rfc:8935"
POLL: Final = "urn:ietf:rfc:8936"
STATUSES: Final = ("enabled", "paused", "disabled")
SUBJECT_FORMATS: Final = {
    "account": ("uri",),
    "email": ("email",),
    "iss_sub": ("iss", "sub"),
    "opaque": ("id",),
    "phone_number": ("phone_number",),
    "did": ("url",),
    "uri": ("uri",),
}


@dataclass(frozen=True)
class StreamRow:
    """A stored stream (table ``ssf_streams``)."""

    id: str
    service_id: str
    config: dict[str, Any]
    method: str
    endpoint_url: str | None
    status: str
    status_reason: str | None
    created_seq: int
    created_at: datetime
    updated_at: datetime
    auth_sealed: str | None = None  # push: the Authorization header, sealed (never shown)


@dataclass(frozen=True)
class DeliveryRow:
    """A push delivery due now, with its stream's endpoint."""

    id: int
    stream_id: str
    jti: str
    set_jwt: str
    attempts: int
    endpoint_url: str | None
    auth_sealed: str | None = None


class SignalsStore(Protocol):
    def write(self) -> Any: ...
    def read(self) -> Any: ...


@dataclass(frozen=True)
class SsfSettings:
    issuer: str
    push_hosts: frozenset[str] = frozenset()
    allow_private: bool = False
    push_timeout: float = 5.0

    @property
    def push_policy(self) -> OutboundPolicy:
        return OutboundPolicy(self.push_hosts, self.allow_private, timeout=self.push_timeout)


def subject_key(subject: Mapping[str, Any]) -> str:
    """Stable key of a simple subject identifier (RFC 8785 canonical JSON, SHA-256)."""
    return "sha256:" + hashlib.sha256(canonical_json(dict(subject))).hexdigest()


def check_subject(value: Any) -> dict[str, Any]:
    """An RFC 9493 subject identifier (or SSF ``complex`` / ``aliases``); ``InvalidInput``."""
    if not isinstance(value, dict) or len(json.dumps(value)) > 4096:
        raise InvalidInput("subject must be a subject identifier object")
    fmt = value.get("format")
    if fmt in ("complex", "aliases"):
        parts = subject_ids(value)
        if not parts:
            raise InvalidInput(f"a {fmt} subject needs at least one identifier")
        for part in parts:
            check_subject(part)
        return dict(value)
    members = SUBJECT_FORMATS.get(fmt) if isinstance(fmt, str) else None
    if members is None:
        raise InvalidInput("subject format is not supported (RFC 9493 §3)")
    for m in members:
        v = value.get(m)
        if not isinstance(v, str) or not v or len(v) > 512:
            raise InvalidInput(f"a {fmt} subject needs {m!r}")
    return dict(value)


KEEP: Final = "\x00keep"  # PATCH without delivery: the sealed header stays


def auth_header(value: Any, supported: bool) -> str | None:
    """SSF 1.0 §8.1.1: ``delivery.authorization_header`` for push (write-only here)."""
    if value is None:
        return None
    if not supported:
        raise InvalidInput("delivery.authorization_header is not supported")
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= 4096
        or not all(" " <= c <= "~" for c in value)
    ):
        raise InvalidInput("delivery.authorization_header must be printable ASCII text")
    return value
