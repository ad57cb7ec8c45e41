"""The webhook checkpoint sink: each signed checkpoint POSTed to an external receiver.

Appends never wait for the network. Writing a checkpoint only leaves a durable *marker*
(a copy of the JWS, ``checkpoint-<tree size>.jws`` in the pending directory, created
exclusively and fsync'd); a background thread POSTs every marker, oldest first, and removes
it once the receiver answered 2xx. A marker outlives failures and restarts: a checkpoint
is delivered late, never lost, and never given up on.

Each round tries a checkpoint ``attempts`` times (pauses ``retry_delay``, doubling); after a
failed round the sink waits ``base_backoff`` seconds, doubling per failed round up to
``max_backoff`` (plus up to 25 % jitter), then tries again. Requests go through
``tessera.outbound`` (the configured host only, no redirects, timeouts, bounded answers).

Wire format: ``POST <url>`` with ``Content-Type: application/tessera-audit-checkpoint+jwt``
(RFC 7515 §4.1.9: the media type of the JWS ``typ``), the compact JWS as body, and
``Tessera-Checkpoint-Tree-Size``. With a secret, either ``Authorization: Bearer <secret>``
or ``Tessera-Signature: t=<unix time>,v1=<hex HMAC-SHA-256(secret, "<t>." + body)>``.
The secret is never logged, never in ``status()`` and never in an audit record.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from tessera.audit.checkpoint import (
    CHECKPOINT_TYP,
    MAX_CHECKPOINT_BYTES,
    Checkpoint,
    DirectoryCheckpointSink,
    fsync_dir,
    write_checkpoint_file,
)
from tessera.audit.record import ActorLayers, AuditEntry
from tessera.clock import Clock, SystemClock
from tessera.errors import Unavailable
from tessera.outbound import OutboundPolicy, OutboundRefused, post

log = logging.getLogger("tessera.audit")

CHECKPOINT_MEDIA_TYPE = "application/" + CHECKPOINT_TYP
TREE_SIZE_HEADER = "Tessera-Checkpoint-Tree-Size"
SIGNATURE_HEADER = "Tessera-Signature"
_MARKER = re.compile(r"^checkpoint-(\d{1,19})\.jws$")

AuthMode = Literal["bearer", "hmac"]
# (event, details) on a change of delivery health: "failing" after the first failed round
# following a success (or start), "recovered" on the first delivery after that.
HealthListener = Callable[[str, Mapping[str, Any]], None]


@dataclass(frozen=True)
class WebhookSecret:
    """A shared secret for the receiver; ``repr`` and ``str`` never show it."""

    mode: AuthMode
    value: str = field(repr=False)

    def __str__(self) -> str:
        return f"<{self.mode} secret>"

    def headers(self, body: bytes, now: int) -> dict[str, str]:
        if self.mode == "bearer":
            return {"Authorization": f"Bearer {self.value}"}
        mac = hmac.new(self.value.encode(), f"{now}.".encode() + body, hashlib.sha256)
        return {SIGNATURE_HEADER: f"t={now},v1={mac.hexdigest()}"}


def hmac_signature_valid(
    secret: str, body: bytes, header: str, *, now: float, tolerance: float = 300.0
) -> bool:
    """Check a ``Tessera-Signature`` header, as a receiver should (constant time, and a
    timestamp within ``tolerance`` seconds)."""
    parts: dict[str, str] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts[name] = value
    t, given = parts.get("t", ""), parts.get("v1", "")
    if not t.isdigit() or abs(now - int(t)) > tolerance:
        return False
    want = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, given)


@dataclass(frozen=True)
class WebhookSettings:
    attempts: int = 3  # POSTs per checkpoint in one round (bounded)
    retry_delay: float = 0.5  # seconds between them, doubling
    base_backoff: float = 5.0  # seconds after a failed round, doubling per failed round
    max_backoff: float = 300.0
    idle: float = 30.0  # the pending directory is rescanned at least this often
    shutdown_budget: float = 10.0  # seconds the last delivery may take at shutdown


def safe_url(url: str) -> str:
    """``scheme://host[:port]``: what may be logged of a webhook URL (its path or query
    may carry a secret, as many webhook services do)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


class WebhookCheckpointSink:
    """Delivers checkpoints to one receiver; markers live in ``pending_dir``."""

    def __init__(
        self,
        url: str,
        pending_dir: Path,
        policy: OutboundPolicy,
        *,
        secret: WebhookSecret | None = None,
        settings: WebhookSettings | None = None,
        clock: Clock | None = None,
        on_health: HealthListener | None = None,
    ) -> None:
        self._url = url
        self.safe_url = safe_url(url)
        self.pending_dir = pending_dir
        self._policy = policy
        self._secret = secret
        self.settings = settings or WebhookSettings()
        self._clock = clock or SystemClock()
        self.on_health = on_health
        self._round_lock = threading.Lock()  # one delivery round at a time
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._http: httpx.Client | None = None
        self._next_round = 0.0  # monotonic time before which the worker does not retry
        self.failed_rounds = 0
        self.delivered = 0
        self.last_error: str | None = None
        self.last_attempt_at: float | None = None
        self.last_delivered_at: float | None = None
        self.last_delivered_size: int | None = None
        self._failing = False

    # -- the marker ------------------------------------------------------------------

    def enqueue(self, checkpoint: Checkpoint) -> Path:
        """Leave the durable "not yet delivered" marker and wake the worker; no network.
        ``Unavailable`` when the marker cannot be written (the checkpoint is retried)."""
        try:
            # an existing marker: already waiting for delivery
            path = write_checkpoint_file(self.pending_dir, checkpoint)
        except OSError as exc:
            raise Unavailable(
                "the audit checkpoint webhook marker cannot be written",
                code="audit_sink_unavailable",
                detail=f"{self.pending_dir}: {exc.strerror}",
            ) from exc
        self._wake.set()
        return path

    def pending(self) -> list[tuple[int, Path]]:
        """``(tree size, marker)`` of every undelivered checkpoint, oldest first."""
        try:
            names = os.listdir(self.pending_dir)
        except FileNotFoundError:
            return []
        found = [(int(m.group(1)), self.pending_dir / n) for n in names if (m := _MARKER.match(n))]
        return sorted(found)

    # -- delivery --------------------------------------------------------------------

    def deliver_pending(self, *, deadline: float | None = None) -> int:
        """One round: POST every marker, oldest first, until one fails; returns how many
        were delivered. ``deadline`` (monotonic) bounds the round, e.g. at shutdown."""
        with self._round_lock:
            delivered = 0
            for size, path in self.pending():
                try:
                    jws = path.read_text().strip()
                except FileNotFoundError:
                    continue  # delivered by a concurrent round (CLI and server)
                except OSError as exc:
                    self._failed(size, f"marker unreadable: {exc.strerror}")
                    return delivered
                error = self._send(size, jws, deadline)
                if error is not None:
                    self._failed(size, error)
                    return delivered
                try:
                    path.unlink()
                    fsync_dir(self.pending_dir)
                except FileNotFoundError:
                    pass
                except OSError as exc:  # delivered again later; receivers are idempotent
                    log.warning("audit checkpoint webhook: marker %s stays: %s", path, exc)
                delivered += 1
                self._succeeded(size)
            return delivered

    def _send(self, size: int, jws: str, deadline: float | None) -> str | None:
        """Up to ``attempts`` POSTs with a pause between them; None once one got a 2xx."""
        if len(jws) > MAX_CHECKPOINT_BYTES:
            return "marker is not a checkpoint (too large)"
        body = jws.encode()
        pause = self.settings.retry_delay
        error = "not attempted"
        for attempt in range(self.settings.attempts):
            if attempt:
                if deadline is None:
                    if self._stopped.wait(pause):
                        break  # stopping: stop() makes a last, bounded round itself
                elif time.monotonic() + pause > deadline:
                    break
                else:
                    time.sleep(pause)
                pause *= 2
            error = self._post_once(size, body)
            if not error:
                return None
            if deadline is not None and time.monotonic() > deadline:
                break
        return error

    def _post_once(self, size: int, body: bytes) -> str:
        """One POST; "" on a 2xx, else what went wrong (never the URL's path or secret)."""
        headers = {
            "Content-Type": CHECKPOINT_MEDIA_TYPE,
            "Accept": "*/*",
            TREE_SIZE_HEADER: str(size),
        }
        if self._secret is not None:
            headers.update(self._secret.headers(body, int(self._clock.timestamp())))
        if self._http is None:
            self._http = httpx.Client(timeout=self._policy.timeout, follow_redirects=False)
        self.last_attempt_at = self._clock.timestamp()
        try:
            status, _ = post(self._url, body, headers, self._policy, client=self._http)
        except OutboundRefused as exc:
            cause = exc.__cause__
            if isinstance(cause, httpx.HTTPError):
                return f"transport: {type(cause).__name__}"
            return f"refused: {(exc.detail or exc.message).replace(self._url, self.safe_url)}"
        return "" if 200 <= status < 300 else f"http {status}"

    def _failed(self, size: int, error: str) -> None:
        self.failed_rounds += 1
        self.last_error = error
        wait = min(
            self.settings.max_backoff, self.settings.base_backoff * 2 ** (self.failed_rounds - 1)
        )
        wait *= 1 + secrets.randbelow(250) / 1000
        self._next_round = time.monotonic() + wait
        pending = len(self.pending())
        log.warning(
            "audit checkpoint webhook %s: checkpoint %d not delivered (%s); "
            "%d pending, next try in %.0f s",
            self.safe_url,
            size,
            error,
            pending,
            wait,
        )
        if not self._failing:
            self._failing = True
            self._notify("failing", {"tree_size": size, "error": error, "pending": pending})

    def _succeeded(self, size: int) -> None:
        self.delivered += 1
        self.failed_rounds = 0
        self._next_round = 0.0
        self.last_delivered_at = self._clock.timestamp()
        self.last_delivered_size = size
        if self._failing:
            self._failing = False
            self.last_error = None
            log.info("audit checkpoint webhook %s: delivering again", self.safe_url)
            self._notify("recovered", {"tree_size": size})

    def _notify(self, event: str, details: Mapping[str, Any]) -> None:
        if self.on_health is None:
            return
        try:
            self.on_health(event, {"webhook": self.safe_url, **details})
        except Exception as exc:  # visibility must never break delivery
            log.warning("audit checkpoint webhook: health listener failed: %r", exc)

    def status(self) -> dict[str, Any]:
        """What an operator needs to see; never the secret, the URL's path or its query."""
        pending = self.pending()
        return {
            "webhook": self.safe_url,
            "healthy": not pending or not self._failing,
            "pending": len(pending),
            "oldest_pending_tree_size": pending[0][0] if pending else None,
            "failed_rounds": self.failed_rounds,
            "last_error": self.last_error,
            "last_attempt_at": self.last_attempt_at,
            "last_delivered_at": self.last_delivered_at,
            "last_delivered_tree_size": self.last_delivered_size,
            "delivered": self.delivered,
            "next_attempt_in": max(0.0, round(self._next_round - time.monotonic(), 1))
            if pending
            else None,
        }

    # -- background ------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker; markers left from before a restart are delivered first."""
        if self._thread is not None:
            return
        self._stopped.clear()
        self._wake.set()
        self._thread = threading.Thread(
            target=self._loop, name="tessera-audit-webhook", daemon=True
        )
        self._thread.start()

    def _loop(self) -> None:
        while True:
            backoff = self._next_round - time.monotonic()
            if backoff > 0:  # new markers wait for the end of the backoff with the rest
                if self._stopped.wait(backoff):
                    return
            else:
                self._wake.wait(self.settings.idle)
                if self._stopped.is_set():
                    return
            self._wake.clear()
            try:
                self.deliver_pending()
            except Exception as exc:  # keep running; the markers stay
                log.warning("audit checkpoint webhook round failed: %r", exc)

    def stop(self) -> None:
        """Stop the worker, then one last bounded round (the shutdown checkpoint)."""
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.shutdown_budget + 5)
            self._thread = None
        self.flush(self.settings.shutdown_budget)
        if self._http is not None:
            self._http.close()
            self._http = None

    def flush(self, budget: float) -> int:
        """Deliver what is pending now, within ``budget`` seconds (CLI, shutdown)."""
        try:
            return self.deliver_pending(deadline=time.monotonic() + budget)
        except Exception as exc:  # the markers stay for the next server
            log.warning("audit checkpoint webhook: last round failed: %r", exc)
            return 0


class DirectoryAndWebhookSink(DirectoryCheckpointSink):
    """The directory sink, plus a webhook: each checkpoint is written to the directory
    (as before; failures there raise), then marked for the webhook, which delivers it in
    the background. ``AuditService`` uses it exactly like the directory sink."""

    def __init__(self, directory: Path, webhook: WebhookCheckpointSink) -> None:
        super().__init__(directory)
        self.webhook = webhook

    def write(self, checkpoint: Checkpoint) -> Path:
        path = super().write(checkpoint)
        self.webhook.enqueue(checkpoint)
        return path


def webhook_of(sink: DirectoryCheckpointSink | None) -> WebhookCheckpointSink | None:
    """The webhook behind an ``AuditService.sink``, if one is configured."""
    return sink.webhook if isinstance(sink, DirectoryAndWebhookSink) else None


def webhook_health_recorder(record: Callable[[AuditEntry], int]) -> HealthListener:
    """A listener that records each change of delivery health in the ledger itself
    (``audit.checkpoint_webhook_failing`` / ``_recovered``): evidence that a stretch of
    checkpoints reached the receiver late. Only changes are recorded, not every retry."""

    def listener(event: str, details: Mapping[str, Any]) -> None:
        record(
            AuditEntry(
                event_type=f"audit.checkpoint_webhook_{event}",
                actor=ActorLayers(principal="system"),
                action="audit.checkpoint.deliver",
                resource=str(details.get("webhook", "")),
                outcome="failure" if event == "failing" else "success",
                reasons=(str(details["error"])[:200],) if "error" in details else (),
                details={k: v for k, v in details.items() if k != "webhook"},
            )
        )

    return listener
