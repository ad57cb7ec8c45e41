"""What the token service needs from storage: narrow readers, by role.

``store.sql_store.SqlTx`` implements them over one transaction, and
``tokens.cache.CachedIdentity`` over the in-memory identity view plus that transaction.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from tessera.identity.model import Agent, Credential, ModelArtifact, Operator, Service, User
from tessera.tokens.sessions import SessionRepo


class AgentReader(Protocol):
    def get(self, ref: str) -> Agent | None: ...


class OperatorReader(Protocol):
    def get(self, ref: str) -> Operator | None: ...


class UserReader(Protocol):
    def get(self, ref: str) -> User | None: ...


class ServiceReader(Protocol):
    def get(self, ref: str) -> Service | None: ...


class ModelReader(Protocol):
    def find_by_digest(self, digest: str) -> ModelArtifact | None: ...
    def find_by_attestor(self, spiffe_id: str) -> ModelArtifact | None: ...


class CredentialReader(Protocol):
    def list_for(self, owner_kind: str, owner_id: str) -> list[Credential]: ...
    def find_by_spiffe_id(self, spiffe_id: str) -> list[Credential]: ...


class SingleUse(Protocol):
    def use_once(self, kind: str, jti: str, expires_at: datetime) -> bool: ...


class EventAppender(Protocol):
    def append(self, type: str, subject: str, payload: dict[str, Any], actor: str) -> int: ...


class TokenTx(Protocol):
    @property
    def agents(self) -> AgentReader: ...
    @property
    def operators(self) -> OperatorReader: ...
    @property
    def users(self) -> UserReader: ...
    @property
    def services(self) -> ServiceReader: ...
    @property
    def models(self) -> ModelReader: ...
    @property
    def credentials(self) -> CredentialReader: ...
    @property
    def sessions(self) -> SessionRepo: ...
    @property
    def replay(self) -> SingleUse: ...
    @property
    def events(self) -> EventAppender: ...


class TokenStore(Protocol):
    def write(self) -> AbstractContextManager[Any]: ...
    def read(self) -> AbstractContextManager[Any]: ...
