"""Narrowing a ceiling, disabling a credential, and applying posture remediations through
the normal service calls (events, audit, session revocation), safe to retry."""

from __future__ import annotations

import pytest
from tests.unit.posture.helpers import DIGEST, advance, agent, scan, session

from tessera.app import Tessera
from tessera.audit.ports import AuditQuery
from tessera.crypto.keys import generate_signing_key
from tessera.errors import InvalidInput
from tessera.identity.model import AgentStatus, CredentialStatus
from tessera.posture.finding import Remediation

WIDE = {
    "tools": ["docs/*", "mail/send"],
    "data_scopes": ["doc:*"],
    "models": [DIGEST],
    "budgets": {"tool_calls": 50},
}


def _events(t: Tessera, after: int, kind: str) -> list[dict[str, object]]:
    return [
        {"subject": e.subject, "actor": e.actor, **e.payload}
        for e in t.store.read_events_after(after, 1000)
        if e.type == kind
    ]


def test_narrowing_writes_the_removed_items_and_revokes_sessions_beyond_it(t: Tessera) -> None:
    a = agent(t, "wide", ceiling=WIDE)
    beyond = session(t, a, grant={"tools": ["mail/send"], "data_scope": ["doc:1"]})
    child = session(t, a, depth=1, parent=beyond, grant={"tools": ["docs/read"]})
    inside = session(t, a, grant={"tools": ["docs/read"], "budgets": {"tool_calls": 5}})
    head = t.store.event_head()
    w = t.identity.narrow_agent_ceiling(
        a, {**WIDE, "tools": ["docs/read"], "budgets": {"tool_calls": 10}}, actor="admin:x"
    )
    assert w.value.ceiling.tools == {"docs/read"}
    assert t.identity.get_agent(a).ceiling.budgets == {"tool_calls": 10}
    [changed] = _events(t, head, "agent.ceiling_changed")
    assert changed["agent"] == a
    assert changed["actor"] == "admin:x"
    removed = changed["removed"]
    assert isinstance(removed, dict)
    assert removed["tools"] == ["docs/*", "mail/send"]
    assert removed["budgets"] == {"tool_calls": {"from": 50, "to": 10}}
    [revoked] = _events(t, head, "session.revoked")
    assert revoked["sessions"] == sorted([beyond, child])
    with t.store.read() as tx:
        assert tx.sessions.get(inside).status == "active"  # type: ignore[union-attr]
        assert tx.sessions.get(child).status == "revoked"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "change",
    [
        {"tools": ["docs/*", "mail/send", "web/fetch"]},
        {"data_scopes": ["doc:*", "ledger:*"]},
        {"budgets": {"tool_calls": 51}},
        {"budgets": {}},  # dropping a counter would make it unlimited
        {"max_session_lifetime": 3600},
        {"dpop_required": False},
    ],
)
def test_a_wider_ceiling_is_refused_and_nothing_is_written(
    t: Tessera, change: dict[str, object]
) -> None:
    a = agent(t, "wide", ceiling=WIDE)
    head = t.store.event_head()
    with pytest.raises(InvalidInput, match="within the current one"):
        t.identity.narrow_agent_ceiling(a, {**WIDE, **change}, actor="admin:x")
    assert t.store.event_head() == head
    assert t.identity.get_agent(a).ceiling.tools == {"docs/*", "mail/send"}


def test_disable_credential_writes_its_event_once(t: Tessera) -> None:
    a = agent(t, "legacy", legacy_secret=True)
    [cred] = t.identity.list_credentials("agent", a)
    head = t.store.event_head()
    w = t.identity.disable_credential(cred.id, "rotate", actor="admin:x")
    assert w.value.status == CredentialStatus.DISABLED
    again = t.identity.disable_credential(cred.id, "rotate", actor="admin:x")
    assert again.consistency_token is None
    assert _events(t, head, "credential.disabled") == [
        {
            "subject": cred.id,
            "actor": "admin:x",
            "owner_kind": "agent",
            "owner": a,
            "reason": "rotate",
        }
    ]


def test_scan_apply_performs_each_remediation_and_a_retry_changes_nothing(t: Tessera) -> None:
    assert t.posture is not None
    idle = agent(t, "idle")
    over = agent(t, "over", ceiling={**WIDE, "tools": ["finance/pay", "docs/read"]})
    legacy = agent(t, "legacy", legacy_secret=True)
    t.identity.add_agent_credential(legacy, jwk=_jwk(), actor="test")
    advance(t, 40)
    session(t, over)
    long = session(t, over, lifetime=3000)
    recorded = t.posture.scan(actor="test")
    actions = t.posture.plan(recorded.result.findings)
    kinds = {(a.kind, a.target) for a in actions}
    assert (Remediation.SUSPEND, idle) in kinds
    assert (Remediation.REVOKE_SESSION, long) in kinds
    assert (Remediation.NARROW_CEILING, over) in kinds
    # a dry run (planning) changed nothing
    assert t.identity.get_agent(idle).status == AgentStatus.ACTIVE
    head = t.store.event_head()
    outcomes = t.posture.apply(actions, actor="cli")
    assert {o.status for o in outcomes} <= {"applied", "already"}, [o.to_dict() for o in outcomes]
    assert t.identity.get_agent(idle).status == AgentStatus.SUSPENDED
    assert t.identity.get_agent(over).ceiling.tools == {"docs/read"}
    legacy_cred = next(
        c for c in t.identity.list_credentials("agent", legacy) if c.kind.value == "legacy_secret"
    )
    assert legacy_cred.status == CredentialStatus.DISABLED
    types = {e.type for e in t.store.read_events_after(head, 1000)}
    assert {"agent.suspended", "agent.ceiling_changed", "session.revoked"} <= types
    assert "credential.disabled" in types
    # every change is in the audit ledger with the acting principal
    t.audit.chain_pending()
    recs = t.audit.query(AuditQuery(event_type="agent.suspended"))
    assert idle in {r["resource"] for r in recs}
    assert {r["actor"]["principal"] for r in recs} == {"cli"}
    # applied findings are resolved; retrying the same actions changes nothing
    head = t.store.event_head()
    again = t.posture.apply(actions, actor="cli")
    assert {o.status for o in again} == {"already"}
    assert t.store.event_head() == head
    assert not [f for f in scan(t, "dormant_agent") if f.subject == idle]


def _jwk() -> dict[str, object]:
    return generate_signing_key().public_jwk()
