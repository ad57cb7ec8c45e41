from __future__ import annotations

from typing import Any

import pytest
from tests.unit.tokens.tokens_helpers import CHILD_DIGEST, DIGEST, NOW, request, root_claims

from tessera.identity.ceiling import Ceiling
from tessera.tokens.claims import SessionClaims, build_session_claims, parse_session_claims
from tessera.tokens.delegation import (
    MAX_ACT_DEPTH,
    ChildGrant,
    act_chain,
    act_from_chain,
    derive_child_grant,
    nest_act,
)
from tessera.tokens.grant import compute_session_grant
from tessera.tokens.oauth_errors import OAuthError

CHILD = "agt_child"
PARENT_CEILING = Ceiling.from_dict(
    {"models": [DIGEST], "may_delegate_to": [CHILD], "max_delegation_depth": 5}
)


def child_ceiling(**kw: Any) -> Ceiling:
    kw.setdefault("models", [CHILD_DIGEST])
    kw.setdefault("tools", ["fs/*", "web/*", "mail/send"])
    kw.setdefault("data_scopes", ["doc:*", "crm:*"])
    return Ceiling.from_dict(kw)


def derive(
    parent: SessionClaims,
    req_kw: dict[str, Any] | None = None,
    child_cap: Ceiling | None = None,
    **kw: Any,
) -> ChildGrant:
    req_kw = dict(req_kw or {})
    req_kw.setdefault("audience", [])
    kw.setdefault("parent_ceiling", PARENT_CEILING)
    kw.setdefault("parent_remaining_budgets", {"tool_calls": 100, "external_calls": 10})
    kw.setdefault("now", NOW + 60)
    kw.setdefault("child_agent_id", CHILD)
    kw.setdefault("child_model_digest", CHILD_DIGEST)
    return derive_child_grant(parent, child_cap or child_ceiling(), request(**req_kw), **kw)


def refused(code: str, *args: Any, **kw: Any) -> OAuthError:
    with pytest.raises(OAuthError) as info:
        derive(*args, **kw)
    assert info.value.code == code
    return info.value


# -- act -------------------------------------------------------------------------------


def test_nest_act_follows_rfc8693() -> None:
    assert nest_act(None, "a") == {"sub": "a"}
    assert nest_act({"sub": "a"}, "b") == {"sub": "b", "act": {"sub": "a"}}
    assert act_chain({"sub": "c", "act": {"sub": "b", "act": {"sub": "a"}}}) == ["c", "b", "a"]
    assert act_chain(None) == []


def test_act_from_chain_inverts_act_chain() -> None:
    act = {"sub": "c", "act": {"sub": "b"}}
    assert act_from_chain(act_chain(act)) == act
    assert act_from_chain([]) is None


def test_nest_act_does_not_share_the_previous_claim() -> None:
    prev: dict[str, Any] = {"sub": "a"}
    new = nest_act(prev, "b")
    prev["sub"] = "mutated"
    assert act_chain(new) == ["b", "a"]


@pytest.mark.parametrize(
    "act",
    [
        "a",
        {"act": {"sub": "a"}},
        {"sub": ""},
        {"sub": 3},
        {"sub": "a", "iss": "x"},
        {"sub": "a", "act": "b"},
        {"sub": "x" * 257},
        {"sub": "a", "act": None},
    ],
)
def test_malformed_act_is_refused(act: Any) -> None:
    with pytest.raises(OAuthError) as info:
        act_chain(act)
    assert info.value.code == "invalid_grant"


def test_act_depth_guard() -> None:
    deep = act_from_chain([f"a{i}" for i in range(MAX_ACT_DEPTH)])
    assert len(act_chain(deep)) == MAX_ACT_DEPTH
    with pytest.raises(OAuthError):
        nest_act(deep, "one-more")
    with pytest.raises(OAuthError):
        act_chain(act_from_chain([f"a{i}" for i in range(MAX_ACT_DEPTH + 1)]))


def test_nest_act_validates_the_new_actor() -> None:
    with pytest.raises(OAuthError):
        nest_act(None, "")


# -- derivation ------------------------------------------------------------------------


def test_child_narrows_every_dimension(parent_claims: SessionClaims) -> None:
    child = derive(
        parent_claims,
        {
            "tools": ["fs/*", "web/search"],
            "deny": ["web/post"],
            "data_scope": ["doc:1"],
            "audience": ["svc-a"],
            "budgets": {"tool_calls": 10},
        },
    )
    g = child.grant
    assert g.tools == {"fs/*", "web/search"}
    assert g.deny == {"fs/delete", "web/post"}
    assert g.data_scope == {"doc:1"}
    assert g.audience == {"svc-a"}
    assert dict(g.budgets) == {"tool_calls": 10, "external_calls": 0}
    assert dict(child.carve) == {"tool_calls": 10, "external_calls": 0}
    assert g.depth == 1
    assert g.model_digest == CHILD_DIGEST
    assert child.client_id == CHILD
    assert child.subject == parent_claims.subject
    assert act_chain(child.act) == [CHILD, "agt_parent"]
    assert child.exp <= parent_claims.exp


def test_wildcard_narrowed_to_the_child_ceiling(parent_claims: SessionClaims) -> None:
    child = derive(parent_claims, {"tools": ["fs/*"]}, child_ceiling(tools=["fs/read"]))
    assert child.grant.tools == {"fs/read"}


def test_wildcard_narrowed_to_the_parent(parent_claims: SessionClaims) -> None:
    child = derive(parent_claims, {"tools": ["web/*"], "data_scope": ["crm:*"]})
    assert child.grant.tools == {"web/search"}
    assert child.grant.data_scope == {"crm:7"}


def test_explicit_tool_outside_the_parent_is_refused(parent_claims: SessionClaims) -> None:
    err = refused("invalid_authorization_details", parent_claims, {"tools": ["web/post"]})
    assert "parent session" in err.error_description


def test_explicit_tool_outside_the_child_ceiling_is_refused(parent_claims: SessionClaims) -> None:
    err = refused(
        "invalid_authorization_details",
        parent_claims,
        {"tools": ["mail/send"]},
        child_ceiling(tools=["fs/*"]),
    )
    assert "child agent ceiling" in err.error_description


def test_explicit_tool_the_parent_denies_is_refused(parent_claims: SessionClaims) -> None:
    refused("invalid_authorization_details", parent_claims, {"tools": ["fs/delete"]})


def test_explicit_scope_outside_the_parent_is_refused(parent_claims: SessionClaims) -> None:
    refused("invalid_authorization_details", parent_claims, {"data_scope": ["crm:8"]})


def test_audience_outside_the_parent_is_refused(parent_claims: SessionClaims) -> None:
    refused("invalid_target", parent_claims, {"audience": ["svc-c"]})


def test_audience_is_inherited_when_not_requested(parent_claims: SessionClaims) -> None:
    assert derive(parent_claims).grant.audience == {"svc-a", "svc-b"}


def test_child_not_in_may_delegate_to_is_refused(parent_claims: SessionClaims) -> None:
    refused("unauthorized_client", parent_claims, child_agent_id="agt_stranger")


def test_child_model_must_be_in_its_ceiling(parent_claims: SessionClaims) -> None:
    refused("unauthorized_client", parent_claims, child_model_digest=DIGEST)


def test_expired_parent_is_refused(parent_claims: SessionClaims) -> None:
    refused("invalid_grant", parent_claims, now=parent_claims.exp)


def test_exp_is_capped_by_the_parent(parent_claims: SessionClaims) -> None:
    now = parent_claims.exp - 100
    child = derive(parent_claims, {"lifetime": 3600}, now=now)
    assert child.exp == parent_claims.exp
    assert child.grant.lifetime == 100


def test_lifetime_is_capped_by_the_child_ceiling(parent_claims: SessionClaims) -> None:
    child = derive(parent_claims, {"lifetime": 3000}, child_ceiling(max_session_lifetime=600))
    assert child.grant.lifetime == 600
    assert child.exp == NOW + 60 + 600


def test_budget_request_above_remaining_is_refused(parent_claims: SessionClaims) -> None:
    err = refused(
        "invalid_authorization_details",
        parent_claims,
        {"budgets": {"tool_calls": 51}},
        parent_remaining_budgets={"tool_calls": 50, "external_calls": 10},
    )
    assert "remaining" in err.error_description


def test_budget_above_the_child_ceiling_is_refused(parent_claims: SessionClaims) -> None:
    err = refused(
        "invalid_authorization_details",
        parent_claims,
        {"budgets": {"tool_calls": 30}},
        child_ceiling(budgets={"tool_calls": 20}),
    )
    assert "child agent ceiling" in err.error_description


def test_missing_remaining_counter_counts_as_spent(parent_claims: SessionClaims) -> None:
    refused(
        "invalid_authorization_details",
        parent_claims,
        {"budgets": {"tool_calls": 1}},
        parent_remaining_budgets={},
    )


def test_remaining_above_the_grant_is_clamped(parent_claims: SessionClaims) -> None:
    refused(
        "invalid_authorization_details",
        parent_claims,
        {"budgets": {"tool_calls": 101}},
        parent_remaining_budgets={"tool_calls": 10**6},
    )


def test_counter_only_the_child_ceiling_caps(parent_claims: SessionClaims) -> None:
    child = derive(parent_claims, {}, child_ceiling(budgets={"emails": 4}))
    assert child.grant.budgets["emails"] == 4
    assert "emails" not in child.carve
    refused(
        "invalid_authorization_details",
        parent_claims,
        {"budgets": {"emails": 5}},
        child_ceiling(budgets={"emails": 4}),
    )


def test_unknown_counter_is_refused(parent_claims: SessionClaims) -> None:
    refused("invalid_authorization_details", parent_claims, {"budgets": {"emails": 1}})


def _chain(
    depths: int, parent_max: int = 5, child_max: int = 5, depth_limit: int = 5
) -> list[SessionClaims]:
    """Delegate agent a0 -> a1 -> ... as far as allowed; return every session."""
    names = [f"agt_{i}" for i in range(depths + 1)]
    cap = Ceiling.from_dict(
        {
            "models": [DIGEST],
            "tools": ["fs/*"],
            "may_delegate_to": names,
            "max_delegation_depth": parent_max,
        }
    )
    root = root_claims(
        compute_session_grant(
            request(tools=["fs/*"]), cap, None, model_digest=DIGEST, depth_limit=depth_limit
        ),
        subject=names[0],
        client_id=names[0],
    )
    sessions = [root]
    child_cap = Ceiling.from_dict(
        {
            "models": [DIGEST],
            "tools": ["fs/*"],
            "may_delegate_to": names,
            "max_delegation_depth": child_max,
        }
    )
    for i in range(1, depths + 1):
        prev = sessions[-1]
        derived = derive_child_grant(
            prev,
            child_cap,
            request(tools=["fs/*"], audience=[]),
            parent_ceiling=cap if i == 1 else child_cap,
            parent_remaining_budgets={},
            now=NOW + i,
            child_agent_id=names[i],
            child_model_digest=DIGEST,
            depth_limit=depth_limit,
        )
        sessions.append(
            parse_session_claims(
                build_session_claims(
                    derived.grant,
                    issuer="https://tessera.test",
                    subject=derived.subject,
                    client_id=names[i],
                    jti=f"j{i}",
                    iat=NOW + i,
                    sid=f"s{i}",
                    operator="op",
                    model_id="m",
                    jkt=None,
                    act=derived.act,
                    parent=f"sha256:{i}",
                )
            )
        )
    return sessions


def test_depth_limit_is_enforced() -> None:
    sessions = _chain(5)
    assert [s.depth for s in sessions] == [0, 1, 2, 3, 4, 5]
    assert sessions[-1].actors == ("agt_5", "agt_4", "agt_3", "agt_2", "agt_1")
    with pytest.raises(OAuthError) as info:
        _chain(6)
    assert info.value.code == "invalid_grant"


def test_parent_ceiling_depth_limits_the_tree() -> None:
    assert len(_chain(2, parent_max=2)) == 3
    with pytest.raises(OAuthError):
        _chain(3, parent_max=2)


def test_child_ceiling_depth_cannot_widen_the_root_limit() -> None:
    with pytest.raises(OAuthError):
        _chain(3, parent_max=2, child_max=10)


def test_child_ceiling_depth_limits_below_the_child() -> None:
    assert len(_chain(2, child_max=1)) == 3  # a1 may delegate one more level
    with pytest.raises(OAuthError):
        _chain(3, child_max=1)


def test_depth_zero_ceiling_cannot_delegate(parent_claims: SessionClaims) -> None:
    refused(
        "invalid_grant",
        parent_claims,
        parent_ceiling=Ceiling.from_dict({"may_delegate_to": [CHILD], "max_delegation_depth": 0}),
    )
