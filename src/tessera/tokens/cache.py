"""An in-memory view of identity records for the token hot path, kept fresh by the event log.

Every request first *syncs*: it reads the events written since the cache's version (usually
one or two ``session.*`` rows) and, if any changes an identity record, clears the cache. An
entry read from the store is kept only if no clear happened since the reading request
synced, so a request that read old data can never put it back after a newer change
(DESIGN 5: reads are served from memory, kept fresh by the event log).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from tessera.identity.model import Agent, Credential, ModelArtifact, Operator, Service, User

T = TypeVar("T")
IDENTITY_EVENT_PREFIXES = ("operator.", "agent.", "user.", "model.", "credential.", "service.")
MAX_EVENTS_PER_SYNC = 500
MAX_ENTRIES = 100_000


class _EventSource(Protocol):
    def types_after(self, seq: int, limit: int = 1000) -> list[tuple[int, str]]: ...
    def head(self) -> int: ...


class IdentityCache:
    def __init__(self, on_key_change: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._version = -1  # event sequence the cache reflects; -1: never synced
        self._data: dict[tuple[str, str], Any] = {}
        self._on_key_change = on_key_change

    def sync(self, events: _EventSource) -> int:
        """Bring the cache to the store's current event head; return that version."""
        with self._lock:
            version = self._version
        if version < 0:
            head = events.head()
            with self._lock:
                if self._version < 0:
                    self._version = head
                return self._version
        batch = events.types_after(version, MAX_EVENTS_PER_SYNC)
        if not batch:
            return version
        changed = len(batch) >= MAX_EVENTS_PER_SYNC or any(
            kind.startswith(IDENTITY_EVENT_PREFIXES) for _, kind in batch
        )
        keys_changed = any(kind.startswith("key.") for _, kind in batch)
        new_version = batch[-1][0]
        with self._lock:
            if new_version > self._version:
                if changed:
                    self._data.clear()
                self._version = new_version
            current = self._version
        if keys_changed and self._on_key_change is not None:
            self._on_key_change()
        return current

    def get(self, kind: str, key: str, version: int, load: Callable[[], T | None]) -> T | None:
        with self._lock:
            if (kind, key) in self._data:
                return self._data[(kind, key)]  # type: ignore[no-any-return]
        value = load()
        with self._lock:
            # INVARIANT: keep a value only if nothing changed since the loader's sync.
            if version == self._version and len(self._data) < MAX_ENTRIES:
                self._data[(kind, key)] = value
        return value

    def view(self, tx: Any) -> CachedIdentity:
        return CachedIdentity(self, tx, self.sync(tx.events))


class _Repo:
    def __init__(self, view: CachedIdentity, kind: str, loader: Any) -> None:
        self._view = view
        self._kind = kind
        self._loader = loader

    def get(self, ref: str) -> Any:
        return self._view.cache.get(self._kind, ref, self._view.version, lambda: self._loader(ref))


class _Models:
    def __init__(self, view: CachedIdentity) -> None:
        self._view = view

    def find_by_attestor(self, spiffe_id: str) -> ModelArtifact | None:
        result: ModelArtifact | None = self._view.tx.models.find_by_attestor(spiffe_id)
        return result

    def find_by_digest(self, digest: str) -> ModelArtifact | None:
        return self._view.cache.get(
            "model", digest, self._view.version, lambda: self._view.tx.models.find_by_digest(digest)
        )


class _Credentials:
    def __init__(self, view: CachedIdentity) -> None:
        self._view = view

    def list_for(self, owner_kind: str, owner_id: str) -> list[Credential]:
        value = self._view.cache.get(
            "credentials",
            f"{owner_kind}:{owner_id}",
            self._view.version,
            lambda: tuple(self._view.tx.credentials.list_for(owner_kind, owner_id)),
        )
        return list(value or ())

    def find_by_spiffe_id(self, spiffe_id: str) -> list[Credential]:
        return list(self._view.tx.credentials.find_by_spiffe_id(spiffe_id))


class CachedIdentity:
    """Identity reads for one request: cache first, else the request's own transaction.
    Writes (sessions, replay cache, events) still go to ``tx``."""

    def __init__(self, cache: IdentityCache, tx: Any, version: int) -> None:
        self.cache = cache
        self.tx = tx
        self.version = version
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
