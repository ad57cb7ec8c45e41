"""Access review campaigns: answers, the deadline settled by the scheduled job, audit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.unit.posture.helpers import DIGEST, advance, agent, session

from tessera.app import Tessera
from tessera.audit.ports import AuditQuery
from tessera.errors import Conflict, InvalidInput
from tessera.posture.review import ReviewService

CEILING = {
    "tools": ["docs/read", "docs/search"],
    "data_scopes": ["doc:*"],
    "models": [DIGEST],
    "budgets": {"tool_calls": 10},
}


def _reviews(t: Tessera) -> ReviewService:
    assert t.reviews is not None
    return t.reviews


def test_unanswered_items_are_revoked_by_the_scheduled_job(t: Tessera) -> None:
    r = _reviews(t)
    a = agent(t, "a", ceiling=CEILING)
    gone = agent(t, "gone", ceiling=CEILING)
    t.identity.decommission_agent(gone, actor="test")
    campaign, count = r.start(deadline=t.clock.now() + timedelta(days=7), actor="admin:x")
    assert count == 4  # 2 tools, 1 scope, 1 model; decommissioned agents are not reviewed
    items = {(i.field, i.item): i for i in r.items(campaign.id, owner="alice")}
    r.answer(campaign.id, items[("tools", "docs/read")].id, "confirm", actor="admin:x")
    r.answer(campaign.id, items[("models", DIGEST)].id, "confirm", actor="admin:x")
    r.answer(campaign.id, items[("data_scopes", "doc:*")].id, "confirm", actor="admin:x")
    with pytest.raises(Conflict):
        r.answer(campaign.id, items[("tools", "docs/read")].id, "revoke", actor="admin:x")
    advance(t, 6)
    assert t.posture is not None
    t.posture.run_scheduled()
    assert r.get(campaign.id).status == "open"  # the deadline has not passed
    advance(t, 2)
    searching = session(t, a, grant={"tools": ["docs/search"]})
    t.posture.run_scheduled()
    closed = r.get(campaign.id)
    assert closed.status == "closed"
    assert dict(closed.counts or {}) == {"confirmed": 3, "expired_revoked": 1}
    assert t.identity.get_agent(a).ceiling.tools == {"docs/read"}
    with t.store.read() as tx:
        assert tx.sessions.get(searching).status == "revoked"  # type: ignore[union-attr]
    t.audit.chain_pending()
    kinds = [
        rec["event_type"]
        for rec in t.audit.query(AuditQuery(limit=1000))
        if rec["event_type"].startswith("review.")
    ]
    assert kinds[0] == "review.started"
    assert kinds.count("review.answered") == 4  # three answers + the expired item
    assert "review.revoked" in kinds
    assert kinds[-1] == "review.closed"
    head = t.store.event_head()
    r.close(campaign.id, actor="admin:x")  # retry: nothing changes
    t.posture.run_scheduled()
    assert t.store.event_head() == head


def test_keep_on_expiry_leaves_the_ceiling(t: Tessera) -> None:
    r = _reviews(t)
    a = agent(t, "a", ceiling=CEILING)
    campaign, _ = r.start(
        deadline=t.clock.now() + timedelta(days=1), on_expiry="keep", actor="admin:x"
    )
    advance(t, 2)
    assert r.close_expired() == [campaign.id]
    assert dict(r.get(campaign.id).counts or {}) == {"expired_kept": 4}
    assert t.identity.get_agent(a).ceiling.tools == {"docs/read", "docs/search"}


def test_owner_revoke_narrows_now(t: Tessera) -> None:
    r = _reviews(t)
    a = agent(t, "a", ceiling=CEILING)
    campaign, _ = r.start(actor="admin:x")
    item = next(i for i in r.items(campaign.id) if i.item == "docs/search")
    answered = r.answer(campaign.id, item.id, "revoke", note="unused", actor="admin:x")
    assert answered.state == "revoked"
    assert t.identity.get_agent(a).ceiling.tools == {"docs/read"}


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"deadline_days": -1}, "deadline"),
        ({"deadline_days": 400}, "deadline"),
        ({"on_expiry": "delete"}, "on_expiry"),
        ({"name": "bad\nname"}, "name"),
    ],
)
def test_bad_campaigns_are_refused(t: Tessera, kw: dict[str, object], message: str) -> None:
    r = _reviews(t)
    days = kw.pop("deadline_days", 7)
    with pytest.raises(InvalidInput, match=message):
        r.start(
            deadline=t.clock.now() + timedelta(days=float(days)),  # type: ignore[arg-type]
            actor="admin:x",
            **kw,  # type: ignore[arg-type]
        )
    assert r.campaigns() == []
