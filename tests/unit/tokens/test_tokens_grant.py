from __future__ import annotations

from typing import Any

import pytest
from tests.unit.tokens.tokens_helpers import DIGEST, ceiling, request

from tessera.identity.ceiling import Ceiling
from tessera.tokens.grant import (
    compute_session_grant,
    intersect_patterns,
    meet,
    minimize,
    narrow,
)
from tessera.tokens.oauth_errors import OAuthError


def grant(req_kw: dict[str, Any], cap: Ceiling, user: Ceiling | None = None, **kw: Any) -> Any:
    return compute_session_grant(request(**req_kw), cap, user, model_digest=DIGEST, **kw)


def refused(
    req_kw: dict[str, Any],
    cap: Ceiling,
    user: Ceiling | None = None,
    code: str = "invalid_authorization_details",
    **kw: Any,
) -> OAuthError:
    with pytest.raises(OAuthError) as info:
        grant(req_kw, cap, user, **kw)
    assert info.value.code == code
    return info.value


# -- pattern algebra -------------------------------------------------------------------


def test_meet_of_patterns() -> None:
    assert meet("fs/*", "fs/read", "tool") == "fs/read"
    assert meet("fs/read", "fs/*", "tool") == "fs/read"
    assert meet("fs/*", "fs/*", "tool") == "fs/*"
    assert meet("fs/*", "web/*", "tool") is None
    assert meet("fs/read", "fs/write", "tool") is None
    assert meet("doc:*", "doc:1", "scope") == "doc:1"
    assert meet("doc:*", "crm:*", "scope") is None


def test_minimize_drops_covered_items() -> None:
    assert minimize({"fs/*", "fs/read", "web/a"}, "tool") == {"fs/*", "web/a"}


def test_intersect_patterns() -> None:
    assert intersect_patterns({"fs/*"}, {"fs/read", "web/*"}, "tool") == {"fs/read"}
    assert intersect_patterns({"fs/*", "web/*"}, {"fs/*", "web/a"}, "tool") == {"fs/*", "web/a"}
    assert intersect_patterns({"doc:*"}, {"doc:1"}, "scope") == {"doc:1"}
    assert intersect_patterns({"doc:*"}, set(), "scope") == frozenset()


def test_narrow_refuses_explicit_denied_by_parent() -> None:
    with pytest.raises(OAuthError, match="denied"):
        narrow({"fs/read"}, [("x", {"fs/*"})], "tool", forbidden={"fs/*"})


# -- tools -----------------------------------------------------------------------------


def test_explicit_tools_inside_the_ceiling_are_granted() -> None:
    g = grant({"tools": ["fs/read", "web/search"]}, ceiling(tools=["fs/*", "web/search"]))
    assert g.tools == {"fs/read", "web/search"}


def test_explicit_tool_outside_the_ceiling_is_refused() -> None:
    err = refused({"tools": ["fs/read", "fs/write"]}, ceiling(tools=["fs/read"]))
    assert "fs/write" in err.error_description
    assert "agent ceiling" in err.error_description


def test_explicit_tool_outside_the_users_rights_is_refused() -> None:
    err = refused(
        {"tools": ["fs/write"]}, ceiling(tools=["fs/*"]), Ceiling.from_dict({"tools": ["fs/read"]})
    )
    assert "user's rights" in err.error_description


def test_wildcard_is_narrowed_to_the_ceiling() -> None:
    g = grant({"tools": ["fs/*"]}, ceiling(tools=["fs/read", "web/*"]))
    assert g.tools == {"fs/read"}


def test_wildcard_is_narrowed_to_the_users_rights() -> None:
    g = grant(
        {"tools": ["fs/*", "web/*"]},
        ceiling(tools=["fs/*", "web/*"]),
        Ceiling.from_dict({"tools": ["fs/read", "fs/list"]}),
    )
    assert g.tools == {"fs/read", "fs/list"}


def test_wildcard_outside_everything_yields_nothing_silently() -> None:
    g = grant({"tools": ["db/*"]}, ceiling(tools=["fs/*"]))
    assert g.tools == frozenset()


def test_wildcard_kept_when_ceiling_grants_the_whole_server() -> None:
    assert grant({"tools": ["fs/*"]}, ceiling(tools=["fs/*"])).tools == {"fs/*"}


def test_omitted_tools_grant_nothing() -> None:
    g = grant({}, ceiling(tools=["fs/*"], data_scopes=["doc:*"]))
    assert g.tools == frozenset()
    assert g.data_scope == frozenset()


def test_deny_is_carried_and_wins() -> None:
    g = grant({"tools": ["fs/*"], "deny": ["fs/delete"]}, ceiling(tools=["fs/*"]))
    assert g.deny == {"fs/delete"}
    assert g.allows_tool("fs/read")
    assert not g.allows_tool("fs/delete")
    assert not g.allows_tool("web/search")


def test_deny_may_name_tools_outside_the_ceiling() -> None:
    g = grant({"tools": ["fs/read"], "deny": ["mail/*"]}, ceiling(tools=["fs/read"]))
    assert g.deny == {"mail/*"}


# -- data scope ------------------------------------------------------------------------


def test_explicit_scope_outside_the_ceiling_is_refused() -> None:
    err = refused({"data_scope": ["doc:42"]}, ceiling(data_scopes=["doc:1"]))
    assert "doc:42" in err.error_description


def test_scope_wildcard_narrowed_to_the_user() -> None:
    g = grant(
        {"data_scope": ["doc:*"]},
        ceiling(data_scopes=["doc:*"]),
        Ceiling.from_dict({"data_scopes": ["doc:1"]}),
    )
    assert g.data_scope == {"doc:1"}
    assert g.allows_scope("doc:1")
    assert not g.allows_scope("doc:2")


def test_explicit_scope_outside_the_user_is_refused() -> None:
    refused(
        {"data_scope": ["doc:2"]},
        ceiling(data_scopes=["doc:*"]),
        Ceiling.from_dict({"data_scopes": ["doc:1"]}),
    )


def test_user_with_no_rights_gets_nothing_from_a_wildcard() -> None:
    g = grant({"tools": ["fs/*"]}, ceiling(tools=["fs/*"]), Ceiling())
    assert g.tools == frozenset()


# -- budgets ---------------------------------------------------------------------------


def test_requested_budget_within_the_ceiling() -> None:
    g = grant({"budgets": {"tool_calls": 5}}, ceiling(budgets={"tool_calls": 20}))
    assert dict(g.budgets) == {"tool_calls": 5}


def test_budget_above_the_ceiling_is_refused() -> None:
    refused({"budgets": {"tool_calls": 21}}, ceiling(budgets={"tool_calls": 20}))


def test_budget_the_ceiling_does_not_name_is_refused() -> None:
    refused({"budgets": {"external_calls": 1}}, ceiling(budgets={"tool_calls": 20}))


def test_omitted_budget_is_granted_at_the_cap() -> None:
    g = grant({}, ceiling(budgets={"tool_calls": 20, "external_calls": 5}))
    assert dict(g.budgets) == {"tool_calls": 20, "external_calls": 5}


def test_user_budget_caps_apply() -> None:
    user = Ceiling.from_dict({"budgets": {"tool_calls": 3}})
    g = grant({}, ceiling(budgets={"tool_calls": 20, "external_calls": 5}), user)
    assert dict(g.budgets) == {"tool_calls": 3, "external_calls": 5}
    err = refused({"budgets": {"tool_calls": 4}}, ceiling(budgets={"tool_calls": 20}), user)
    assert "user's rights" in err.error_description


# -- lifetime, model, audience, depth --------------------------------------------------


def test_default_lifetime() -> None:
    assert grant({}, ceiling(max_session_lifetime=3600)).lifetime == 900


@pytest.mark.parametrize(
    ("requested", "ceiling_max", "max_lifetime", "expected"),
    [
        (600, 3600, 3600, 600),
        (3600, 1200, 3600, 1200),
        (3600, 3600, 1800, 1800),
        (120, 3600, 3600, 120),
    ],
)
def test_lifetime_is_the_minimum(
    requested: int, ceiling_max: int, max_lifetime: int, expected: int
) -> None:
    g = grant(
        {"lifetime": requested},
        ceiling(max_session_lifetime=ceiling_max),
        max_lifetime=max_lifetime,
    )
    assert g.lifetime == expected


def test_default_lifetime_is_clamped_by_the_ceiling() -> None:
    assert grant({}, ceiling(max_session_lifetime=300)).lifetime == 300


def test_model_must_be_in_the_ceiling() -> None:
    with pytest.raises(OAuthError) as info:
        compute_session_grant(request(), ceiling(), None, model_digest="sha256:" + "f" * 64)
    assert info.value.code == "unauthorized_client"
    assert "f" * 64 not in info.value.error_description


def test_audience_is_required() -> None:
    refused({"audience": []}, ceiling(), code="invalid_target")


def test_default_audience_is_used_when_none_requested() -> None:
    g = grant({"audience": []}, ceiling(), default_audience=["svc-gateway"])
    assert g.audience == {"svc-gateway"}
    g = grant({"audience": ["svc-x"]}, ceiling(), default_audience=["svc-gateway"])
    assert g.audience == {"svc-x"}


def test_root_depth_and_max_depth() -> None:
    g = grant({}, ceiling(max_delegation_depth=3))
    assert (g.depth, g.max_depth) == (0, 3)
    assert grant({}, ceiling(max_delegation_depth=9), depth_limit=5).max_depth == 5
    assert g.model_digest == DIGEST
