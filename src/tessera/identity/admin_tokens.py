"""Admin tokens: created by ``tessera init``, shown once, stored only as a hash (DESIGN 9)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tessera.clock import Clock
from tessera.crypto.hashing import hash_token, new_secret
from tessera.ids import new_id

ADMIN_TOKEN_PREFIX = "tadm_"  # noqa: S105 - a name, not a secret


@dataclass(frozen=True)
class AdminTokenRecord:
    id: str
    token_hash: str
    label: str
    status: str
    created_at: datetime


class AdminTokenRepo(Protocol):
    def add(self, rec: AdminTokenRecord) -> None: ...
    def find_by_hash(self, token_hash: str) -> AdminTokenRecord | None: ...
    def count_active(self) -> int: ...


class _Events(Protocol):
    def append(self, type: str, subject: str, payload: dict[str, Any], actor: str) -> int: ...


class AdminTokenTx(Protocol):
    @property
    def admin_tokens(self) -> AdminTokenRepo: ...
    @property
    def events(self) -> _Events: ...


class AdminTokenStore(Protocol):
    def write(self) -> AbstractContextManager[AdminTokenTx]: ...
    def read(self) -> AbstractContextManager[AdminTokenTx]: ...


class AdminTokens:
    def __init__(self, store: AdminTokenStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def create(self, label: str, *, actor: str) -> tuple[str, str]:
        """Return (token id, plain token). The plain token is never stored."""
        plain = new_secret(ADMIN_TOKEN_PREFIX)
        rec = AdminTokenRecord(
            new_id("key"), hash_token(plain), label[:100], "active", self._clock.now()
        )
        with self._store.write() as tx:
            tx.admin_tokens.add(rec)
            tx.events.append("admin_token.created", rec.id, {"label": rec.label}, actor)
        return rec.id, plain

    def verify(self, presented: str) -> str | None:
        """The token's id when ``presented`` is an active admin token, else None.

        The lookup is by SHA-256 hash (a unique index), so timing reveals nothing about
        the stored value."""
        if not presented.startswith(ADMIN_TOKEN_PREFIX) or len(presented) > 200:
            return None
        with self._store.read() as tx:
            rec = tx.admin_tokens.find_by_hash(hash_token(presented))
        if rec is None or rec.status != "active":
            return None
        return rec.id

    def any_exist(self) -> bool:
        with self._store.read() as tx:
            return tx.admin_tokens.count_active() > 0
