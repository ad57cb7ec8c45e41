"""What the ReBAC service needs from storage (implemented by ``store/sql_rebac.py``), and
the format of the change records the in-memory index follows.

The engine itself reads only ``TupleReader`` (ports.py); these are the durable side: the
stored models, the tuple table, and one ``rebac.tuples_written`` event per write batch
(small batches inline in its payload, large ones in ``rebac_changes`` under its sequence).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from tessera.clock import iso, parse_iso
from tessera.errors import InvalidInput
from tessera.rebac.errors import InvalidTuple
from tessera.rebac.ports import RelationTuple
from tessera.signals.events import Event

ChangeOp = Literal["write", "delete"]
MODEL_APPLIED = "rebac.model_applied"
TUPLES_WRITTEN = "rebac.tuples_written"
INLINE_CHANGES = 100  # a batch this small (and under INLINE_BYTES) rides in the event
INLINE_BYTES = 8192
MAX_CONTEXT_BYTES = 4096
MAX_OBJECT, MAX_RELATION, MAX_USER, MAX_CONDITION = 256, 64, 512, 64


@dataclass(frozen=True)
class StoredModel:
    """An applied authorization model: the DSL text and OpenFGA's JSON form."""

    id: str
    dsl: str
    json: dict[str, Any]
    created_at: datetime
    active: bool = True


@dataclass(frozen=True)
class TupleFilter:
    """Read filter. ``object`` may be a full ``type:id`` or a bare ``type:`` (every object
    of that type, as in OpenFGA's Read API)."""

    object: str | None = None
    relation: str | None = None
    user: str | None = None


class RebacRepo(Protocol):
    def active_model(self) -> StoredModel | None: ...
    def get_model(self, model_id: str) -> StoredModel | None: ...
    def list_models(self, limit: int) -> list[StoredModel]: ...
    def add_model(self, model: StoredModel, seq: int) -> None:
        """Store ``model`` (applied by event ``seq``) as the only active one."""

    def upsert(self, tuples: Sequence[RelationTuple], now: datetime) -> None: ...
    def delete(self, keys: Sequence[tuple[str, str, str]]) -> list[RelationTuple]:
        """Delete by key; return the tuples that existed (in input order)."""

    def delete_for_subject(self, subject: str) -> list[RelationTuple]:
        """Delete every tuple whose user is ``subject`` (or one of its usersets
        ``subject#rel``) or whose object is ``subject``; return them."""

    def read(
        self, where: TupleFilter, after: tuple[str, str, str] | None, limit: int
    ) -> list[RelationTuple]: ...
    def scan(self, batch: int = 5000) -> Iterator[RelationTuple]: ...
    def add_changes(self, seq: int, changes: Sequence[tuple[ChangeOp, RelationTuple]]) -> None: ...
    def changes(self, seq: int) -> list[tuple[ChangeOp, RelationTuple]]: ...


class EventLog(Protocol):
    def append(self, type: str, subject: str, payload: dict[str, Any], actor: str) -> int: ...
    def read_after(self, seq: int, limit: int = 1000) -> list[Event]: ...
    def head(self) -> int: ...


class RebacTx(Protocol):
    @property
    def rebac(self) -> RebacRepo: ...
    @property
    def events(self) -> EventLog: ...


class RebacWriteTx(RebacTx, Protocol):
    @property
    def consistency_token(self) -> str | None: ...


class RebacStore(Protocol):
    def write(self) -> AbstractContextManager[RebacWriteTx]: ...
    def read(self) -> AbstractContextManager[RebacTx]: ...


# -- the tuple wire shape (event payloads, HTTP, CLI files) ------------------------------


def tuple_to_dict(t: RelationTuple) -> dict[str, Any]:
    out: dict[str, Any] = {"object": t.object, "relation": t.relation, "user": t.user}
    if t.condition is not None:
        out["condition"] = {"name": t.condition, "context": dict(t.context or {})}
    if t.expires_at is not None:
        out["expires_at"] = iso(t.expires_at)
    return out


def tuple_from_dict(d: Any) -> RelationTuple:
    """The OpenFGA tuple shape (``condition: {name, context}``) plus ``expires_at``."""
    if not isinstance(d, Mapping):
        raise InvalidTuple("a tuple must be an object with object, relation and user")
    extra = set(d) - {"object", "relation", "user", "condition", "expires_at"}
    if extra:
        raise InvalidTuple(f"unexpected tuple field {sorted(extra)[0]!r}")
    parts = [d.get(k) for k in ("object", "relation", "user")]
    if not all(isinstance(p, str) and p for p in parts):
        raise InvalidTuple("object, relation and user must be non-empty strings")
    cond = d.get("condition")
    name, context = None, None
    if cond is not None:
        if not isinstance(cond, Mapping) or not isinstance(cond.get("name"), str):
            raise InvalidTuple("condition must be an object with a name")
        if set(cond) - {"name", "context"}:
            raise InvalidTuple("condition holds only name and context")
        name, context = cond["name"], cond.get("context")
    exp = d.get("expires_at")
    expires = None
    if exp is not None:
        try:
            expires = parse_iso(str(exp))
        except ValueError:
            raise InvalidTuple("expires_at must be an RFC 3339 timestamp") from None
    return RelationTuple(str(parts[0]), str(parts[1]), str(parts[2]), name, context, expires)


# -- field limits (the store's column sizes) and read cursors -----------------------------


def is_printable(value: str, limit: int) -> bool:
    if len(value) > limit or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return False
    try:
        value.encode("utf-8")  # lone surrogates cannot be stored
    except UnicodeEncodeError:
        return False
    return True


def _printable(value: str, what: str, limit: int) -> None:
    if not is_printable(value, limit):
        raise InvalidTuple(f"{what} must be at most {limit} printable characters")


def check_tuple_fields(t: RelationTuple) -> None:
    """Size and character limits that hold for every model (the store's column sizes)."""
    _printable(t.object, "object", MAX_OBJECT)
    _printable(t.relation, "relation", MAX_RELATION)
    _printable(t.user, "user", MAX_USER)
    if t.condition is not None:
        _printable(t.condition, "condition name", MAX_CONDITION)
    if t.context is not None:
        if t.condition is None:
            raise InvalidTuple("a condition context needs a condition name")
        if not isinstance(t.context, Mapping):
            raise InvalidTuple("condition context must be an object")
        try:
            size = len(json.dumps(dict(t.context), allow_nan=False))
        except (TypeError, ValueError):
            raise InvalidTuple("condition context must be plain JSON") from None
        if size > MAX_CONTEXT_BYTES:
            raise InvalidTuple(f"condition context is limited to {MAX_CONTEXT_BYTES} bytes")
    if t.expires_at is not None:
        try:
            t.expires_at.astimezone(UTC).timestamp()
        except (OverflowError, ValueError, OSError):
            raise InvalidTuple("expires_at is out of range") from None


def encode_cursor(key: tuple[str, str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidInput("malformed cursor", code="invalid_cursor") from None
    if not (isinstance(key, list) and len(key) == 3 and all(isinstance(k, str) for k in key)):
        raise InvalidInput("malformed cursor", code="invalid_cursor")
    return key[0], key[1], key[2]


# -- change records -----------------------------------------------------------------------


def record_changes(
    tx: Any,
    subject: str,
    writes: Sequence[RelationTuple],
    deletes: Sequence[RelationTuple],
    actor: str,
    *,
    reason: str | None = None,
) -> int:
    """Append the batch's one ``rebac.tuples_written`` event. Small batches ride in the
    payload; larger ones go to ``rebac_changes`` keyed by the event's sequence."""
    payload: dict[str, Any] = {"written": len(writes), "deleted": len(deletes)}
    if reason:
        payload["reason"] = reason
    inline: dict[str, Any] = {}
    if len(writes) + len(deletes) <= INLINE_CHANGES:
        inline = {
            "writes": [tuple_to_dict(t) for t in writes],
            "deletes": [tuple_to_dict(t) for t in deletes],
        }
        if len(json.dumps(inline)) > INLINE_BYTES:
            inline = {}
    if inline:
        return int(tx.events.append(TUPLES_WRITTEN, subject, {**payload, **inline}, actor))
    payload["changes_table"] = True
    seq = int(tx.events.append(TUPLES_WRITTEN, subject, payload, actor))
    changes: list[tuple[ChangeOp, RelationTuple]] = [("write", t) for t in writes]
    changes += [("delete", t) for t in deletes]
    tx.rebac.add_changes(seq, changes)
    return seq


def changes_of(tx: RebacTx, e: Event) -> list[tuple[ChangeOp, RelationTuple]]:
    if e.payload.get("changes_table"):
        return tx.rebac.changes(e.seq)
    out: list[tuple[ChangeOp, RelationTuple]] = [
        ("write", tuple_from_dict(d)) for d in e.payload.get("writes", [])
    ]
    out += [("delete", tuple_from_dict(d)) for d in e.payload.get("deletes", [])]
    return out
