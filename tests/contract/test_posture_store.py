"""Posture on SQLite and PostgreSQL: the one-pass ledger usage summary, findings with
first-seen / last-seen and resolution, and ceiling narrowing with session revocation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.unit.posture.helpers import DIGEST, advance, agent, base, decision, failed_auth, session

from tessera.app import Tessera
from tessera.errors import InvalidInput
from tessera.posture.ports import FindingQuery


def _by_rule(t: Tessera) -> dict[str, set[str]]:
    assert t.posture is not None
    t.audit.chain_pending()
    out: dict[str, set[str]] = {}
    for f in t.posture.scanner.scan().findings:
        out.setdefault(f.rule, set()).add(f.subject)
    return out


def test_ledger_rules_read_one_pass_on_every_backend(tessera: Tessera) -> None:
    t = tessera
    base(t)
    wide = agent(
        t,
        "wide",
        ceiling={"tools": ["docs/read", "mail/send"], "data_scopes": ["doc:*"], "models": [DIGEST]},
    )
    idle = agent(t, "idle")
    advance(t, 40)
    session(t, wide)
    decision(t, wide, "docs/read", "doc:1", "allow")
    failed_auth(t, "agt_shadowworkload01")
    t.identity.create_operator("rogue-op", None, actor=wide)
    found = _by_rule(t)
    assert found["over_privileged_agent"] == {wide}
    assert found["dormant_agent"] == {idle}
    assert found["shadow_client"] == {"agt_shadowworkload01"}
    assert found["self_escalation"] == {wide}


def test_findings_keep_first_seen_and_resolve_when_fixed(tessera: Tessera) -> None:
    t = tessera
    assert t.posture is not None
    base(t)
    lax = agent(t, "lax", attestation_required=False)
    legacy = agent(t, "legacy", legacy_secret=True)
    first = t.posture.scan(actor="test")
    assert first.counts["new"] >= 2
    t1 = t.clock.now()
    advance(t, 1)
    second = t.posture.scan(actor="test")
    assert second.counts["new"] == 0
    [stored] = t.posture.findings(FindingQuery(rule="agent_without_attestation"))
    assert stored.first_seen == t1
    assert stored.last_seen == t1 + timedelta(days=1)
    assert stored.finding.agent == lax
    # filters: severity is "this or worse"; agent; subject kind
    high = t.posture.findings(FindingQuery(severity="high"))
    assert {f.finding.rule for f in high} == {"long_lived_credential"}
    assert [f.finding.agent for f in t.posture.findings(FindingQuery(agent=legacy))] == [legacy]
    # paging by key
    every = t.posture.findings(FindingQuery(limit=1000))
    page1 = t.posture.findings(FindingQuery(limit=1))
    page2 = t.posture.findings(FindingQuery(limit=1000, after=page1[0].finding.key))
    assert [f.finding.key for f in page1 + page2] == [f.finding.key for f in every]
    # fixed: the finding is resolved by the next scan, and reopens with its first_seen
    t.identity.decommission_agent(lax, actor="test")
    third = t.posture.scan(actor="test")
    assert third.counts["resolved"] == 1
    [gone] = t.posture.findings(FindingQuery(status="resolved"))
    assert gone.finding.rule == "agent_without_attestation"
    assert gone.resolved_at == t.clock.now()
    last = t.posture.last_scan()
    assert last is not None
    assert last["id"] == third.scan_id
    assert "inventory" in last["stats"]["seconds"]


def test_bad_queries_are_refused(tessera: Tessera) -> None:
    with pytest.raises(InvalidInput):
        FindingQuery(severity="urgent")
    with pytest.raises(InvalidInput):
        FindingQuery(limit=0)
    with pytest.raises(InvalidInput):
        FindingQuery(status="maybe")


def test_narrowing_revokes_wider_sessions_in_the_same_transaction(tessera: Tessera) -> None:
    t = tessera
    base(t)
    a = agent(
        t,
        "wide",
        ceiling={"tools": ["docs/read", "mail/send"], "models": [DIGEST], "data_scopes": []},
    )
    wider = session(t, a, grant={"tools": ["mail/send"]})
    inside = session(t, a, grant={"tools": ["docs/read"]})
    head = t.store.event_head()
    w = t.identity.narrow_agent_ceiling(
        a, {"tools": ["docs/read"], "models": [DIGEST]}, actor="test"
    )
    events = t.store.read_events_after(head, 100)
    assert [e.type for e in events] == ["agent.ceiling_changed", "session.revoked"]
    assert w.consistency_token is not None
    with t.store.read() as tx:
        assert tx.sessions.get(wider).status == "revoked"  # type: ignore[union-attr]
        assert tx.sessions.get(inside).status == "active"  # type: ignore[union-attr]


def test_review_campaign_on_every_backend(tessera: Tessera) -> None:
    t = tessera
    assert t.reviews is not None
    base(t)
    a = agent(t, "a", ceiling={"tools": ["docs/read", "docs/search"], "models": [DIGEST]})
    campaign, count = t.reviews.start(actor="test")
    assert count == 3
    items = {i.item: i for i in t.reviews.items(campaign.id, owner="alice")}
    t.reviews.answer(campaign.id, items["docs/read"].id, "confirm", actor="test")
    t.reviews.answer(campaign.id, items[DIGEST].id, "confirm", actor="test")
    closed = t.reviews.close(campaign.id, actor="test", force=True)
    assert dict(closed.counts or {}) == {"confirmed": 2, "expired_revoked": 1}
    assert t.identity.get_agent(a).ceiling.tools == {"docs/read"}
    assert [c.status for c in t.reviews.campaigns()] == ["closed"]
