"""``PostureService``: scan, persist findings, remediate, and scan on a schedule.

The schedule is one background thread per server (``start``/``stop`` with the app, like the
audit chainer): every ``interval`` seconds it scans, records the findings (first-seen /
last-seen kept per rule and subject) and closes access reviews past their deadline. It
never remediates on its own: changes happen only through ``tessera posture scan --apply``
or an administrator.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tessera.clock import Clock
from tessera.errors import TesseraError
from tessera.posture.finding import Finding
from tessera.posture.ports import FindingQuery, FindingStore, StoredFinding
from tessera.posture.remediation import Action, Outcome, Remediator, plan
from tessera.posture.scanner import PostureScanner, Progress, ScanResult

log = logging.getLogger("tessera.posture")
SCHEDULED_ACTOR = "system:posture"


@dataclass(frozen=True)
class RecordedScan:
    scan_id: str
    result: ScanResult
    counts: dict[str, int]


class PostureService:
    def __init__(
        self,
        scanner: PostureScanner,
        findings: FindingStore,
        remediator: Remediator,
        clock: Clock,
        *,
        interval: float = 0.0,
        on_schedule: Sequence[Callable[[], Any]] = (),
    ) -> None:
        self.scanner = scanner
        self._findings = findings
        self._remediator = remediator
        self._clock = clock
        self.interval = interval
        self._on_schedule = list(on_schedule)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def scan(
        self, *, actor: str, progress: Progress | None = None, record: bool = True
    ) -> RecordedScan:
        """Scan now; with ``record`` the findings are persisted and earlier ones that are no
        longer reported are marked resolved."""
        result = self.scanner.scan(progress)
        scan_id = "scan_" + secrets.token_hex(8)
        counts: dict[str, int] = {"open": len(result.findings)}
        if record:
            counts = self._findings.record(
                result.findings,
                scan_id=scan_id,
                started=result.started,
                now=result.finished,
                stats=result.stats(),
                actor=actor,
                keep_rules=frozenset(result.errors),
            )
        return RecordedScan(scan_id, result, counts)

    def plan(self, findings: Sequence[Finding]) -> list[Action]:
        return plan(findings)

    def apply(self, actions: Sequence[Action], *, actor: str) -> list[Outcome]:
        """Perform each action through the normal service calls; a finding whose actions
        all succeeded (or were already done) is marked resolved."""
        outcomes = [self._remediator.apply(a, actor=actor) for a in actions]
        failed = {o.action.finding_key for o in outcomes if o.status == "failed"}
        now = self._clock.now()
        for key in {o.action.finding_key for o in outcomes} - failed:
            self._findings.mark_resolved(key, now)
        return outcomes

    def findings(self, q: FindingQuery) -> list[StoredFinding]:
        return self._findings.query(q)

    def finding(self, key: str) -> StoredFinding | None:
        return self._findings.get(key)

    def last_scan(self) -> dict[str, Any] | None:
        return self._findings.last_scan()

    # -- schedule ----------------------------------------------------------------------

    def start(self) -> None:
        if self.interval <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tessera-posture", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join(timeout=30)

    def run_scheduled(self) -> RecordedScan | None:
        """One scheduled round: scan and record, then the other scheduled jobs (review
        deadlines). Errors are logged, never raised (the next round tries again)."""
        recorded: RecordedScan | None = None
        try:
            recorded = self.scan(actor=SCHEDULED_ACTOR)
            log.info(
                "posture scan %s: %d open, %d new, %d resolved",
                recorded.scan_id,
                recorded.counts.get("open", 0),
                recorded.counts.get("new", 0),
                recorded.counts.get("resolved", 0),
            )
        except TesseraError as exc:
            log.warning("posture scan failed: %s (%s)", exc.message, exc.detail)
        except Exception:
            log.exception("posture scan failed")
        for job in self._on_schedule:
            try:
                job()
            except Exception:
                log.exception("scheduled posture job failed")
        return recorded

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.run_scheduled()
