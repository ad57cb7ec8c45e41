"""Tessera's own signing keys: one active key, retired keys published until their tokens
have expired (``tessera keys rotate``). Private keys are sealed with the KEK at rest."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from tessera.clock import Clock
from tessera.crypto.jws import JwksKeys
from tessera.crypto.keys import (
    SigningAlg,
    SigningKey,
    generate_signing_key,
    open_private_key,
    public_jwks,
    seal_private_key,
)
from tessera.errors import Conflict, Unavailable

CACHE_SECONDS = 5.0
# A retired key stays in the JWKS for the longest token lifetime plus clock skew.
MAX_TOKEN_LIFETIME = timedelta(seconds=3600)
CLOCK_SKEW = timedelta(seconds=60)


@dataclass(frozen=True)
class KeyRecord:
    kid: str
    alg: str
    sealed: bytes = field(repr=False)
    public_jwk: dict[str, Any]
    status: str  # active | retired
    created_at: datetime
    retired_at: datetime | None
    publish_until: datetime | None

    def published_at(self, now: datetime) -> bool:
        return self.status == "active" or (
            self.publish_until is not None and now < self.publish_until
        )

    def to_dict(self, now: datetime) -> dict[str, Any]:
        from tessera.clock import iso

        return {
            "kid": self.kid,
            "alg": self.alg,
            "status": self.status,
            "created_at": iso(self.created_at),
            "retired_at": iso(self.retired_at) if self.retired_at else None,
            "publish_until": iso(self.publish_until) if self.publish_until else None,
            "published": self.published_at(now),
        }


class SigningKeyRepo(Protocol):
    def add(self, rec: KeyRecord) -> None: ...
    def list(self) -> list[KeyRecord]: ...
    def retire(self, kid: str, now: datetime, publish_until: datetime) -> None: ...


class _Events(Protocol):
    def append(self, type: str, subject: str, payload: dict[str, Any], actor: str) -> int: ...


class KeyTx(Protocol):
    @property
    def signing_keys(self) -> SigningKeyRepo: ...
    @property
    def events(self) -> _Events: ...


class KeyStore(Protocol):
    def write(self) -> AbstractContextManager[KeyTx]: ...
    def read(self) -> AbstractContextManager[KeyTx]: ...


class KeyRing:
    def __init__(
        self, store: KeyStore, clock: Clock, kek: bytes, cache_seconds: float = CACHE_SECONDS
    ) -> None:
        self._store = store
        self._clock = clock
        self._kek = kek
        self._lock = threading.Lock()
        self._cache_seconds = cache_seconds
        self._active: SigningKey | None = None
        self._active_at = 0.0
        self._jwks: dict[str, Any] | None = None
        self._jwks_at = 0.0
        self._jwks_keys: JwksKeys | None = None
        self._jwks_until: datetime | None = None
        self._last_refresh = 0.0

    def list(self) -> list[KeyRecord]:
        with self._store.read() as tx:
            return tx.signing_keys.list()

    def ensure_active(self, alg: SigningAlg = "ES256", *, actor: str = "system") -> str:
        """Create the first key if there is none; return the active kid."""
        with self._store.write() as tx:
            active = [r for r in tx.signing_keys.list() if r.status == "active"]
            if active:
                return active[-1].kid
            key = generate_signing_key(alg)
            tx.signing_keys.add(self._record(key))
            tx.events.append("key.created", key.kid, {"alg": alg}, actor)
            return key.kid

    def rotate(self, alg: SigningAlg = "ES256", *, actor: str) -> KeyRecord:
        """Make a new key active; the old one keeps verifying until its tokens expire."""
        now = self._clock.now()
        key = generate_signing_key(alg)
        rec = self._record(key)
        with self._store.write() as tx:
            retired = []
            for old in tx.signing_keys.list():
                if old.status == "active":
                    tx.signing_keys.retire(old.kid, now, now + MAX_TOKEN_LIFETIME + CLOCK_SKEW)
                    retired.append(old.kid)
            tx.signing_keys.add(rec)
            tx.events.append("key.rotated", key.kid, {"alg": alg, "retired": retired}, actor)
        self.invalidate()
        return rec

    # Reads are cached for a few seconds so hot paths never take a second database
    # connection while a transaction holds one; another node's rotation is seen within
    # ``cache_seconds`` (its retired key stays published far longer than that).

    def active_key(self) -> SigningKey:
        """The decrypted active signing key (cached; refreshed after rotation)."""
        now = time.monotonic()
        with self._lock:
            if self._active is not None and now - self._active_at < self._cache_seconds:
                return self._active
        active = [r for r in self.list() if r.status == "active"]
        if not active:
            raise Unavailable("no active signing key; run `tessera init`", code="no_signing_key")
        rec = active[-1]
        key = open_private_key(rec.sealed, self._kek, rec.kid)
        with self._lock:
            self._active, self._active_at = key, now
        return key

    def invalidate(self) -> None:
        with self._lock:
            self._active = None
            self._jwks = None
            self._jwks_keys = None

    def jwks(self) -> dict[str, Any]:
        """RFC 7517 JWK Set of every published public key: the active key first."""
        return self._published()[0]

    def _published(self) -> tuple[dict[str, Any], JwksKeys]:
        """The cached JWK Set and the key lookup over it, refreshed together."""
        mono = time.monotonic()
        now = self._clock.now()
        with self._lock:
            if (
                self._jwks is not None
                and self._jwks_keys is not None
                and mono - self._jwks_at < self._cache_seconds
                and (self._jwks_until is None or now < self._jwks_until)
            ):
                return self._jwks, self._jwks_keys
        recs = [r for r in self.list() if r.published_at(now)]
        recs.sort(key=lambda r: (r.status != "active", -r.created_at.timestamp()))
        doc = public_jwks([r.public_jwk for r in recs])
        keys = JwksKeys.from_jwks(doc)
        # the document changes by itself when a retired key's publication ends
        ends = [r.publish_until for r in recs if r.status != "active" and r.publish_until]
        with self._lock:
            self._jwks, self._jwks_keys, self._jwks_at = doc, keys, mono
            self._jwks_until = min(ends) if ends else None
        return doc, keys

    def lookup(self, kid: str | None, alg: str) -> Mapping[str, Any] | None:
        """A ``KeyLookup`` over Tessera's own published keys. An unknown ``kid`` refreshes the
        cache at most once a second (a key rotated on another node)."""
        found = self._published()[1](kid, alg)
        if found is None and kid is not None:
            mono = time.monotonic()
            with self._lock:
                stale = mono - self._last_refresh >= 1.0
                if stale:
                    self._last_refresh = mono
                    self._jwks = None
            if stale:
                found = self._published()[1](kid, alg)
        return found

    def _record(self, key: SigningKey) -> KeyRecord:
        if not key.kid:
            raise Conflict("key without kid")
        return KeyRecord(
            key.kid,
            key.alg,
            seal_private_key(key, self._kek),
            key.public_jwk(),
            "active",
            self._clock.now(),
            None,
            None,
        )
