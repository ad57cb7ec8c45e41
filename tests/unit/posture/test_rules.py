"""Every posture rule, positive and negative, over real stored data (SQLite store and
ledger; the records come from the same writers the server uses)."""

from __future__ import annotations

from tests.unit.posture.helpers import (
    ALICE_GRANTS,
    DIGEST,
    advance,
    agent,
    decision,
    failed_auth,
    scan,
    session,
)

from tessera.app import Tessera
from tessera.crypto.keys import generate_signing_key
from tessera.identity.ceiling import Ceiling
from tessera.posture.finding import Remediation, Severity, SubjectKind
from tessera.rebac.ports import RelationTuple

MODEL = """model
  schema 1.1
type user
type agent
type document
  relations
    define viewer: [user, agent]
"""


def test_dormant_agent_without_recent_session(t: Tessera) -> None:
    idle = agent(t, "idle")
    busy = agent(t, "busy")
    advance(t, 40)
    session(t, busy)
    found = scan(t, "dormant_agent")
    assert [f.subject for f in found] == [idle]
    assert found[0].remediation == Remediation.SUSPEND
    assert found[0].evidence["last_session"] is None


def test_young_agent_is_not_dormant(t: Tessera) -> None:
    agent(t, "new")
    advance(t, 5)
    assert scan(t, "dormant_agent") == []


def test_orphaned_agent_when_owner_disabled(t: Tessera) -> None:
    mine = agent(t, "bobs", owner="bob", ceiling={"tools": ["docs/read"], "models": [DIGEST]})
    agent(t, "alices")
    t.identity.disable_user("bob", actor="test")
    found = scan(t, "orphaned_agent")
    assert [(f.subject, f.evidence["owner_state"]) for f in found] == [(mine, "disabled")]
    assert found[0].severity == Severity.HIGH


def test_owner_active_means_not_orphaned(t: Tessera) -> None:
    agent(t, "alices")
    assert scan(t, "orphaned_agent") == []


def test_expired_agent_with_active_credentials(t: Tessera) -> None:
    old = agent(t, "short", expires_in_days=10)
    agent(t, "long", expires_in_days=60)
    advance(t, 11)
    found = scan(t, "expired_still_usable")
    assert [f.subject for f in found] == [old]
    creds = t.identity.list_credentials("agent", old)
    assert found[0].remediation == Remediation.DISABLE_CREDENTIAL
    assert found[0].remediation_args["credentials"] == [c.id for c in creds]


def test_expired_agent_with_disabled_credentials_is_clean(t: Tessera) -> None:
    old = agent(t, "short", expires_in_days=10)
    for c in t.identity.list_credentials("agent", old):
        t.identity.disable_credential(c.id, "test", actor="test")
    advance(t, 11)
    assert scan(t, "expired_still_usable") == []


def test_expiry_beyond_the_maximum_lifetime(t: Tessera) -> None:
    far = agent(t, "far", expires_in_days=300)
    agent(t, "near", expires_in_days=30)
    found = scan(t, "expiry_beyond_maximum", max_agent_lifetime_days=100)
    assert [f.subject for f in found] == [far]
    assert scan(t, "expiry_beyond_maximum", max_agent_lifetime_days=365) == []


def test_legacy_secret_is_always_flagged(t: Tessera) -> None:
    legacy = agent(t, "legacy", legacy_secret=True)
    agent(t, "keyed")
    found = scan(t, "long_lived_credential")
    assert [f.evidence["kind"] for f in found] == ["legacy_secret"]
    assert found[0].agent == legacy
    assert found[0].severity == Severity.HIGH
    assert found[0].remediation == Remediation.REVIEW  # no other credential to fall back on


def test_old_key_needs_rotation_and_is_disabled_once_replaced(t: Tessera) -> None:
    a = agent(t, "keyed")
    assert scan(t, "long_lived_credential") == []
    advance(t, 100)
    found = scan(t, "long_lived_credential")
    assert len(found) == 1
    assert found[0].remediation == Remediation.REVIEW
    new = t.identity.add_agent_credential(
        a, jwk=generate_signing_key().public_jwk(), actor="test"
    ).value
    found = scan(t, "long_lived_credential")
    assert [f.remediation for f in found] == [Remediation.DISABLE_CREDENTIAL]
    assert found[0].evidence["replacement"] == new.id
    assert found[0].subject != new.id


def test_over_privileged_agent_gets_a_narrower_ceiling(t: Tessera) -> None:
    wide = agent(
        t,
        "wide",
        ceiling={
            "tools": ["docs/read", "docs/search", "mail/send"],
            "data_scopes": ["doc:*", "ledger:*"],
            "models": [DIGEST],
        },
    )
    advance(t, 31)
    session(t, wide)
    decision(t, wide, "docs/read", "document:7", "allow")
    decision(t, wide, "mail/send", "document:7", "deny")  # denied: not a use
    found = scan(t, "over_privileged_agent", scope_types={"document": "doc"})
    assert [f.subject for f in found] == [wide]
    f = found[0]
    assert f.evidence["unused_tools"] == ["docs/search", "mail/send"]
    assert f.evidence["unused_data_scopes"] == ["ledger:*"]
    suggested = Ceiling.from_dict(f.remediation_args["ceiling"])
    assert suggested.tools == {"docs/read"}
    assert suggested.data_scopes == {"doc:*"}
    assert suggested.models == {DIGEST}


def test_agent_using_its_whole_ceiling_is_not_over_privileged(t: Tessera) -> None:
    a = agent(t, "tight")
    advance(t, 31)
    session(t, a)
    decision(t, a, "docs/read", "doc:1", "allow")
    assert scan(t, "over_privileged_agent") == []


def test_ceiling_beyond_the_owner_is_narrowed_to_the_owner(t: Tessera) -> None:
    over = agent(
        t,
        "over",
        ceiling={
            "tools": ["docs/*", "finance/pay"],
            "data_scopes": ["doc:*"],
            "models": [DIGEST],
            "budgets": {"tool_calls": 500},
        },
    )
    agent(t, "within")
    found = scan(t, "ceiling_exceeds_owner")
    assert [f.subject for f in found] == [over]
    ev = found[0].evidence
    assert ev["tools_beyond_owner"] == ["docs/*", "finance/pay"]
    assert ev["budgets_beyond_owner"] == ["tool_calls"]
    suggested = Ceiling.from_dict(found[0].remediation_args["ceiling"])
    assert suggested.tools == {"docs/read", "docs/search"}
    assert suggested.budgets == {"tool_calls": ALICE_GRANTS["budgets"]["tool_calls"]}  # type: ignore[index]


def test_session_longer_than_policy(t: Tessera) -> None:
    a = agent(t, "a")
    long = session(t, a, lifetime=3000)
    session(t, a, lifetime=600)
    found = scan(t, "session_longer_than_policy", max_session_lifetime=1800)
    assert [(f.subject, f.subject_kind) for f in found] == [(long, SubjectKind.SESSION)]
    assert found[0].remediation_args == {"session": long}
    # the agent's own ceiling (default 900 s) is stricter than the policy
    assert len(scan(t, "session_longer_than_policy")) == 1


def test_delegation_deeper_than_policy(t: Tessera) -> None:
    a = agent(t, "deep", ceiling={"tools": ["docs/read"], "models": [DIGEST]})
    root = session(t, a)
    deep = session(t, a, depth=4, parent=root)
    found = scan(t, "delegation_too_deep", max_delegation_depth=3)
    by_kind = {f.subject_kind: f for f in found}
    assert by_kind[SubjectKind.SESSION].subject == deep
    assert by_kind[SubjectKind.AGENT].remediation == Remediation.NARROW_CEILING
    assert by_kind[SubjectKind.AGENT].remediation_args["ceiling"]["max_delegation_depth"] == 3
    assert scan(t, "delegation_too_deep", max_delegation_depth=5) == []


def test_shadow_client_from_failed_authentication_and_bad_pdp_tokens(t: Tessera) -> None:
    known = agent(t, "known")
    failed_auth(t, "agt_nobodyregistered1")
    failed_auth(t, "agt_nobodyregistered1")
    failed_auth(t, known)  # a registered agent failing is not a shadow agent
    decision(t, None, "docs/read", "doc:1", "deny")  # token nobody issued, at the PDP
    found = {f.subject: f for f in scan(t, "shadow_client")}
    assert set(found) == {"agt_nobodyregistered1", "agt_unregistered00000"}
    assert found["agt_nobodyregistered1"].evidence["count"] == 2
    assert found["agt_nobodyregistered1"].evidence["sources"] == ["token_endpoint"]
    assert found["agt_unregistered00000"].evidence["sources"] == ["pdp"]


def test_decommissioned_agent_still_trying_is_a_shadow(t: Tessera) -> None:
    gone = agent(t, "gone")
    t.identity.decommission_agent(gone, actor="test")
    failed_auth(t, gone)
    [f] = scan(t, "shadow_client")
    assert f.subject == gone
    assert f.evidence["decommissioned_agent"] is True
    assert f.severity == Severity.HIGH


def test_no_failures_no_shadow(t: Tessera) -> None:
    agent(t, "known")
    assert scan(t, "shadow_client") == []


def test_session_on_an_unregistered_model(t: Tessera) -> None:
    a = agent(t, "a")
    bad = session(t, a, digest="sha256:" + "ee" * 32)
    session(t, a)
    found = scan(t, "unregistered_model_session")
    assert [(f.subject, f.severity) for f in found] == [(bad, Severity.CRITICAL)]
    assert found[0].evidence["model_state"] == "unregistered"


def test_sessions_on_registered_models_are_clean(t: Tessera) -> None:
    session(t, agent(t, "a"))
    assert scan(t, "unregistered_model_session") == []


def test_agent_without_attestation(t: Tessera) -> None:
    lax = agent(t, "lax", attestation_required=False)
    agent(t, "strict")
    assert [f.subject for f in scan(t, "agent_without_attestation")] == [lax]


def test_decommissioned_agent_without_attestation_is_not_reported(t: Tessera) -> None:
    lax = agent(t, "lax", attestation_required=False)
    t.identity.decommission_agent(lax, actor="test")
    assert scan(t, "agent_without_attestation") == []


def test_self_escalation_by_an_agent_actor(t: Tessera) -> None:
    rogue = agent(t, "rogue")
    agent(t, "honest")
    t.identity.create_user("sockpuppet", actor=rogue)
    t.rebac.apply_model(MODEL, actor="test")
    t.rebac.write_tuples([RelationTuple("document:1", "viewer", f"agent:{rogue}")], actor=rogue)
    found = scan(t, "self_escalation")
    assert [f.subject for f in found] == [rogue]
    ev = found[0].evidence
    assert ev["count"] == 2
    assert sorted((a["event_type"], a["self_grant"]) for a in ev["actions"]) == [
        ("rebac.tuples_written", True),
        ("user.created", False),
    ]
    assert found[0].remediation == Remediation.SUSPEND


def test_admin_changes_are_not_self_escalation(t: Tessera) -> None:
    a = agent(t, "a")
    t.rebac.apply_model(MODEL, actor="test")
    t.rebac.write_tuples([RelationTuple("document:1", "viewer", f"agent:{a}")], actor="admin:x")
    assert scan(t, "self_escalation") == []
