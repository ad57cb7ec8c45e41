"""What the token service needs from storage (implemented by ``store.sql_store.SqlStore``)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from tessera.identity.ports import IdentityTx
from tessera.tokens.sessions import ReplayCache, SessionRepo


class TokenTx(IdentityTx, Protocol):
    @property
    def sessions(self) -> SessionRepo: ...
    @property
    def replay(self) -> ReplayCache: ...


class TokenStore(Protocol):
    def write(self) -> AbstractContextManager[TokenTx]: ...
    def read(self) -> AbstractContextManager[TokenTx]: ...
