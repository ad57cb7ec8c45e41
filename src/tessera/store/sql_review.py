"""Access review campaigns and items in SQL; each change and its audit record commit in
one transaction (``tx.audit``, the outbox)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, func, select, update

from tessera.audit.record import ActorLayers, AuditEntry
from tessera.clock import utc
from tessera.posture.review import Campaign, ReviewItem
from tessera.store.sql_store import SqlStore
from tessera.store.tables_posture import review_campaigns, review_items

_C = review_campaigns.c
_I = review_items.c
CHUNK = 500


def _entry(action: str, resource: str, details: dict[str, Any], actor: str) -> AuditEntry:
    return AuditEntry(
        event_type=action,
        actor=ActorLayers(principal=actor[:256]),
        action=action,
        resource=resource[:256],
        outcome="success",
        details=details,
    )


class SqlReviewStore:
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def create(self, campaign: Campaign, items: Sequence[ReviewItem]) -> None:
        with self._store.write() as tx:
            c = tx.connection
            c.execute(
                review_campaigns.insert().values(
                    id=campaign.id,
                    name=campaign.name,
                    status=campaign.status,
                    on_expiry=campaign.on_expiry,
                    created_at=campaign.created_at,
                    deadline=campaign.deadline,
                    closed_at=None,
                    created_by=campaign.created_by[:128],
                )
            )
            rows = [
                {
                    "id": i.id,
                    "campaign_id": i.campaign_id,
                    "agent_id": i.agent_id,
                    "owner_user_id": i.owner_user_id,
                    "field": i.field,
                    "item": i.item[:512],
                    "state": i.state,
                    "answered_by": None,
                    "answered_at": None,
                    "note": None,
                }
                for i in items
            ]
            for start in range(0, len(rows), CHUNK):
                c.execute(review_items.insert(), rows[start : start + CHUNK])
            tx.audit.append(
                _entry(
                    "review.started",
                    campaign.id,
                    {
                        "name": campaign.name,
                        "deadline": campaign.deadline.isoformat(),
                        "on_expiry": campaign.on_expiry,
                        "items": len(rows),
                        "agents": len({i.agent_id for i in items}),
                    },
                    campaign.created_by,
                )
            )

    def campaigns(self, status: str | None = None) -> list[Campaign]:
        q = select(review_campaigns).order_by(_C.created_at.desc())
        if status is not None:
            q = q.where(_C.status == status)
        with self._store.read() as tx:
            rows = tx.connection.execute(q).fetchall()
            return [self._campaign(r, self._counts(tx.connection, r.id)) for r in rows]

    def campaign(self, campaign_id: str) -> Campaign | None:
        with self._store.read() as tx:
            row = tx.connection.execute(
                select(review_campaigns).where(_C.id == campaign_id)
            ).first()
            return self._campaign(row, self._counts(tx.connection, row.id)) if row else None

    @staticmethod
    def _counts(conn: Any, campaign_id: str) -> dict[str, int]:
        rows = conn.execute(
            select(_I.state, func.count()).where(_I.campaign_id == campaign_id).group_by(_I.state)
        )
        return {str(r[0]): int(r[1]) for r in rows}

    def items(
        self,
        campaign_id: str,
        *,
        owner_user_id: str | None = None,
        state: str | None = None,
        limit: int = 1000,
        after: str | None = None,
    ) -> list[ReviewItem]:
        q = select(review_items).where(_I.campaign_id == campaign_id).order_by(_I.id).limit(limit)
        if owner_user_id is not None:
            q = q.where(_I.owner_user_id == owner_user_id)
        if state is not None:
            q = q.where(_I.state == state)
        if after is not None:
            q = q.where(_I.id > after)
        with self._store.read() as tx:
            return [self._item(r) for r in tx.connection.execute(q)]

    def item(self, item_id: str) -> ReviewItem | None:
        with self._store.read() as tx:
            row = tx.connection.execute(select(review_items).where(_I.id == item_id)).first()
        return self._item(row) if row else None

    def settle(
        self, item_ids: Sequence[str], state: str, *, actor: str, now: datetime, note: str | None
    ) -> list[str]:
        done: list[str] = []
        with self._store.write() as tx:
            c = tx.connection
            for start in range(0, len(item_ids), CHUNK):
                chunk = list(item_ids[start : start + CHUNK])
                pending = [
                    r.id
                    for r in c.execute(select(_I.id).where(_I.id.in_(chunk), _I.state == "pending"))
                ]
                if pending:
                    c.execute(
                        update(review_items)
                        .where(and_(_I.id.in_(pending), _I.state == "pending"))
                        .values(state=state, answered_by=actor[:128], answered_at=now, note=note)
                    )
                done += pending
            if done:
                first = self._item_in(c, done[0])
                tx.audit.append(
                    _entry(
                        "review.answered",
                        first.campaign_id if first else "review",
                        {"state": state, "items": done[:200], "count": len(done), "note": note},
                        actor,
                    )
                )
        return done

    @staticmethod
    def _item_in(conn: Any, item_id: str) -> ReviewItem | None:
        row = conn.execute(select(review_items).where(_I.id == item_id)).first()
        return SqlReviewStore._item(row) if row else None

    def close(self, campaign_id: str, now: datetime, *, actor: str) -> bool:
        with self._store.write() as tx:
            result = tx.connection.execute(
                update(review_campaigns)
                .where(and_(_C.id == campaign_id, _C.status == "open"))
                .values(status="closed", closed_at=now)
            )
            if result.rowcount != 1:
                return False
            tx.audit.append(
                _entry(
                    "review.closed",
                    campaign_id,
                    {"counts": self._counts(tx.connection, campaign_id)},
                    actor,
                )
            )
        return True

    def audit(self, action: str, resource: str, details: dict[str, Any], actor: str) -> None:
        with self._store.write() as tx:
            tx.audit.append(_entry(action, resource, details, actor))

    @staticmethod
    def _campaign(r: Row[Any], counts: dict[str, int]) -> Campaign:
        return Campaign(
            r.id,
            r.name,
            r.status,
            r.on_expiry,
            utc(r.created_at),
            utc(r.deadline),
            utc(r.closed_at) if r.closed_at else None,
            r.created_by,
            counts,
        )

    @staticmethod
    def _item(r: Row[Any]) -> ReviewItem:
        return ReviewItem(
            r.id,
            r.campaign_id,
            r.agent_id,
            r.owner_user_id,
            r.field,
            r.item,
            r.state,
            r.answered_by,
            utc(r.answered_at) if r.answered_at else None,
            r.note,
        )
