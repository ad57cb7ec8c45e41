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
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tessera.audit.chain import ChainHead
from tessera.audit.checkpoint import (
    Checkpoint,
    DirectoryCheckpointSink,
    key_lookup,
    sign_checkpoint,
)
from tessera.audit.export import rows_from_export
from tessera.audit.ports import AuditLedgerStore, AuditQuery
from tessera.audit.record import AuditEntry
from tessera.audit.verify import VerifyReport, verify_ledger
from tessera.clock import Clock
from tessera.crypto.jws import JwksKeys
from tessera.crypto.keyring import KeyRecord
from tessera.crypto.keys import SigningKey
from tessera.errors import StoreUnavailable, TesseraError

log = logging.getLogger("tessera.audit")
MAX_GROUP = 4096
GATHER_MAX = 0.002  # seconds the committer waits for a group to fill
SCAN_BATCH = 5000


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


class _Waiter:
    """A caller waiting for its record: a thread (``done``) or a coroutine (``future``)."""

    __slots__ = ("body", "done", "error", "future", "seq")

    def __init__(self, body: dict[str, Any], future: asyncio.Future[int] | None = None) -> None:
        self.body = body
        self.seq = 0
        self.error: TesseraError | None = None
        self.future = future
        self.done = threading.Event() if future is None else None


def _settle(waiters: list[_Waiter]) -> None:
    """On the waiters' event loop: resolve their futures (one call per group and loop)."""
    for w in waiters:
        if w.future is None or w.future.done():
            continue  # the caller was cancelled; its record is durable all the same
        if w.error is not None:
            w.future.set_exception(w.error)
        else:
            w.future.set_result(w.seq)


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
        self._queue: list[_Waiter] = []
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
        waiter = _Waiter(entry.body(self._clock.now()))
        self._enqueue(waiter)
        waiter.done.wait()  # type: ignore[union-attr]
        if waiter.error is not None:
            raise waiter.error
        return waiter.seq

    async def record_async(self, entry: AuditEntry) -> int:
        """``record`` for coroutines: the same group commit, without a thread per caller
        (the committer resolves a whole group with one call into the event loop)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._enqueue(_Waiter(entry.body(self._clock.now()), future))
        return await future

    def _enqueue(self, waiter: _Waiter) -> None:
        with self._queue_ready:
            if self._committer is None:
                self._committer = threading.Thread(
                    target=self._commit_loop, name="tessera-audit-commit", daemon=True
                )
                self._committer.start()
            self._queue.append(waiter)
            queued = len(self._queue)
            # Wake the committer for the first caller and when the group is complete;
            # a notify per caller would cost a thread switch per record.
            if queued == 1 or queued == self._group_target:
                self._queue_ready.notify()

    def _commit_loop(self) -> None:
        # INVARIANT: every queued waiter is released, with a seq or with an error. While
        # one group commits, the next one queues up: the group grows with the load.
        while True:
            with self._queue_ready:
                while not self._queue:
                    if not self._queue_ready.wait(timeout=5.0) and not self._queue:
                        self._committer = None  # idle: a later record() starts a new one
                        return
                self._gather()
                batch, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
            with self._commit_lock:
                self._commit(batch)

    def _gather(self) -> None:
        """Wait briefly for the group to fill (the classic commit delay): the callers the
        previous commit released usually come back at once, and a group twice as large
        costs one fsync, not two. The target is the previous group's size, so a falling
        load costs at most ``GATHER_MAX`` once. Called holding the condition."""
        target = self._group_target
        deadline = time.monotonic() + GATHER_MAX
        while len(self._queue) < target:
            left = deadline - time.monotonic()
            if left <= 0 or not self._queue_ready.wait(timeout=left):
                break
        self._group_target = max(1, min(len(self._queue), MAX_GROUP))

    def _commit(self, batch: list[_Waiter]) -> None:
        error: TesseraError | None = None
        try:
            result = self._store.chain([w.body for w in batch], outbox_limit=0)
        except TesseraError as exc:
            error = exc
        except Exception as exc:  # an unexpected driver error must still fail closed
            error = StoreUnavailable("the audit ledger cannot be written", detail=repr(exc))
        by_loop: dict[asyncio.AbstractEventLoop, list[_Waiter]] = {}
        for i, waiter in enumerate(batch):
            if error is None:
                waiter.seq = result.seqs[i]
            waiter.error = error
            if waiter.done is not None:
                waiter.done.set()
            elif waiter.future is not None:
                by_loop.setdefault(waiter.future.get_loop(), []).append(waiter)
        for loop, waiters in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, waiters)
            except RuntimeError:  # the loop was closed; nobody is waiting any more
                log.warning("audit: %d records committed for a closed event loop", len(waiters))
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
    ) -> VerifyReport:
        """Check the whole chain and every checkpoint (store and sink directories).

        ``checkpoint_dirs`` defaults to the configured sink; ``jwks`` pins the public keys
        (for a verifier that does not trust the database's key table). With
        ``export_lines`` the records come from an export instead of the store, and only
        the directories' checkpoints are checked.
        """
        keys = (
            JwksKeys.from_jwks(jwks)
            if jwks is not None
            else key_lookup([r.public_jwk for r in self._keys.list()])
        )
        found: list[tuple[str, str]] = []
        if export_lines is None:
            found = [(f"store:{size}", jws) for size, jws in self._store.checkpoint_jws()]
        dirs = checkpoint_dirs if checkpoint_dirs is not None else []
        if checkpoint_dirs is None and self.sink is not None:
            dirs = [self.sink.directory]
        for directory in dirs:
            sink = DirectoryCheckpointSink(directory)
            found += [(str(directory / name), text) for name, text in sink.read_all()]
        rows = (
            rows_from_export(export_lines)
            if export_lines is not None
            else self._store.scan(0, SCAN_BATCH)
        )
        report = verify_ledger(rows, found, keys, now=self._clock.timestamp())
        if export_lines is None:
            report.pending = self._store.pending()
        return report
