"""The decision point's directory: attributes of subjects and resources, in the store.

An entry is an entity ``(type, id)`` and a JSON object of attributes; the PDP gives them to
Cedar (a plain subject's or resource's attributes, overlaid on what the request carries,
the directory winning; an agent's token layers win over its entry) and the AuthZEN search
APIs take their candidates from the ids of a type. Entities have no parents: the PDP builds
Cedar entities without a hierarchy (``pipeline._entity``); relationships belong in ReBAC.

Writes (``DirectoryService``) change the ``directory_entries`` rows and append one
``directory.changed`` event in the same transaction; the event log writes its audit record
into the outbox in that transaction too (docs/audit.md), so a change without its evidence
cannot commit. Reads on the decision path (``StoredDirectory``) are served from memory: the
whole directory is loaded once and then kept fresh by the node's event tailer, so every
node follows every change within the staleness bound, and a node that cannot follow fails
closed (``stale_state``).

Document format (``tessera directory load FILE``, ``POST /admin/v1/directory/load``, and
the ``attributes`` of bundle test files)::

    user:                       # entity type
      alice: {department: research, clearance: 2}
    document:
      roadmap: {classification: internal}

Users are keyed by username, the name relationship tuples use (``user:alice``,
decisions.md 90): the user an agent acts for, whom its token names by id (``usr_…``),
reads the entry ``user:<username>``, and the entry ``user:<user id>`` only when there is
none.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final, Protocol

from tessera.clock import Clock, iso
from tessera.errors import InvalidInput, NotFound, PayloadTooLarge
from tessera.identity.service import Written
from tessera.ids import is_id
from tessera.signals.events import Event
from tessera.signals.tailer import EventTailer

DIRECTORY_CHANGED: Final = "directory.changed"
USER: Final = "user"  # the entity type of Tessera users, in tuples and the directory
MAX_TYPE: Final = 64
MAX_ID: Final = 256
MAX_ATTRIBUTES_BYTES: Final = 16 * 1024
MAX_DEPTH: Final = 16
MAX_BATCH: Final = 10_000
INLINE_BYTES: Final = 8192  # a change this small carries its attributes in the event
_TYPE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*$")
_CTRL = re.compile(r"[\x00-\x1f\x7f]")

Key = tuple[str, str]


class InvalidEntry(InvalidInput):
    code = "invalid_directory_entry"
    title = "Invalid directory entry"


class EntryNotFound(NotFound):
    code = "directory_entry_not_found"
    title = "No such directory entry"


@dataclass(frozen=True)
class DirectoryEntry:
    type: str
    id: str
    attributes: Mapping[str, Any]
    updated_at: datetime
    updated_by: str

    @property
    def key(self) -> Key:
        return (self.type, self.id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "id": self.id,
            "attributes": dict(self.attributes),
            "updated_at": iso(self.updated_at),
            "updated_by": self.updated_by,
        }


@dataclass(frozen=True)
class DirectoryPage:
    entries: list[DirectoryEntry]
    next_cursor: str | None


@dataclass(frozen=True)
class LoadResult:
    set: int
    deleted: int

    def to_dict(self) -> dict[str, int]:
        return {"set": self.set, "deleted": self.deleted}


class DirectoryRepo(Protocol):
    """What the directory needs from the store, within one transaction."""

    def get(self, etype: str, eid: str) -> DirectoryEntry | None: ...

    def get_many(self, keys: Sequence[Key]) -> list[DirectoryEntry]: ...

    def upsert(
        self, entries: Sequence[tuple[str, str, str]], now: datetime, actor: str
    ) -> None: ...  # (type, id, attributes JSON)

    def delete(self, keys: Sequence[Key]) -> list[Key]: ...  # the keys that existed

    def all_keys(self) -> list[Key]: ...

    def page(self, etype: str | None, after: Key | None, limit: int) -> list[DirectoryEntry]: ...

    def scan(self, batch: int = 5000) -> Iterator[DirectoryEntry]: ...


class DirectoryTx(Protocol):
    @property
    def directory(self) -> DirectoryRepo: ...

    @property
    def events(self) -> Any: ...


class DirectoryStore(Protocol):
    def read(self) -> AbstractContextManager[Any]: ...

    def write(self) -> AbstractContextManager[Any]: ...


# -- validation ------------------------------------------------------------------------------


def check_type(etype: Any) -> str:
    if not isinstance(etype, str) or len(etype) > MAX_TYPE or not _TYPE.fullmatch(etype):
        raise InvalidEntry(
            f"an entity type is a Cedar name (letters, digits, _ and ::), at most {MAX_TYPE}"
        )
    return etype


def check_id(eid: Any) -> str:
    if not isinstance(eid, str) or not 1 <= len(eid) <= MAX_ID or _CTRL.search(eid):
        raise InvalidEntry(f"an entity id is 1 to {MAX_ID} printable characters")
    return eid


def _depth_ok(value: Any) -> bool:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        if isinstance(item, Mapping):
            if not all(isinstance(k, str) for k in item):
                return False
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)
    return True


def encode_attributes(attributes: Any) -> str:
    """The attributes as canonical JSON; refuses anything that is not a JSON object of at
    most ``MAX_ATTRIBUTES_BYTES`` bytes and ``MAX_DEPTH`` levels with finite numbers."""
    if not isinstance(attributes, Mapping):
        raise InvalidEntry("attributes must be a JSON object")
    if not _depth_ok(attributes):
        raise InvalidEntry(
            f"attributes nest deeper than {MAX_DEPTH} levels or have non-string keys"
        )
    try:
        text = json.dumps(attributes, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidEntry(f"attributes are not JSON: {str(exc)[:100]}") from None
    if len(text.encode()) > MAX_ATTRIBUTES_BYTES:
        raise PayloadTooLarge(f"an entry's attributes are limited to {MAX_ATTRIBUTES_BYTES} bytes")
    return text


def parse_document(data: Any) -> list[tuple[str, str, str]]:
    """``{type: {id: attributes}}`` → (type, id, attributes JSON), every entry checked."""
    if not isinstance(data, Mapping):
        raise InvalidEntry("a directory document maps entity types to {id: attributes}")
    out: list[tuple[str, str, str]] = []
    for etype, items in data.items():
        check_type(etype)
        if not isinstance(items, Mapping):
            raise InvalidEntry(f"{str(etype)[:64]}: must map ids to attributes")
        for eid, attrs in items.items():
            # YAML reads ids such as 101 as numbers; an id is always a string
            eid = str(eid) if isinstance(eid, int) and not isinstance(eid, bool) else eid
            out.append((etype, check_id(eid), encode_attributes(attrs)))
            if len(out) > MAX_BATCH:
                raise PayloadTooLarge(f"a load is limited to {MAX_BATCH} entries")
    return out


def encode_cursor(key: Key) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Key:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(raw, list) and len(raw) == 2 and all(isinstance(x, str) for x in raw):
            return (raw[0], raw[1])
    except (ValueError, TypeError):
        pass
    raise InvalidInput("malformed cursor", code="invalid_cursor")


def _ref(etype: str, eid: str) -> str:
    return f"{etype}:{eid}"


def _changed_payload(
    written: Sequence[tuple[str, str, str]], deleted: Sequence[Key]
) -> dict[str, Any]:
    """The event's payload (and so the audit record's details): what changed, with the new
    attributes when small; else the changed keys alone; else counts and ``reload`` (every
    node re-reads the whole directory). Nodes re-read changed rows either way."""
    payload: dict[str, Any] = {"set": len(written), "deleted": len(deleted)}
    removed = [{"type": t, "id": i} for t, i in deleted]
    inline = {
        "entries": [{"type": t, "id": i, "attributes": json.loads(a)} for t, i, a in written],
        "removed": removed,
    }
    if len(json.dumps(inline)) <= INLINE_BYTES:
        return {**payload, **inline}
    keys = {"entries": [{"type": t, "id": i} for t, i, _ in written], "removed": removed}
    if len(json.dumps(keys)) <= INLINE_BYTES:
        return {**payload, **keys, "attributes_omitted": True}
    return {**payload, "reload": True}


# -- writes and admin reads ------------------------------------------------------------------


class DirectoryService:
    """Changes to the directory (CLI, admin API, demo) and reads from the store."""

    def __init__(self, store: DirectoryStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def get(self, etype: str, eid: str) -> DirectoryEntry:
        check_type(etype)
        check_id(eid)
        with self._store.read() as tx:
            found: DirectoryEntry | None = tx.directory.get(etype, eid)
        if found is None:
            raise EntryNotFound(f"no directory entry {_ref(etype, eid)[:300]}")
        return found

    def list(
        self, etype: str | None = None, *, cursor: str | None = None, limit: int = 100
    ) -> DirectoryPage:
        if etype is not None:
            check_type(etype)
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000")
        after = decode_cursor(cursor) if cursor else None
        with self._store.read() as tx:
            rows: list[DirectoryEntry] = tx.directory.page(etype, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return DirectoryPage(rows, encode_cursor(rows[-1].key) if more and rows else None)

    def set(
        self, etype: str, eid: str, attributes: Mapping[str, Any], *, actor: str
    ) -> Written[DirectoryEntry]:
        """Create or replace one entry's attributes."""
        entry = (check_type(etype), check_id(eid), encode_attributes(attributes))
        with self._store.write() as tx:
            self._write(tx, [entry], [], actor)
            stored: DirectoryEntry | None = tx.directory.get(etype, eid)
        if stored is None:  # pragma: no cover - written in this transaction
            raise EntryNotFound("the entry vanished")
        return Written(stored, tx.consistency_token)

    def delete(self, etype: str, eid: str, *, actor: str) -> Written[None]:
        check_type(etype)
        check_id(eid)
        with self._store.write() as tx:
            if not tx.directory.delete([(etype, eid)]):
                raise EntryNotFound(f"no directory entry {_ref(etype, eid)[:300]}")
            tx.events.append(
                DIRECTORY_CHANGED,
                _ref(etype, eid)[:128],
                _changed_payload([], [(etype, eid)]),
                actor,
            )
        return Written(None, tx.consistency_token)

    def load(self, document: Any, *, actor: str, replace: bool = False) -> Written[LoadResult]:
        """Set every entry of a document in one transaction (all or nothing); ``replace``
        also deletes every stored entry the document does not hold."""
        entries = parse_document(document)
        keys = {(t, i) for t, i, _ in entries}
        if len(keys) != len(entries):  # pragma: no cover - a mapping has unique keys
            raise InvalidEntry("an entry appears twice")
        with self._store.write() as tx:
            gone: list[Key] = []
            if replace:
                stale = [k for k in tx.directory.all_keys() if k not in keys]
                gone = tx.directory.delete(stale) if stale else []
            if not entries and not gone:
                return Written(LoadResult(0, 0), None)
            self._write(tx, entries, gone, actor, deleted_already=True)
        return Written(LoadResult(len(entries), len(gone)), tx.consistency_token)

    def _write(
        self,
        tx: Any,
        entries: Sequence[tuple[str, str, str]],
        deletes: Sequence[Key],
        actor: str,
        *,
        deleted_already: bool = False,
    ) -> None:
        if deletes and not deleted_already:
            tx.directory.delete(list(deletes))
        if entries:
            tx.directory.upsert(list(entries), self._clock.now(), actor)
        subject = (
            _ref(entries[0][0], entries[0][1]) if len(entries) == 1 and not deletes else "directory"
        )
        tx.events.append(
            DIRECTORY_CHANGED, subject[:128], _changed_payload(entries, deletes), actor
        )


# -- the decision point's view ---------------------------------------------------------------


class StoredDirectory:
    """``AttributeSource`` over the directory table, answered from memory and kept fresh by
    the node's event tailer (like the relationship index). Every read first asks the tailer
    whether this node's state may be served (``StaleState`` otherwise: the decision denies).

    ``username_of`` (user id → username, app.py: the same ``UsernameOf`` the ReBAC stage
    names users with) makes a ``user`` read by Tessera user id answer the entry under the
    username first, then the one under the id (decisions.md 90)."""

    def __init__(
        self,
        store: DirectoryStore,
        tailer: EventTailer,
        *,
        username_of: Callable[[str], str] | None = None,
    ) -> None:
        self._store = store
        self._tailer = tailer
        self._username_of = username_of
        self._data: dict[str, dict[str, Mapping[str, Any]]] | None = None
        self._ids: dict[str, list[str]] = {}
        self._seq = 0
        self._lock = threading.Lock()
        tailer.subscribe("directory", self.on_events)

    # -- AttributeSource ------------------------------------------------------------------

    def attributes(self, etype: str, eid: str) -> Mapping[str, Any] | None:
        items = self._fresh().get(etype)
        if items is None:
            return None
        # Only id-shaped names are resolved: other names are usernames (or not Tessera
        # users at all, e.g. a plain AuthZEN subject) and must not cost a store read.
        if etype == USER and self._username_of is not None and is_id(USER, eid):
            name = self._username_of(eid)
            if name != eid:
                entry = items.get(name)
                if entry is not None:
                    return entry
        return items.get(eid)

    def ids_of_type(self, etype: str) -> Sequence[str]:
        self._fresh()
        ids = self._ids.get(etype)
        if ids is None:
            with self._lock:  # the tailer thread changes entries under this lock
                data = self._data or {}
                ids = sorted(data.get(etype, {}))
                self._ids[etype] = ids
        return ids

    # -- freshness ------------------------------------------------------------------------

    def _fresh(self) -> dict[str, dict[str, Mapping[str, Any]]]:
        # INVARIANT: never answer from state older than the staleness bound.
        self._tailer.ensure_fresh()
        data = self._data
        if data is None:
            with self._tailer.exclusive():
                if self._data is None:
                    self._load()
            data = self._data
        if data is None:  # pragma: no cover - _load sets it
            raise RuntimeError("directory not loaded")
        return data

    def _load(self) -> None:
        # Under the tailer's lock: no batch is dispatched meanwhile; events up to the head
        # are in this snapshot and the later ones will be delivered.
        with self._store.read() as tx:
            head = int(tx.events.head())
            data = self._snapshot(tx)
        self._seq = head
        with self._lock:
            self._data = data
            self._ids = {}

    @staticmethod
    def _snapshot(tx: Any) -> dict[str, dict[str, Mapping[str, Any]]]:
        data: dict[str, dict[str, Mapping[str, Any]]] = {}
        for entry in tx.directory.scan():
            data.setdefault(entry.type, {})[entry.id] = entry.attributes
        return data

    def on_events(self, tx: Any, events: Sequence[Event]) -> None:
        """Event tailer subscriber: apply directory changes after the loaded snapshot."""
        data = self._data
        if data is None:
            return  # not loaded yet: the load reads a snapshot that includes these
        for e in events:
            if e.seq <= self._seq:
                continue
            if e.type == DIRECTORY_CHANGED:
                data = self._apply(tx, e, data)
            self._seq = e.seq

    def _apply(
        self, tx: Any, e: Event, data: dict[str, dict[str, Mapping[str, Any]]]
    ) -> dict[str, dict[str, Mapping[str, Any]]]:
        if e.payload.get("reload"):
            fresh = self._snapshot(tx)
            with self._lock:
                self._data = fresh
                self._ids = {}
            return fresh
        # The rows of the tailer's snapshot are at least as new as the event: read them.
        keys = [(str(x["type"]), str(x["id"])) for x in e.payload.get("entries", [])]
        keys += [(str(x["type"]), str(x["id"])) for x in e.payload.get("removed", [])]
        found = {entry.key: entry for entry in tx.directory.get_many(keys)} if keys else {}
        with self._lock:
            for etype, eid in keys:
                entry = found.get((etype, eid))
                if entry is None:
                    data.get(etype, {}).pop(eid, None)
                else:
                    data.setdefault(etype, {})[eid] = entry.attributes
                self._ids.pop(etype, None)
        return data


def frozen_attributes(text: str) -> Mapping[str, Any]:
    """Stored JSON → a read-only mapping (entries are shared by every decision)."""
    value = json.loads(text)
    return MappingProxyType(value if isinstance(value, dict) else {})


__all__ = [
    "DIRECTORY_CHANGED",
    "DirectoryEntry",
    "DirectoryPage",
    "DirectoryService",
    "EntryNotFound",
    "InvalidEntry",
    "LoadResult",
    "StoredDirectory",
    "parse_document",
]
