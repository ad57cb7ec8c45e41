"""The hash chain: linking entries into records, and checking a chain record by record.

``hash(n) = sha256(hash(n-1) || canonical_json(record(n) without "hash"))`` where the record
holds its own ``seq`` and ``prev_hash`` (= ``hash(n-1)``, hex); the first record links to 64
zeros. A chain alone proves order and integrity only up to the newest *signed checkpoint*
(``checkpoint.py``): anyone may recompute hashes, nobody else can sign.

The checker reads stored bytes and never re-encodes JSON, so it runs at hashing speed. It
finds ``seq`` and ``prev_hash`` inside a record by searching from the end: in canonical
JSON they are top-level keys after which only strings, a list of strings and integers
follow, and a quote inside a string is always escaped, so the last unescaped match is the
top-level key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from json.encoder import encode_basestring as _quote
from typing import Any, TypeVar

from tessera.audit.encoding import _plain, record_bytes
from tessera.audit.record import RECORD_VERSION, AuditEntry, current_request_id
from tessera.clock import iso, parse_iso
from tessera.errors import InvalidInput

GENESIS_HASH = "0" * 64
_R = TypeVar("_R")
_PREV = b',"prev_hash":"'
_SEQ = b',"seq":'
_PL, _SL = len(_PREV), len(_SEQ)
_GENESIS_RAW = GENESIS_HASH.encode()


@dataclass(frozen=True)
class ChainHead:
    """The newest record's position and hash (``size`` 0 and genesis when empty)."""

    size: int
    hash: str


@dataclass(frozen=True)
class LinkedRecord:
    """A record ready to store: its bytes, hash and the columns queries filter on
    (``event_type, outcome, principal, agent, session, user``) and its time."""

    seq: int
    body: bytes
    hash: str
    columns: tuple[str, str, str | None, str | None, str | None, str | None]
    time: datetime


@dataclass(frozen=True, slots=True)
class PreparedBody:
    """A record's canonical bytes with two holes, for ``prev_hash`` and ``seq``.

    Built by the caller (``prepare``) before the record joins a group, so the committer
    only splices and hashes: ``before_prev + prev_hash + before_seq + str(seq) +
    after_seq`` is exactly ``record_bytes`` of the record. That holds because canonical
    JSON of an object is its canonical ``"key":value`` pairs in a fixed key order, so a
    top-level value is one contiguous piece that can be replaced by another value's
    canonical text; a 64-digit hex string and a non-negative integer below 2^53 encode
    as themselves.
    """

    before_prev: bytes
    before_seq: bytes
    after_seq: bytes
    columns: tuple[str, str, str | None, str | None, str | None, str | None]
    time: datetime
    # ``time`` as naive UTC text with microseconds ("YYYY-MM-DD HH:MM:SS.ffffff"), cut
    # from the record's own ``iso`` text: what SQLite stores (``fastsql.sqlite_timestamp``).
    utc_text: str


def utc_text(iso_text: str) -> str:
    """``"2026-01-02T03:04:05.678901Z"`` or ``"2026-01-02T03:04:05Z"`` (``clock.iso``
    of any datetime) as ``"2026-01-02 03:04:05.678901"`` / ``"... 03:04:05.000000"``."""
    if len(iso_text) == 27:
        return f"{iso_text[:10]} {iso_text[11:26]}"
    return f"{iso_text[:10]} {iso_text[11:19]}.000000"


def prepare(body: dict[str, Any], time: datetime) -> PreparedBody:
    """Encode a body (an entry's ``body(time)``) once, leaving holes for its place.

    The holes are found from the end, as ``ChainChecker`` does: after the top-level
    ``prev_hash`` only strings, a list of strings and integers follow, so the last
    ``,"prev_hash":"`` and ``,"seq":`` are the top-level keys (a quote inside a string is
    always escaped)."""
    raw = record_bytes({**body, "seq": 0, "prev_hash": GENESIS_HASH})
    i = raw.rfind(_PREV) + _PL
    j = raw.rfind(_SEQ) + _SL
    if i < _PL or j < _SL or j < i or raw[i : i + 64] != _GENESIS_RAW or raw[j : j + 1] != b"0":
        raise AssertionError("a record's canonical bytes lack their prev_hash or seq")
    return PreparedBody(
        raw[:i], raw[i + 64 : j], raw[j + 1 :], _columns(body), time, utc_text(iso(time))
    )


def prepare_entry(entry: AuditEntry, time: datetime) -> PreparedBody:
    """``prepare(entry.body(time), time)`` without building the body: the same checks,
    then the canonical text written directly in RFC 8785 key order (all keys ASCII, so
    UTF-16 order is code point order). ``details`` is canonical JSON on its own (an
    object's encoding does not depend on where it sits); a value this path does not
    cover takes ``prepare``. The property test compares both with ``rfc8785``."""
    plain = entry.check_plain()
    a = entry.actor
    rid = entry.request_id if entry.request_id is not None else current_request_id.get()
    details = entry.details
    if (rid is not None and type(rid) is not str) or type(details) is not dict:
        return prepare(entry.body(time), time)
    if not details:
        details_text = "{}"
    elif plain or _plain(details):
        details_text = json.dumps(
            details, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
    else:
        return prepare(entry.body(time), time)
    q = _quote
    try:
        before_prev = (
            f'{{"action":{q(entry.action)},"actor":{{"act":[{",".join(map(q, a.act))}],'
            f'"agent":{_opt(a.agent)},"model_digest":{_opt(a.model_digest)},'
            f'"operator":{_opt(a.operator)},"principal":{q(a.principal)},'
            f'"session":{_opt(a.session)},"user":{_opt(a.user)}}},'
            f'"details":{details_text},"event_type":{q(entry.event_type)},'
            f'"jti":{_opt(entry.jti)},"outcome":{q(entry.outcome)},'
            f'"policy_version":{_opt(entry.policy_version)},"prev_hash":"'
        ).encode()
        before_seq = (
            f'","reasons":[{",".join(map(q, entry.reasons))}],"request_id":{_opt(rid)},'
            f'"resource":{q(entry.resource)},"seq":'
        ).encode()
        when = iso(time)
        after_seq = f',"time":{q(when)},"v":{RECORD_VERSION}}}'.encode()
    except UnicodeEncodeError as exc:  # lone surrogates; check() refuses them already
        raise InvalidInput("audit record holds an invalid string") from exc
    columns = (entry.event_type, entry.outcome, a.principal, a.agent, a.session, a.user)
    return PreparedBody(before_prev, before_seq, after_seq, columns, time, utc_text(when))


def _opt(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def _columns(
    record: dict[str, Any],
) -> tuple[str, str, str | None, str | None, str | None, str | None]:
    actor = record.get("actor") or {}
    return (
        record["event_type"],
        record["outcome"],
        actor.get("principal"),
        actor.get("agent"),
        actor.get("session"),
        actor.get("user"),
    )


def link(head: ChainHead, bodies: Sequence[dict[str, Any] | PreparedBody]) -> list[LinkedRecord]:
    """Give each body (an entry's ``body()``, or one ``prepare``d from it) the next ``seq``
    and chain it after ``head``."""
    out: list[LinkedRecord] = []
    prev, seq = head.hash, head.size
    prev_raw = bytes.fromhex(prev)
    prev_hex = prev.encode()
    sha = hashlib.sha256
    for body in bodies:
        seq += 1
        if type(body) is PreparedBody:
            raw = b"".join(
                (body.before_prev, prev_hex, body.before_seq, b"%d" % seq, body.after_seq)
            )
            columns, when = body.columns, body.time
        else:
            record = {**body, "seq": seq, "prev_hash": prev}  # type: ignore[dict-item]
            raw = record_bytes(record)
            columns, when = _columns(record), parse_time(record)
        digest = sha(prev_raw + raw).digest()
        prev_raw = digest
        prev = digest.hex()
        prev_hex = prev.encode()
        out.append(LinkedRecord(seq, raw, prev, columns, when))
    return out


def link_prepared(
    head: ChainHead,
    bodies: Iterable[PreparedBody],
    row: Callable[[int, bytes, str, PreparedBody], _R],
) -> tuple[list[_R], ChainHead]:
    """``link`` for prepared bodies only, handing each record straight to ``row(seq,
    bytes, hash, body)`` (the store's row builder) instead of building a ``LinkedRecord``:
    group commit's hot loop, on the committer thread. The same bytes and hashes as
    ``link`` (a unit test compares them). Returns the rows and the new head."""
    out: list[_R] = []
    seq = head.size
    prev_raw = bytes.fromhex(head.hash)
    prev_hex = head.hash.encode()
    sha, join, append = hashlib.sha256, b"".join, out.append
    digest_hex = head.hash
    for body in bodies:
        seq += 1
        raw = join((body.before_prev, prev_hex, body.before_seq, b"%d" % seq, body.after_seq))
        prev_raw = sha(prev_raw + raw).digest()
        digest_hex = prev_raw.hex()
        prev_hex = digest_hex.encode()
        append(row(seq, raw, digest_hex, body))
    return out, ChainHead(seq, digest_hex)


def record_hash(prev_hash: str, body: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


@dataclass(frozen=True)
class Problem:
    """One finding of verification; ``seq`` names the first bad record when known."""

    kind: str  # "record_altered", "sequence_broken", "link_broken", "truncated", ...
    message: str
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seq": self.seq, "message": self.message}


@dataclass
class ChainChecker:
    """Feeds ``(seq, body, hash)`` rows in order; stops at the first bad record.

    ``wanted`` are tree sizes whose head hash the caller will compare with checkpoints.
    """

    start: ChainHead = field(default_factory=lambda: ChainHead(0, GENESIS_HASH))
    wanted: frozenset[int] = frozenset()
    size: int = 0
    head: str = GENESIS_HASH
    hash_at: dict[int, str] = field(default_factory=dict)
    problem: Problem | None = None

    def __post_init__(self) -> None:
        self.size, self.head = self.start.size, self.start.hash
        if self.size in self.wanted:
            self.hash_at[self.size] = self.head

    def feed(self, rows: Iterable[tuple[int, bytes, str]]) -> bool:
        """Check rows; False once a problem was found (the rest is then meaningless)."""
        if self.problem is not None:
            return False
        size, head = self.size, self.head
        head_raw, head_hex = bytes.fromhex(head), head.encode()
        wanted, hash_at = self.wanted, self.hash_at
        sha, prev_key, seq_key = hashlib.sha256, _PREV, _SEQ
        for seq, body, stored in rows:
            if seq != size + 1:
                kind = "records_missing" if seq > size + 1 else "sequence_broken"
                self._fail(kind, f"expected record {size + 1}, found record {seq}", size + 1)
                break
            i = body.rfind(prev_key) + _PL
            if (
                i < _PL
                or not body.startswith(head_hex, i)
                or not body.startswith(b'"', i + 64)
                or not body.startswith(b"%d," % seq, body.rfind(seq_key, i) + _SL)
            ):
                self._fail("link_broken", f"record {seq} does not name its place", seq)
                break
            digest = sha(head_raw + body).digest()
            computed = digest.hex()
            if computed != stored:
                self._fail("record_altered", f"record {seq}: hash does not match", seq)
                break
            size, head, head_raw, head_hex = seq, computed, digest, computed.encode()
            if seq in wanted:
                hash_at[seq] = head
        self.size, self.head = size, head
        return self.problem is None

    def feed_all(self, batches: Iterable[Iterable[tuple[int, bytes, str]]]) -> bool:
        """``feed`` each batch in turn, stopping at the first problem (the rest unread)."""
        for batch in batches:
            if not self.feed(batch):
                return False
        return self.problem is None

    def _fail(self, kind: str, message: str, seq: int) -> None:
        self.problem = Problem(kind, message, seq)


def extract(record: dict[str, Any]) -> dict[str, Any]:
    """Query columns of a record (what the admin API and CLI filter on)."""
    actor = record.get("actor") or {}
    return {
        "event_type": record["event_type"],
        "outcome": record["outcome"],
        "principal": actor.get("principal"),
        "agent": actor.get("agent"),
        "session": actor.get("session"),
        "user": actor.get("user"),
    }


def parse_time(record: dict[str, Any]) -> datetime:
    return parse_iso(str(record["time"]))
