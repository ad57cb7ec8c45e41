"""What the audit service needs from storage (implemented by ``store/sql_audit.py``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tessera.audit.chain import ChainHead, PreparedBody
from tessera.audit.checkpoint import Checkpoint
from tessera.audit.segments import Segment
from tessera.audit.verify import RangeResult
from tessera.errors import InvalidInput

MAX_PAGE = 1000


@dataclass(frozen=True)
class AuditQuery:
    """Filters of ``GET /admin/v1/audit`` and ``tessera audit search``; all optional.

    Paging is by sequence number: ascending pages continue ``after`` the last ``seq`` seen;
    descending pages (``newest_first``) continue ``before`` it.
    """

    agent: str | None = None
    session: str | None = None
    user: str | None = None
    event_type: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: int = 0
    before: int | None = None
    limit: int = 100
    newest_first: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
        if self.after < 0 or (self.before is not None and self.before < 0):
            raise InvalidInput("after and before must be non-negative")


@dataclass(frozen=True)
class ChainBatch:
    """What one chainer transaction did."""

    seqs: list[int]  # the sequence numbers given to the caller's entries, in order
    chained_outbox: int  # outbox rows moved into the ledger
    head: ChainHead
    more_pending: bool


class AuditLedgerStore(Protocol):
    def chain(
        self, bodies: Sequence[dict[str, Any] | PreparedBody], *, outbox_limit: int
    ) -> ChainBatch:
        """In one durable transaction under the chain lock: move up to ``outbox_limit``
        outbox rows into the ledger, then append ``bodies``."""

    def head(self) -> ChainHead: ...

    def pending(self) -> int: ...

    def close(self) -> None:
        """Give back what the store keeps open between appends (a connection)."""

    def index_pending(self) -> int:
        """Extend the agent/session/user lookup over the next batch of records; returns
        how many it covered (0 when it is complete)."""

    def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
        """Store a checkpoint; False when one for that tree size exists."""

    def checkpoint_jws(self) -> list[tuple[int, str]]: ...

    def scan(
        self, after: int, batch: int, upto: int | None = None
    ) -> Iterator[list[tuple[int, bytes, str]]]:
        """``(seq, body, hash)`` rows after ``after`` (up to ``upto``) in order, in batches."""

    def check_ranges(
        self, ranges: Sequence[tuple[int, int, str | None]], wanted: frozenset[int]
    ) -> list[RangeResult] | None:
        """Check ``(after, upto, start_hash)`` ranges of the chain at once, one process
        each (``start_hash`` None: the stored hash of record ``after``); None when this
        store cannot here (an in-memory database, a process with other threads)."""

    def query(self, q: AuditQuery) -> list[dict[str, Any]]:
        """Matching records (each with its ``hash``)."""

    def segments(self) -> list[Segment]:
        """Every segment after the first, oldest first."""

    def first_seq(self) -> int | None:
        """The oldest record the live ledger holds (None when empty)."""

    def start_segment(self, segment: Segment, marker: dict[str, Any]) -> ChainBatch:
        """Record the next segment and chain ``marker`` in one transaction."""

    def purge(self, before_seq: int, marker: dict[str, Any]) -> tuple[int, ChainBatch]:
        """Remove live records below a segment boundary and chain ``marker``."""
