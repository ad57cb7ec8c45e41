"""What posture rules read: one inventory snapshot and one audit usage summary.

Both are built in one pass each (``store/sql_posture.py``): one read transaction over the
identity tables and live sessions, one streaming scan over the audit ledger's window. Every
rule then works on these values in memory, so a scan costs one pass over the store and one
over the ledger, not one per rule (the scale aim of issue 11: 100k identities and 1M audit
records in seconds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from tessera.identity.model import Agent, Credential, ModelArtifact, Operator, User


@dataclass(frozen=True, slots=True)
class LiveSession:
    """An active, unexpired stored session (DESIGN 4), the fields posture needs."""

    sid: str
    agent_id: str
    user_id: str | None
    model_digest: str | None
    depth: int
    parent_sid: str | None
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class Inventory:
    now: datetime
    operators: Mapping[str, Operator]
    users: Mapping[str, User]
    agents: list[Agent]
    # (owner_kind, owner_id) -> credentials of that owner
    credentials: Mapping[tuple[str, str], list[Credential]]
    models: Mapping[str, ModelArtifact]  # by digest
    live_sessions: list[LiveSession]
    last_session: Mapping[str, datetime]  # agent id -> newest stored session's issue time
    services: frozenset[str] = frozenset()  # service ids

    def credentials_of(self, agent_id: str) -> list[Credential]:
        return list(self.credentials.get(("agent", agent_id), []))

    @property
    def agent_ids(self) -> frozenset[str]:
        return frozenset(a.id for a in self.agents)


@dataclass
class ClientSighting:
    """A client id seen failing authentication, or presenting a token nobody issued."""

    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    sources: set[str] = field(default_factory=set)  # token_endpoint | pdp
    reasons: set[str] = field(default_factory=set)

    def see(self, when: datetime, source: str, reason: str | None) -> None:
        self.count += 1
        self.first = when if self.first is None or when < self.first else self.first
        self.last = when if self.last is None or when > self.last else self.last
        self.sources.add(source)
        if reason and len(self.reasons) < 10:
            self.reasons.add(reason[:120])


@dataclass(frozen=True, slots=True)
class ActorAction:
    """A change to identities or relationships whose actor is an agent (from the ledger)."""

    actor: str  # agent id
    event_type: str
    subject: str
    time: datetime
    self_grant: bool  # a relationship written for the actor itself


@dataclass
class UsageSummary:
    """What the audit ledger says agents did in ``[since, until]``."""

    since: datetime
    until: datetime
    records: int = 0  # ledger records read
    sessions: dict[str, int] = field(default_factory=dict)  # agent -> sessions issued
    last_session: dict[str, datetime] = field(default_factory=dict)
    tools_used: dict[str, set[str]] = field(default_factory=dict)  # allowed actions
    resources_used: dict[str, set[str]] = field(default_factory=dict)  # "type:id"
    failed_clients: dict[str, ClientSighting] = field(default_factory=dict)
    actor_actions: list[ActorAction] = field(default_factory=list)

    def saw_session(self, agent: str, when: datetime) -> None:
        self.sessions[agent] = self.sessions.get(agent, 0) + 1
        if agent not in self.last_session or when > self.last_session[agent]:
            self.last_session[agent] = when

    def used(self, agent: str, tool: str, resource: str) -> None:
        self.tools_used.setdefault(agent, set()).add(tool)
        self.resources_used.setdefault(agent, set()).add(resource)

    def client_failed(self, client: str, when: datetime, source: str, reason: str | None) -> None:
        self.failed_clients.setdefault(client, ClientSighting()).see(when, source, reason)


class InventorySource(Protocol):
    def snapshot(self, now: datetime) -> Inventory: ...


class UsageSource(Protocol):
    def summary(self, since: datetime, until: datetime) -> UsageSummary: ...
