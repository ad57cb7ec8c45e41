"""``AuditService``: durable recording with group commit, the chainer, checkpoints, verify.

Two ways into the ledger:

- **With a state change**: ``tx.audit.append(entry)`` inside a store write transaction puts
  the entry in the outbox; the change and its evidence commit together (the commit is the
  acknowledgement) and the chainer links it into the chain shortly after.
- **Without one** (a decision, a refused request): ``record(entry)`` returns only once the
  record is chained and durably committed. Concurrent callers share one transaction
  (group commit): a committer thread takes everything queued into one transaction
  while the next group queues up behind it.

A background thread (``start``/``stop``, one per server) chains outbox rows and writes a
checkpoint every ``checkpoint_every`` records or ``checkpoint_interval`` seconds, and once
more at clean shutdown. Several nodes may run it: the store's chain lock lets one at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tessera.audit.chain import (
    GENESIS_HASH,
    ChainChecker,
    ChainHead,
    PreparedBody,
    Problem,
    prepare_entry,
)
from tessera.audit.checkpoint import (
    Checkpoint,
    DirectoryCheckpointSink,
    key_lookup,
    sign_checkpoint,
    verify_checkpoint,
)
from tessera.audit.export import export_line, rows_from_export
from tessera.audit.ports import AuditLedgerStore, AuditQuery
from tessera.audit.record import ActorLayers, AuditEntry
from tessera.audit.segments import (
    ARCHIVED_EVENT,
    GENESIS_SEGMENT,
    PURGED_EVENT,
    ArchivedSegment,
    Manifest,
    Segment,
    file_sha256,
    find_archives,
    manifest_name,
    records_name,
    write_manifest,
    write_records,
)
from tessera.audit.verify import (
    ChainRun,
    VerifyReport,
    join_ranges,
    split_ranges,
    verify_ledger,
)
from tessera.clock import Clock, iso
from tessera.crypto.jws import JwksKeys, KeyLookup
from tessera.crypto.keyring import KeyRecord
from tessera.crypto.keys import SigningKey
from tessera.errors import Conflict, InvalidInput, StoreUnavailable, TesseraError

log = logging.getLogger("tessera.audit")
MAX_GROUP = 4096
GATHER_MAX = 0.002  # seconds the committer waits for a group to fill
SCAN_BATCH = 5000
PARALLEL_RANGE_MIN = 50_000  # records per process below which verify stays in one process
LOOKUP_BATCHES_PER_TICK = 40  # lookup transactions per chainer tick, at most


def default_verify_jobs() -> int:
    """How many processes ``tessera audit verify`` checks with by default: one per CPU,
    at most 8."""
    return min(os.cpu_count() or 1, 8)


class CheckpointKeys(Protocol):
    """The part of ``KeyRing`` checkpoints need."""

    def active_key(self) -> SigningKey: ...

    def list(self) -> list[KeyRecord]: ...


@dataclass(frozen=True)
class AuditSettings:
    checkpoint_every: int = 1000  # records
    checkpoint_interval: float = 60.0  # seconds
    outbox_batch: int = 1000
    poll_interval: float = 0.2
    issuer: str = "tessera"


class _Group:
    """One group commit: the bodies of everyone who joined it, and how they learn the
    outcome. Threads wait on the group's one event (one wake-up call for the whole
    group); coroutines each have a future, resolved per event loop in one callback."""

    __slots__ = ("bodies", "done", "error", "futures", "seqs")

    def __init__(self) -> None:
        self.bodies: list[PreparedBody] = []
        self.futures: list[tuple[int, asyncio.Future[int]]] = []
        self.seqs: list[int] = []
        self.error: TesseraError | None = None
        self.done = threading.Event()


def _settle(futures: list[tuple[asyncio.Future[int], int]], error: TesseraError | None) -> None:
    """On the waiters' event loop: resolve their futures (one call per group and loop)."""
    for future, seq in futures:
        if future.done():
            continue  # the caller was cancelled; its record is durable all the same
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(seq)


class AuditService:
    def __init__(
        self,
        store: AuditLedgerStore,
        clock: Clock,
        keys: CheckpointKeys,
        sink: DirectoryCheckpointSink | None,
        settings: AuditSettings | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._keys = keys
        self.sink = sink
        self.settings = settings or AuditSettings()
        self._groups: deque[_Group] = deque()
        self._queue_ready = threading.Condition()
        self._committer: threading.Thread | None = None
        self._group_target = 1
        self._commit_lock = threading.Lock()  # one chain transaction at a time per process
        self._last_cp_size: int | None = None
        self._last_cp_time = clock.timestamp()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- writing ---------------------------------------------------------------------

    def record(self, entry: AuditEntry) -> int:
        """Append one record and return its ``seq`` once it is durable (group commit).

        Fails closed: ``StoreUnavailable`` when the ledger cannot be written, and then the
        caller must not act on the decision it wanted to record.
        """
        now = self._clock.now()
        group, index = self._enqueue(prepare_entry(entry, now), None)
        group.done.wait()
        if group.error is not None:
            raise group.error
        return group.seqs[index]

    async def record_async(self, entry: AuditEntry) -> int:
        """``record`` for coroutines: the same group commit, without a thread per caller
        (the committer resolves a whole group with one call into the event loop)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        now = self._clock.now()
        self._enqueue(prepare_entry(entry, now), future)
        return await future

    def _enqueue(
        self, body: PreparedBody, future: asyncio.Future[int] | None
    ) -> tuple[_Group, int]:
        """Join the open group (encoding and validation already happened in the caller,
        outside the lock and off the committer's path)."""
        with self._queue_ready:
            if self._committer is None:
                self._committer = threading.Thread(
                    target=self._commit_loop, name="tessera-audit-commit", daemon=True
                )
                self._committer.start()
            groups = self._groups
            if not groups or len(groups[-1].bodies) >= MAX_GROUP:
                groups.append(_Group())
            group = groups[-1]
            index = len(group.bodies)
            group.bodies.append(body)
            if future is not None:
                group.futures.append((index, future))
            # Wake the committer for the first caller and when the group is complete;
            # a notify per caller would cost a thread switch per record.
            if len(groups) == 1 and (index == 0 or index + 1 == self._group_target):
                self._queue_ready.notify()
            return group, index

    def _commit_loop(self) -> None:
        # INVARIANT: every group is released, with seqs or with an error. While one group
        # commits, the next one fills up: the group grows with the load.
        while True:
            with self._queue_ready:
                while not self._groups:
                    if not self._queue_ready.wait(timeout=5.0) and not self._groups:
                        self._committer = None  # idle: a later record() starts a new one
                        return
                self._gather()
                group = self._groups.popleft()
            with self._commit_lock:
                self._commit(group)

    def _gather(self) -> None:
        """Wait briefly for the group to fill (the classic commit delay): the callers the
        previous commit released usually come back at once, and a group twice as large
        costs one fsync, not two. The target is the previous group's size, so a falling
        load costs at most ``GATHER_MAX`` once. Called holding the condition."""
        target = self._group_target
        group = self._groups[0]
        deadline = time.monotonic() + GATHER_MAX
        while len(group.bodies) < target and len(self._groups) == 1:
            left = deadline - time.monotonic()
            if left <= 0 or not self._queue_ready.wait(timeout=left):
                break
        self._group_target = max(1, min(len(group.bodies), MAX_GROUP))

    def _commit(self, group: _Group) -> None:
        error: TesseraError | None = None
        try:
            result = self._store.chain(group.bodies, outbox_limit=0)
        except TesseraError as exc:
            error = exc
        except Exception as exc:  # an unexpected driver error must still fail closed
            error = StoreUnavailable("the audit ledger cannot be written", detail=repr(exc))
        if error is None:
            group.seqs = result.seqs
        group.error = error
        group.done.set()  # every thread of the group, in one call
        if group.futures:
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], int]]] = {}
            seqs = group.seqs
            for index, future in group.futures:
                by_loop.setdefault(future.get_loop(), []).append(
                    (future, seqs[index] if error is None else 0)
                )
            for loop, futures in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle, futures, error)
                except RuntimeError:  # the loop was closed; nobody is waiting any more
                    log.warning("audit: %d records committed for a closed event loop", len(futures))
        if error is None:
            try:
                self._checkpoint_if_due(result.head)
            except Exception:  # the records are durable; never let this stop the committer
                log.exception("audit checkpoint after a group commit failed")

    def chain_pending(self) -> int:
        """Move every committed outbox entry into the chain now; returns how many."""
        moved = 0
        if self._store.pending() == 0:
            return 0  # a read, so idle pollers never take the write lock
        while True:
            with self._commit_lock:
                result = self._store.chain([], outbox_limit=self.settings.outbox_batch)
            moved += result.chained_outbox
            self._checkpoint_if_due(result.head)
            if not result.more_pending:
                return moved

    # -- checkpoints -----------------------------------------------------------------

    def _checkpoint_if_due(self, head: ChainHead) -> None:
        last = self._last_checkpoint()
        if head.size - last >= self.settings.checkpoint_every:
            try:
                self.checkpoint()
            except TesseraError as exc:  # the records are durable; the next try catches up
                log.warning("audit checkpoint failed: %s (%s)", exc.message, exc.detail)

    def _last_checkpoint(self) -> int:
        if self._last_cp_size is None:
            sizes = [size for size, _ in self._store.checkpoint_jws()]
            self._last_cp_size = max(sizes, default=0)
        return self._last_cp_size

    def checkpoint(self) -> Checkpoint | None:
        """Sign the current head, store it and write it to the sink; None when the ledger
        is empty or the head is already checkpointed here."""
        head = self._store.head()
        self._last_cp_time = self._clock.timestamp()
        if head.size == 0 or head.size <= self._last_checkpoint():
            return None
        cp = sign_checkpoint(
            head, self._keys.active_key(), issuer=self.settings.issuer, now=self._clock.timestamp()
        )
        self._store.add_checkpoint(cp)
        if self.sink is not None:
            self.sink.write(cp)
        self._last_cp_size = head.size
        return cp

    # -- background chainer ----------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tessera-audit-chainer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.poll_interval):
            try:
                self.chain_pending()
                self.index_pending()
                due = self._clock.timestamp() - self._last_cp_time
                if due >= self.settings.checkpoint_interval:
                    self.checkpoint()
            except TesseraError as exc:
                log.warning("audit chainer: %s (%s)", exc.message, exc.detail)
            except Exception:  # keep chaining after an unexpected error; it is logged
                log.exception("audit chainer failed")

    def stop(self) -> None:
        """Stop the chainer, chain what is left and write the shutdown checkpoint."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join(timeout=30)
        try:
            self.chain_pending()
            self.checkpoint()
        except TesseraError as exc:
            log.warning("audit shutdown checkpoint failed: %s (%s)", exc.message, exc.detail)

    def index_pending(self, max_batches: int = LOOKUP_BATCHES_PER_TICK) -> int:
        """Bring the agent/session/user lookup up to the head, a batch per transaction (at
        most ``max_batches``, so group commits are never kept waiting for long); returns
        how many records it covered. Queries are exact whatever the lag: they read the
        ledger itself above the lookup's end."""
        covered = 0
        for i in range(max_batches):
            if i:
                time.sleep(0.001)  # let a waiting group commit take the write lock first
            n = self._store.index_pending()
            covered += n
            if n == 0:
                break
        return covered

    def close(self) -> None:
        """Give back the store's kept connection (``Tessera.close``, before the pool)."""
        self._store.close()

    # -- reading ---------------------------------------------------------------------

    def head(self) -> ChainHead:
        return self._store.head()

    def pending(self) -> int:
        return self._store.pending()

    def query(self, q: AuditQuery) -> list[dict[str, Any]]:
        return self._store.query(q)

    def verify(
        self,
        *,
        checkpoint_dirs: Sequence[Path] | None = None,
        jwks: Mapping[str, Any] | None = None,
        export_lines: Iterable[str] | None = None,
        archive_dirs: Sequence[Path] | None = None,
        jobs: int = 1,
    ) -> VerifyReport:
        """Check the whole chain and every checkpoint (store and sink directories).

        ``checkpoint_dirs`` defaults to the configured sink; ``jwks`` pins the public keys
        (for a verifier that does not trust the database's key table). With
        ``export_lines`` the records come from an export instead of the store, and only
        the directories' checkpoints are checked. With ``archive_dirs`` every archived
        segment found there is verified too, and each link between them and the live
        ledger (see ``segments.py``). With ``jobs`` above 1 the live chain is checked in
        up to that many processes when it is long enough (``PARALLEL_RANGE_MIN`` records
        each); a problem, or ranges that do not join, is checked again in one pass.
        """
        keys = (
            JwksKeys.from_jwks(jwks)
            if jwks is not None
            else key_lookup([r.public_jwk for r in self._keys.list()])
        )
        external: list[tuple[str, str]] = []
        dirs = checkpoint_dirs if checkpoint_dirs is not None else []
        if checkpoint_dirs is None and self.sink is not None:
            dirs = [self.sink.directory]
        for directory in dirs:
            sink = DirectoryCheckpointSink(directory)
            external += [(str(directory / name), text) for name, text in sink.read_all()]
        now = self._clock.timestamp()
        if export_lines is not None:
            return verify_ledger(rows_from_export(export_lines), external, keys, now=now)
        stored = [(f"store:{size}", jws) for size, jws in self._store.checkpoint_jws()]
        segments = self._store.segments()
        links = [(s.first_seq - 1, s.prev_hash, f"segment {s.number}") for s in segments]
        first = self._store.first_seq()
        start = ChainHead(0, GENESIS_HASH)
        problems: list[Problem] = []
        if first is not None and first > 1:
            seg = next((s for s in segments if s.first_seq == first), None)
            if seg is None:
                problems.append(
                    Problem(
                        "records_missing",
                        f"the ledger starts at record {first} but no segment starts there: "
                        f"records 1..{first - 1} were removed",
                        1,
                    )
                )
            else:
                start = ChainHead(first - 1, seg.prev_hash)
        if problems:
            report = VerifyReport(problems=problems)
        else:
            report = verify_ledger(
                self._store.scan(start.size, SCAN_BATCH),
                stored + external,
                keys,
                now=now,
                start=start,
                links=links,
                run=self._parallel_run(jobs),
            )
        report.pending = self._store.pending()
        report.segments = 1 + len(segments)
        if archive_dirs is not None:
            t0 = time.perf_counter()
            self._verify_archives(report, archive_dirs, segments, stored + external, keys, now)
            report.seconds += time.perf_counter() - t0
        report.problems.sort(key=lambda p: (p.seq is None, p.seq or 0))
        return report

    def _parallel_run(self, jobs: int) -> ChainRun | None:
        """The chain up to the head as it is now, checked range by range in ``jobs``
        processes; None (one pass) when it is too short or the store cannot."""
        if jobs <= 1:
            return None
        upto = self._store.head().size

        def run(origin: ChainHead, wanted: frozenset[int]) -> tuple[ChainChecker, int] | None:
            parts = min(jobs, (upto - origin.size) // PARALLEL_RANGE_MIN)
            if parts < 2:
                return None
            ranges = [
                (after, end, origin.hash if after == origin.size else None)
                for after, end in split_ranges(origin.size, upto, parts)
            ]
            try:
                results = self._store.check_ranges(ranges, wanted)
            except Exception:  # a worker died, or could not connect: one pass decides
                log.warning("audit verify: parallel check failed; one pass", exc_info=True)
                return None
            if results is None:
                return None
            joined = join_ranges(origin, wanted, results)
            if joined is None:
                log.info("audit verify: ranges did not join cleanly; checking in one pass")
                return None
            return joined, len(ranges)

        return run

    def _verify_archives(
        self,
        report: VerifyReport,
        directories: Sequence[Path],
        segments: Sequence[Segment],
        checkpoints: list[tuple[str, str]],
        keys: KeyLookup,
        now: float,
    ) -> None:
        """Verify every archived segment in ``directories`` from the first record on, each
        starting where the previous one ended, and each archive's head against the
        ``prev_hash`` of the segment after it; add what is wrong to ``report``."""
        archives, problems = find_archives(directories)
        report.problems += problems
        by_first = {s.first_seq: s for s in segments}
        prev = ChainHead(0, GENESIS_HASH)
        for archive in archives:
            m = archive.manifest
            name = str(archive.records_path)
            if m.first_seq != prev.size + 1:
                report.problems.append(
                    Problem(
                        "archive_missing",
                        f"no archive holds records {prev.size + 1}..{m.first_seq - 1}",
                        prev.size + 1,
                    )
                )
                prev = ChainHead(m.first_seq - 1, m.prev_hash)
            after = by_first.get(m.last_seq + 1)
            try:
                digest = file_sha256(archive.records_path)
            except OSError as exc:
                report.problems.append(
                    Problem("archive_missing", f"{name}: {exc.strerror}", m.first_seq)
                )
                prev = ChainHead(m.last_seq, m.head_hash)
                continue
            if digest != m.sha256 or (after is not None and digest != after.archive_sha256):
                report.problems.append(
                    Problem(
                        "archive_altered",
                        f"{name}: the file's SHA-256 is not the one recorded when it was archived",
                    )
                )
            found = [*checkpoints, (f"{name} manifest", m.checkpoint)]
            sink = DirectoryCheckpointSink(archive.checkpoint_dir)
            found += [(str(archive.checkpoint_dir / n), text) for n, text in sink.read_all()]
            links = (
                [] if after is None else [(m.last_seq, after.prev_hash, f"segment {after.number}")]
            )
            part = verify_ledger(
                rows_from_export(archive.lines()),
                found,
                keys,
                now=now,
                start=prev,
                end=m.last_seq,
                links=links,
            )
            for p in part.problems:
                report.problems.append(Problem(p.kind, f"{name}: {p.message}", p.seq))
            if part.records != m.last_seq and not part.problems:
                report.problems.append(
                    Problem(
                        "truncated",
                        f"{name} ends at record {part.records}, its manifest says {m.last_seq}",
                        part.records + 1,
                    )
                )
            if after is None:
                report.problems.append(
                    Problem(
                        "segment_link_broken",
                        f"{name}: no segment of the ledger starts after record {m.last_seq}",
                        m.last_seq + 1,
                    )
                )
            report.archived_records += part.records - prev.size
            report.checkpoints_checked += part.checkpoints_checked
            report.largest_checkpoint = max(report.largest_checkpoint, part.largest_checkpoint)
            prev = ChainHead(part.records, part.head_hash)
        if report.first_seq > prev.size + 1:
            report.problems.append(
                Problem(
                    "archive_missing",
                    f"no archive holds records {prev.size + 1}..{report.first_seq - 1}",
                    prev.size + 1,
                )
            )

    # -- segments --------------------------------------------------------------------

    def archive(self, output: Path, *, actor: str = "cli") -> Manifest:
        """Archive the current segment and start the next one, linked to its head.

        Checkpoints the head, exports the segment's records up to the newest checkpoint
        to ``output`` with every checkpoint in its range, verifies what was written, then
        records the new segment (first seq, archived head, archive SHA-256) together
        with an ``audit.segment_started`` record, in one transaction. Nothing is removed
        from the live ledger (``purge`` does that, separately)."""
        self.chain_pending()
        self.checkpoint()
        stored = self._store.checkpoint_jws()
        segments = self._store.segments()
        current = segments[-1] if segments else GENESIS_SEGMENT
        last = max((size for size, _ in stored), default=0)
        if last < current.first_seq:
            raise InvalidInput("nothing to archive: the current segment has no records")
        keys = key_lookup([r.public_jwk for r in self._keys.list()])
        now = self._clock.timestamp()
        output.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = output / records_name(current.number)
        if path.exists() or (output / manifest_name(current.number)).exists():
            raise Conflict(
                f"{path} exists already: segment {current.number} is still the current "
                "one, so these are the leftovers of an interrupted archive; move them away "
                "and run it again",
                code="audit_archive_exists",
            )
        head: list[str] = [current.prev_hash]

        def lines() -> Iterator[str]:
            for batch in self._store.scan(current.first_seq - 1, SCAN_BATCH, last):
                for _seq, body, digest in batch:
                    record = json.loads(body)
                    record["hash"] = digest
                    head[0] = digest
                    yield export_line(record)

        sha, count = write_records(path, lines())
        sink = DirectoryCheckpointSink(output / "checkpoints")
        cp_at_last = ""
        for size, jws in stored:
            if current.first_seq - 1 <= size <= last:
                sink.write(verify_checkpoint(jws, keys, now=now))
                if size == last:
                    cp_at_last = jws
        manifest = Manifest(
            segment=current.number,
            first_seq=current.first_seq,
            last_seq=last,
            prev_hash=current.prev_hash,
            head_hash=head[0],
            records_file=path.name,
            sha256=sha,
            archived_at=iso(self._clock.now()),
            checkpoint=cp_at_last,
        )
        check = verify_ledger(
            rows_from_export(ArchivedSegment(output, manifest).lines()),
            [("manifest", cp_at_last)],
            keys,
            now=now,
            start=ChainHead(current.first_seq - 1, current.prev_hash),
            end=last,
        )
        if not check.ok or check.records != last or count != last - current.first_seq + 1:
            raise StoreUnavailable(
                "the archive does not verify; no segment was started",
                code="audit_archive_invalid",
                detail=f"{path}: {[p.message for p in check.problems][:3]}",
            )
        write_manifest(output, manifest)
        segment = Segment(
            number=current.number + 1,
            first_seq=last + 1,
            prev_hash=head[0],
            archive_name=path.name,
            archive_sha256=sha,
            archived_records=count,
            created_at=self._clock.now(),
        )
        marker = AuditEntry(
            event_type=ARCHIVED_EVENT,
            actor=ActorLayers(principal=actor),
            action="audit.archive",
            resource=f"segment:{segment.number}",
            outcome="success",
            details={
                "segment": segment.number,
                "first_seq": segment.first_seq,
                "prev_hash": segment.prev_hash,
                "archived_segment": current.number,
                "archived_first_seq": current.first_seq,
                "archive": path.name,
                "archive_sha256": sha,
                "records": count,
            },
        )
        try:
            result = self._store.start_segment(segment, marker.body(self._clock.now()))
        except BaseException:
            # No segment was started: the files written above describe nothing.
            (output / manifest_name(current.number)).unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            raise
        self._checkpoint_if_due(result.head)
        return manifest

    def purge(self, archive_dirs: Sequence[Path], *, actor: str = "cli") -> int:
        """Remove the archived segments' records from the live ledger (owner only).

        Refused unless the archives in ``archive_dirs`` and the live ledger verify
        together without a problem and cover every record below the newest segment;
        the removal is recorded in the chain (``audit.segment_purged``) in the same
        transaction. Returns how many records were removed."""
        segments = self._store.segments()
        if not segments:
            raise InvalidInput("nothing to purge: the ledger has one segment")
        boundary = segments[-1].first_seq
        first = self._store.first_seq() or boundary
        if first >= boundary:
            return 0
        report = self.verify(archive_dirs=archive_dirs)
        if not report.ok:
            raise Conflict(
                "the archives and the ledger do not verify together; nothing was removed",
                code="audit_purge_refused",
                detail="; ".join(p.message for p in report.problems[:3]),
            )
        if report.archived_records < boundary - 1:
            raise Conflict(
                f"the archives hold records 1..{report.archived_records}; "
                f"purging needs 1..{boundary - 1}",
                code="audit_purge_refused",
            )
        marker = AuditEntry(
            event_type=PURGED_EVENT,
            actor=ActorLayers(principal=actor),
            action="audit.purge",
            resource=f"segment:{segments[-1].number}",
            outcome="success",
            details={"removed_before_seq": boundary, "removed_from_seq": first},
        )
        removed, result = self._store.purge(boundary, marker.body(self._clock.now()))
        self._checkpoint_if_due(result.head)
        return removed
