"""Access review campaigns: each owner confirms or revokes each grant of their agents.

A campaign lists every ceiling item (tools, data scopes, models, may-delegate-to) of every
agent in service, addressed to the agent's owner. A ``revoke`` answer narrows the agent's
ceiling at once through ``IdentityService.narrow_agent_ceiling`` (event
``agent.ceiling_changed``; live sessions beyond the new ceiling are revoked with it). When
the deadline passes, the scheduled job (or ``tessera review close``) settles every
unanswered item by the campaign's ``on_expiry`` rule: ``revoke`` (the default: an access
nobody vouches for is removed) or ``keep``. Every step writes an audit record.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from tessera.clock import Clock, iso
from tessera.errors import Conflict, InvalidInput, NotFound
from tessera.identity.ceiling import Ceiling
from tessera.identity.model import Agent, AgentStatus

REVIEWED_FIELDS = ("tools", "data_scopes", "models", "may_delegate_to")
ON_EXPIRY = ("revoke", "keep")
MAX_DEADLINE_DAYS = 365


@dataclass(frozen=True)
class Campaign:
    id: str
    name: str
    status: str  # open | closed
    on_expiry: str  # revoke | keep
    created_at: datetime
    deadline: datetime
    closed_at: datetime | None
    created_by: str
    counts: Mapping[str, int] | None = None  # items by state, when read with counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "on_expiry": self.on_expiry,
            "created_at": iso(self.created_at),
            "deadline": iso(self.deadline),
            "closed_at": iso(self.closed_at) if self.closed_at else None,
            "created_by": self.created_by,
            "items": dict(self.counts or {}),
        }


@dataclass(frozen=True)
class ReviewItem:
    id: str
    campaign_id: str
    agent_id: str
    owner_user_id: str
    field: str
    item: str
    state: str  # pending | confirmed | revoked | expired_revoked | expired_kept | void
    answered_by: str | None = None
    answered_at: datetime | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "campaign_id": self.campaign_id,
            "agent_id": self.agent_id,
            "owner_user_id": self.owner_user_id,
            "field": self.field,
            "item": self.item,
            "state": self.state,
            "answered_by": self.answered_by,
            "answered_at": iso(self.answered_at) if self.answered_at else None,
            "note": self.note,
        }


class ReviewStore(Protocol):
    def create(self, campaign: Campaign, items: Sequence[ReviewItem]) -> None: ...
    def campaigns(self, status: str | None = None) -> list[Campaign]: ...
    def campaign(self, campaign_id: str) -> Campaign | None: ...
    def items(
        self,
        campaign_id: str,
        *,
        owner_user_id: str | None = None,
        state: str | None = None,
        limit: int = 1000,
        after: str | None = None,
    ) -> list[ReviewItem]: ...
    def item(self, item_id: str) -> ReviewItem | None: ...
    def settle(
        self, item_ids: Sequence[str], state: str, *, actor: str, now: datetime, note: str | None
    ) -> list[str]:
        """Move pending items to ``state``; returns the ids that were still pending."""

    def close(self, campaign_id: str, now: datetime, *, actor: str) -> bool: ...
    def audit(self, action: str, resource: str, details: dict[str, Any], actor: str) -> None: ...


class ReviewIdentity(Protocol):
    def list_agents(self) -> list[Agent]: ...
    def get_agent(self, ref: str) -> Agent: ...
    def get_user(self, ref: str) -> Any: ...
    def narrow_agent_ceiling(self, ref: str, ceiling: dict[str, Any], *, actor: str) -> Any: ...


def _without(ceiling: Ceiling, field: str, items: set[str]) -> Ceiling:
    data = ceiling.to_dict()
    data[field] = sorted(set(data[field]) - items)
    return Ceiling.from_dict(data)


class ReviewService:
    def __init__(
        self,
        store: ReviewStore,
        identity: ReviewIdentity,
        clock: Clock,
        *,
        default_on_expiry: str = "revoke",
    ) -> None:
        if default_on_expiry not in ON_EXPIRY:
            raise InvalidInput("on_expiry must be revoke or keep")
        self._store = store
        self._identity = identity
        self._clock = clock
        self.default_on_expiry = default_on_expiry

    def start(
        self,
        *,
        name: str | None = None,
        deadline: datetime | None = None,
        on_expiry: str | None = None,
        actor: str,
    ) -> tuple[Campaign, int]:
        """Open a campaign over every agent in service; returns it and its item count."""
        now = self._clock.now()
        deadline = deadline or now + timedelta(days=14)
        if deadline <= now or deadline > now + timedelta(days=MAX_DEADLINE_DAYS):
            raise InvalidInput(f"deadline must be in the next {MAX_DEADLINE_DAYS} days")
        rule = on_expiry or self.default_on_expiry
        if rule not in ON_EXPIRY:
            raise InvalidInput("on_expiry must be revoke or keep")
        label = (name or f"access review {iso(now)[:10]}").strip()
        if not label or len(label) > 200 or any(ord(c) < 32 for c in label):
            raise InvalidInput("name must be 1 to 200 printable characters")
        campaign = Campaign(
            "rvw_" + secrets.token_hex(8), label, "open", rule, now, deadline, None, actor
        )
        items: list[ReviewItem] = []
        for agent in self._identity.list_agents():
            if agent.status == AgentStatus.DECOMMISSIONED:
                continue
            for field in REVIEWED_FIELDS:
                for value in sorted(getattr(agent.ceiling, field)):
                    items.append(
                        ReviewItem(
                            "rvi_" + secrets.token_hex(8),
                            campaign.id,
                            agent.id,
                            agent.owner_user_id,
                            field,
                            value,
                            "pending",
                        )
                    )
        self._store.create(campaign, items)
        return campaign, len(items)

    def campaigns(self, status: str | None = None) -> list[Campaign]:
        if status not in (None, "open", "closed"):
            raise InvalidInput("status must be open or closed")
        return self._store.campaigns(status)

    def get(self, campaign_id: str) -> Campaign:
        found = self._store.campaign(campaign_id)
        if found is None:
            raise NotFound(f"no review campaign {campaign_id!r}")
        return found

    def items(
        self,
        campaign_id: str,
        *,
        owner: str | None = None,
        state: str | None = None,
        limit: int = 1000,
        after: str | None = None,
    ) -> list[ReviewItem]:
        self.get(campaign_id)
        owner_id = self._identity.get_user(owner).id if owner else None
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000")
        return self._store.items(
            campaign_id, owner_user_id=owner_id, state=state, limit=limit, after=after
        )

    def answer(
        self,
        campaign_id: str,
        item_id: str,
        decision: str,
        *,
        note: str | None = None,
        actor: str,
    ) -> ReviewItem:
        """The owner's answer: ``confirm`` keeps the grant, ``revoke`` removes it from the
        ceiling now. Answering twice is a conflict (the first answer stands)."""
        if decision not in ("confirm", "revoke"):
            raise InvalidInput("decision must be confirm or revoke")
        if note is not None and (len(note) > 500 or any(ord(c) < 32 for c in note)):
            raise InvalidInput("note must be at most 500 printable characters")
        campaign = self.get(campaign_id)
        item = self._store.item(item_id)
        if item is None or item.campaign_id != campaign.id:
            raise NotFound(f"no item {item_id!r} in campaign {campaign_id!r}")
        if campaign.status != "open":
            raise Conflict("the campaign is closed", code="campaign_closed")
        if item.state != "pending":
            raise Conflict(f"the item was already answered ({item.state})", code="answered")
        now = self._clock.now()
        state = "confirmed" if decision == "confirm" else "revoked"
        if decision == "revoke":
            self._remove(campaign, [item], actor, reason="revoked by its owner's review")
        if not self._store.settle([item.id], state, actor=actor, now=now, note=note):
            raise Conflict("the item was answered concurrently", code="answered")
        return replace(item, state=state, answered_by=actor, answered_at=now, note=note)

    def close_expired(self, *, actor: str = "system:review") -> list[str]:
        """Close every open campaign past its deadline (the scheduled job)."""
        now = self._clock.now()
        closed = []
        for c in self._store.campaigns("open"):
            if c.deadline <= now:
                self.close(c.id, actor=actor, force=True)
                closed.append(c.id)
        return closed

    def close(self, campaign_id: str, *, actor: str, force: bool = False) -> Campaign:
        """Settle unanswered items by ``on_expiry`` and close. Before the deadline only with
        ``force``. Safe to retry: a closed campaign is returned unchanged."""
        campaign = self.get(campaign_id)
        if campaign.status == "closed":
            return campaign
        now = self._clock.now()
        if campaign.deadline > now and not force:
            raise Conflict(
                f"the deadline {iso(campaign.deadline)} has not passed (use force)",
                code="deadline_not_reached",
            )
        while True:
            pending = self._store.items(campaign.id, state="pending", limit=1000)
            if not pending:
                break
            if campaign.on_expiry == "revoke":
                self._remove(campaign, pending, actor, reason="unanswered at the review deadline")
                state = "expired_revoked"
            else:
                state = "expired_kept"
            self._store.settle(
                [i.id for i in pending], state, actor=actor, now=now, note="deadline passed"
            )
        self._store.close(campaign.id, now, actor=actor)
        return self.get(campaign.id)

    def _remove(
        self, campaign: Campaign, items: Sequence[ReviewItem], actor: str, *, reason: str
    ) -> None:
        by_agent: dict[str, list[ReviewItem]] = {}
        for item in items:
            by_agent.setdefault(item.agent_id, []).append(item)
        for agent_id, mine in sorted(by_agent.items()):
            try:
                agent = self._identity.get_agent(agent_id)
            except NotFound:
                continue
            if agent.status == AgentStatus.DECOMMISSIONED:
                continue
            ceiling = agent.ceiling
            for field in REVIEWED_FIELDS:
                values = {i.item for i in mine if i.field == field}
                if values:
                    ceiling = _without(ceiling, field, values)
            if ceiling != agent.ceiling:
                self._identity.narrow_agent_ceiling(agent_id, ceiling.to_dict(), actor=actor)
            self._store.audit(
                "review.revoked",
                agent_id,
                {
                    "campaign": campaign.id,
                    "reason": reason,
                    "items": [{"field": i.field, "item": i.item} for i in mine][:200],
                },
                actor,
            )
