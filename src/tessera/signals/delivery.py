"""Push delivery of SETs (RFC 8935), driven by the node's event tailer.

The worker thread wakes when the tailer hands over a batch (or every ``idle`` seconds for
retries), maps new events to deliveries (``SsfTransmitter.pump``), then sends the due push
deliveries: each is *claimed* with a lease in the store first, so nodes never send the same
delivery at the same time, and a node that dies mid-send leaves a lease that expires and
the SET is sent again (at-least-once; receivers de-duplicate by ``jti``).

Outcomes (RFC 8935 §2.2-2.4): ``202`` → delivered; ``400`` with an error code → the
receiver refused this SET for good (``failed``, the code is kept); anything else (a
transport failure, 5xx, 429, 401/403) → retried with exponential backoff (1 s, 2 s, 4 s …
capped at 5 minutes, plus up to 25 % jitter) until ``max_attempts``, then ``failed``.
Requests go through ``tessera.outbound`` (configured hosts, no redirects, timeouts).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from tessera.clock import Clock
from tessera.crypto.keys import KeySealError
from tessera.outbound import OutboundRefused, post
from tessera.signals.events import Event
from tessera.signals.model import DeliveryRow
from tessera.signals.streams import SsfTransmitter

log = logging.getLogger("tessera.signals")

SET_MEDIA_TYPE = "application/secevent+jwt"


@dataclass(frozen=True)
class DeliverySettings:
    max_attempts: int = 10
    base_backoff: float = 1.0
    max_backoff: float = 300.0
    lease: float = 30.0
    batch: int = 100
    idle: float = 1.0
    concurrency: int = 8  # SETs in flight at once (RFC 8935 receivers accept any order)
    retention: float = 7 * 86400.0  # finished deliveries are kept this long (seconds)
    purge_every: float = 3600.0


def backoff(attempts: int, settings: DeliverySettings) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones (with jitter)."""
    base = min(settings.max_backoff, settings.base_backoff * 2 ** max(0, attempts - 1))
    return float(base) * (1 + secrets.randbelow(250) / 1000)


class PushWorker:
    def __init__(
        self,
        transmitter: SsfTransmitter,
        store: Any,
        clock: Clock,
        settings: DeliverySettings | None = None,
    ) -> None:
        self._tx = transmitter
        self._store = store
        self._clock = clock
        self.settings = settings or DeliverySettings()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._http: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._purged_at = float("-inf")
        self.sent = 0

    def on_events(self, _tx: Any, _events: Sequence[Event]) -> None:
        """Event tailer subscriber: new events may mean new SETs."""
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # -- one round ------------------------------------------------------------------------------

    def run_once(self) -> int:
        """Map new events, then send what is due; the number of SETs delivered."""
        self._tx.pump()
        self._purge()
        delivered = 0
        while True:
            now = self._clock.now()
            with self._store.read() as tx:
                due = tx.signals.due_pushes(now, self.settings.batch)
            if not due:
                return delivered
            lease = now + timedelta(seconds=self.settings.lease)
            with self._store.write() as tx:  # claim the batch in one transaction
                mine = [d for d in due if tx.signals.claim(d.id, now, lease)]
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.settings.concurrency, "tessera-ssf-send")
            results = list(self._pool.map(self._post, mine))
            with self._store.write() as tx:  # and record every outcome in one
                delivered += sum(
                    self._record(tx, item, *r) for item, r in zip(mine, results, strict=True)
                )
            if len(due) < self.settings.batch:
                return delivered

    def _purge(self) -> None:
        now = self._clock.timestamp()
        if now - self._purged_at < self.settings.purge_every:
            return
        self._purged_at = now
        before = self._clock.now() - timedelta(seconds=self.settings.retention)
        with self._store.write() as tx:
            tx.signals.purge_done(before)

    def _post(self, item: DeliveryRow) -> tuple[int, bytes, str]:
        if self._http is None:
            with self._lock:
                if self._http is None:
                    self._http = httpx.Client(
                        timeout=self._tx.settings.push_timeout, follow_redirects=False
                    )
        headers = {"Content-Type": SET_MEDIA_TYPE, "Accept": "application/json"}
        try:
            auth = self._tx.authorization(item)
            if auth is not None:
                headers["Authorization"] = auth
            status, body = post(
                str(item.endpoint_url),
                item.set_jwt.encode(),
                headers,
                self._tx.settings.push_policy,
                client=self._http,
            )
        except KeySealError:
            return 0, b"", "the stream's authorization header cannot be opened"
        except OutboundRefused as exc:
            return 0, b"", f"transport: {exc.detail or exc.message}"
        return status, body, f"http {status}"

    def _record(self, tx: Any, item: DeliveryRow, status: int, body: bytes, error: str) -> int:
        now = self._clock.now()
        attempts = item.attempts + 1
        if status == 202:
            tx.signals.finish(item.id, "delivered", now, None)
            self.sent += 1
            return 1
        if status == 400:
            code = _err_code(body)
            tx.signals.finish(item.id, "failed", now, f"refused: {code}")
            log.warning("SET %s refused by the receiver: %s", item.jti, code)
            return 0
        if attempts >= self.settings.max_attempts:
            tx.signals.finish(item.id, "failed", now, f"gave up: {error}"[:300])
            return 0
        when = now + timedelta(seconds=backoff(attempts, self.settings))
        tx.signals.retry_at(item.id, when, error)
        return 0

    # -- background ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopped.clear()
        self._thread = threading.Thread(target=self._loop, name="tessera-ssf-push", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._http is not None:
            self._http.close()
            self._http = None

    def _loop(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self.settings.idle)
            self._wake.clear()
            try:
                self.run_once()
            except Exception as exc:  # keep delivering; the rows stay pending
                log.warning("SET delivery round failed: %s", type(exc).__name__)


def _err_code(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return "unparsable error"
    err = doc.get("err") if isinstance(doc, dict) else None
    return str(err)[:64] if isinstance(err, str) else "no error code"
