"""An in-memory view of identity records for the token hot path, kept fresh by the event log.

The cache subscribes to the node's ``EventTailer`` (``tessera.signals.tailer``): a batch of
events that changes an identity record clears it, a ``key.*`` event also drops the key
ring's cache. Each request first makes sure the tailer is fresh; an entry read from the
store is kept only if no clear happened since the request started (its *epoch*), so a
request that read old data can never put it back after a newer change (DESIGN 5: reads are
served from memory, kept fresh by the event log). When the tailer is stale the request
bypasses the cache and reads its own transaction (the store is the truth).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tessera.identity.model import Agent, Credential, ModelArtifact, Operator, Service, User
from tessera.signals.events import Event
from tessera.signals.tailer import EventTailer, StaleState

T = TypeVar("T")
IDENTITY_EVENT_PREFIXES = ("operator.", "agent.", "user.", "model.", "credential.", "service.")
MAX_ENTRIES = 100_000


class IdentityCache:
    def __init__(
        self, tailer: EventTailer, on_key_change: Callable[[], None] | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._epoch = 0  # moves on every clear
        self._data: dict[tuple[str, str], Any] = {}
        self._on_key_change = on_key_change
        self.tailer = tailer
        tailer.subscribe("identity-cache", self.on_events)

    def on_events(self, _tx: Any, events: Sequence[Event]) -> None:
        """Tailer subscriber: clear on identity changes, refresh keys on key rotation."""
        if any(e.type.startswith(IDENTITY_EVENT_PREFIXES) for e in events):
            with self._lock:
                self._data.clear()
                self._epoch += 1
        if self._on_key_change is not None and any(e.type.startswith("key.") for e in events):
            self._on_key_change()

    def epoch(self) -> int | None:
        """The epoch a request may cache under, or None (bypass) when the tailer is stale."""
        try:
            self.tailer.ensure_fresh()
        except StaleState:
            return None
        with self._lock:
            return self._epoch

    def get(self, kind: str, key: str, epoch: int | None, load: Callable[[], T | None]) -> T | None:
        if epoch is None:
            return load()
        with self._lock:
            if (kind, key) in self._data:
                return self._data[(kind, key)]  # type: ignore[no-any-return]
        value = load()
        with self._lock:
            # INVARIANT: keep a value only if nothing changed since the request started.
            if epoch == self._epoch and len(self._data) < MAX_ENTRIES:
                self._data[(kind, key)] = value
        return value

    def view(self, tx: Any) -> CachedIdentity:
        return CachedIdentity(self, tx, self.epoch())


class _Repo:
    def __init__(self, view: CachedIdentity, kind: str, loader: Any) -> None:
        self._view = view
        self._kind = kind
        self._loader = loader

    def get(self, ref: str) -> Any:
        return self._view.cache.get(self._kind, ref, self._view.epoch, lambda: self._loader(ref))


class _Models:
    def __init__(self, view: CachedIdentity) -> None:
        self._view = view

    def find_by_attestor(self, spiffe_id: str) -> ModelArtifact | None:
        result: ModelArtifact | None = self._view.tx.models.find_by_attestor(spiffe_id)
        return result

    def find_by_digest(self, digest: str) -> ModelArtifact | None:
        return self._view.cache.get(
            "model", digest, self._view.epoch, lambda: self._view.tx.models.find_by_digest(digest)
        )


class _Credentials:
    def __init__(self, view: CachedIdentity) -> None:
        self._view = view

    def list_for(self, owner_kind: str, owner_id: str) -> list[Credential]:
        value = self._view.cache.get(
            "credentials",
            f"{owner_kind}:{owner_id}",
            self._view.epoch,
            lambda: tuple(self._view.tx.credentials.list_for(owner_kind, owner_id)),
        )
        return list(value or ())

    def find_by_spiffe_id(self, spiffe_id: str) -> list[Credential]:
        return list(self._view.tx.credentials.find_by_spiffe_id(spiffe_id))


class CachedIdentity:
    """Identity reads for one request: cache first, else the request's own transaction.
    Writes (sessions, replay cache, events) still go to ``tx``."""

    def __init__(self, cache: IdentityCache, tx: Any, epoch: int | None) -> None:
        self.cache = cache
        self.tx = tx
        self.epoch = epoch
        self.agents: _Repo = _Repo(self, "agent", tx.agents.get)
        self.operators: _Repo = _Repo(self, "operator", tx.operators.get)
        self.users: _Repo = _Repo(self, "user", tx.users.get)
        self.services: _Repo = _Repo(self, "service", tx.services.get)
        self.models = _Models(self)
        self.credentials = _Credentials(self)
        # writes go to the request's transaction; single-use ids are recorded at the end
        self.sessions = tx.sessions
        self.events = tx.events
        self.replay = DeferredReplay(tx.replay)

    def flush(self) -> None:
        """Record the request's single-use identifiers; raises if any was replayed."""
        self.replay.flush()

    def agent(self, ref: str) -> Agent | None:
        return self.agents.get(ref)  # type: ignore[no-any-return]

    def operator(self, ref: str) -> Operator | None:
        return self.operators.get(ref)  # type: ignore[no-any-return]

    def user(self, ref: str) -> User | None:
        return self.users.get(ref)  # type: ignore[no-any-return]

    def service(self, ref: str) -> Service | None:
        return self.services.get(ref)  # type: ignore[no-any-return]


class DeferredReplay:
    """Collects single-use identifiers during a request and records them all at once, in
    one statement, just before the request succeeds (``flush``). The unique key still makes
    each identifier usable once across every node; a collision raises the error of the
    credential that was replayed."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._items: list[tuple[str, str, Any]] = []

    def use_once(self, kind: str, jti: str, expires_at: Any) -> bool:
        self._items.append((kind, jti, expires_at))
        return True

    def purge_expired(self, now: Any) -> int:
        return int(self._store.purge_expired(now))

    def flush(self) -> None:
        from tessera.tokens.oauth_errors import OAuthError

        items, self._items = self._items, []
        if self._store.use_all(items):
            return
        used = self._store.used(items) or [(items[0][0], items[0][1])]
        kind, jti = used[0]
        if kind == "dpop":
            raise OAuthError("invalid_dpop_proof", "the DPoP proof was already used")
        if kind == "attestation":
            raise OAuthError(
                "invalid_grant",
                "the model attestation was not accepted",
                detail="attestation replayed",
            )
        if jti.startswith("actor:"):
            raise OAuthError(
                "invalid_grant", "the actor token is not accepted", detail="actor token replayed"
            )
        raise OAuthError(
            "invalid_client", "client authentication failed", detail="client assertion replayed"
        )
