"""What the posture service needs from storage and from the rest of Tessera."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tessera.clock import iso
from tessera.errors import InvalidInput
from tessera.posture.finding import Finding, Severity

MAX_PAGE = 1000


@dataclass(frozen=True)
class StoredFinding:
    finding: Finding
    status: str  # open | resolved
    first_seen: datetime
    last_seen: datetime
    resolved_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.finding.to_dict(),
            "status": self.status,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "resolved_at": iso(self.resolved_at) if self.resolved_at else None,
        }


@dataclass(frozen=True)
class FindingQuery:
    """Filters of ``GET /admin/v1/posture/findings``; paging by ``key`` (``after``)."""

    status: str | None = "open"
    severity: str | None = None  # this severity or worse
    rule: str | None = None
    agent: str | None = None
    subject_kind: str | None = None
    after: str | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
        if self.status not in (None, "open", "resolved"):
            raise InvalidInput("status must be open or resolved")
        if self.severity is not None and self.severity not in {s.value for s in Severity}:
            raise InvalidInput("severity must be low, medium, high or critical")


class FindingStore(Protocol):
    def record(
        self,
        findings: Iterable[Finding],
        *,
        scan_id: str,
        started: datetime,
        now: datetime,
        stats: dict[str, Any],
        actor: str,
        keep_rules: frozenset[str] = frozenset(),
    ) -> dict[str, int]: ...

    def query(self, q: FindingQuery) -> list[StoredFinding]: ...

    def get(self, key: str) -> StoredFinding | None: ...

    def last_scan(self) -> dict[str, Any] | None: ...

    def mark_resolved(self, key: str, now: datetime) -> None: ...
