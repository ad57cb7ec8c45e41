from __future__ import annotations

import copy
from typing import Any

import pytest
from tests.unit.tokens.tokens_helpers import DIGEST, JKT, NOW, ceiling, request

from tessera.tokens.claims import (
    SessionClaims,
    SessionClaimsError,
    build_session_claims,
    parse_session_claims,
)
from tessera.tokens.grant import SessionGrant, compute_session_grant

ISS = "https://tessera.test"


def a_grant(**req: Any) -> SessionGrant:
    req.setdefault("tools", ["fs/read", "web/*"])
    req.setdefault("deny", ["web/post"])
    req.setdefault("data_scope", ["doc:1"])
    req.setdefault("budgets", {"tool_calls": 5})
    cap = ceiling(
        tools=["fs/*", "web/*"],
        data_scopes=["doc:*"],
        budgets={"tool_calls": 20, "external_calls": 3},
    )
    return compute_session_grant(request(**req), cap, None, model_digest=DIGEST)


def build(grant: SessionGrant | None = None, **kw: Any) -> dict[str, Any]:
    kw.setdefault("issuer", ISS)
    kw.setdefault("subject", "usr_alice")
    kw.setdefault("client_id", "agt_a")
    kw.setdefault("jti", "jti-1")
    kw.setdefault("iat", NOW)
    kw.setdefault("sid", "ses_1")
    kw.setdefault("operator", "op_1")
    kw.setdefault("model_id", "mdl_1")
    kw.setdefault("jkt", JKT)
    if "act" not in kw and kw["subject"] != kw["client_id"]:
        kw["act"] = {"sub": kw["client_id"]}
    return build_session_claims(grant or a_grant(), **kw)


def test_claim_set_of_an_on_behalf_of_token() -> None:
    claims = build(scopes=["b", "a"])
    assert claims["iss"] == ISS
    assert claims["sub"] == "usr_alice"
    assert claims["client_id"] == "agt_a"
    assert claims["aud"] == "svc-gateway"
    assert claims["iat"] == NOW
    assert claims["exp"] == NOW + 900
    assert claims["cnf"] == {"jkt": JKT}
    assert claims["model"] == {"id": "mdl_1", "digest": DIGEST}
    assert claims["scope"] == "a b"
    assert claims["depth"] == 0
    assert claims["act"] == {"sub": "agt_a"}
    assert "parent" not in claims
    assert claims["authorization_details"] == [
        {
            "type": "tessera_session",
            "tools": ["fs/read", "web/*"],
            "deny": ["web/post"],
            "data_scope": ["doc:1"],
            "budgets": {"external_calls": 3, "tool_calls": 5},
            "max_depth": 5,
        }
    ]


def test_autonomous_token_has_no_act_and_sub_is_the_agent() -> None:
    claims = build(subject="agt_a")
    assert "act" not in claims
    assert claims["sub"] == claims["client_id"]


def test_several_audiences_are_a_sorted_array() -> None:
    assert build(a_grant(audience=["svc-b", "svc-a"]))["aud"] == ["svc-a", "svc-b"]


def test_optional_claims_are_omitted() -> None:
    claims = build(jkt=None)
    assert "cnf" not in claims
    assert "scope" not in claims


def test_round_trip() -> None:
    grant = a_grant()
    parsed = parse_session_claims(build(grant, scopes=["x"]))
    assert isinstance(parsed, SessionClaims)
    assert parsed.grant == grant
    assert dict(parsed.grant.budgets) == dict(grant.budgets)
    assert (parsed.issuer, parsed.subject, parsed.client_id) == (ISS, "usr_alice", "agt_a")
    assert (parsed.iat, parsed.exp, parsed.jkt) == (NOW, NOW + 900, JKT)
    assert parsed.scopes == {"x"}
    assert (parsed.sid, parsed.operator, parsed.model_id) == ("ses_1", "op_1", "mdl_1")
    assert parsed.actors == ("agt_a",)
    assert parsed.audience == {"svc-gateway"}
    assert not parsed.delegated


def test_derived_token_round_trip() -> None:
    grant = SessionGrant(
        tools=frozenset({"fs/read"}),
        deny=frozenset(),
        data_scope=frozenset(),
        budgets={},
        audience=frozenset({"svc-a"}),
        lifetime=60,
        model_digest=DIGEST,
        depth=2,
        max_depth=3,
    )
    act = {"sub": "agt_c", "act": {"sub": "agt_b", "act": {"sub": "agt_a"}}}
    parsed = parse_session_claims(build(grant, client_id="agt_c", act=act, parent="sha256:abc"))
    assert parsed.depth == 2
    assert parsed.delegated
    assert parsed.parent == "sha256:abc"
    assert parsed.actors == ("agt_c", "agt_b", "agt_a")


def test_build_refuses_an_inconsistent_token() -> None:
    grant = SessionGrant(
        tools=frozenset(),
        deny=frozenset(),
        data_scope=frozenset(),
        budgets={},
        audience=frozenset({"svc-a"}),
        lifetime=60,
        model_digest=DIGEST,
        depth=1,
        max_depth=3,
    )
    with pytest.raises(SessionClaimsError):
        build(grant)  # depth 1 without parent


def mutate(path: list[Any], value: Any = None, *, delete: bool = False) -> dict[str, Any]:
    claims = copy.deepcopy(build())
    target: Any = claims
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return claims


@pytest.mark.parametrize(
    "claim",
    [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "jti",
        "client_id",
        "sid",
        "operator",
        "model",
        "authorization_details",
        "depth",
    ],
)
def test_missing_required_claim(claim: str) -> None:
    with pytest.raises(SessionClaimsError):
        parse_session_claims(mutate([claim], delete=True))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["extra"], 1),
        (["iss"], ""),
        (["sub"], 3),
        (["jti"], "x" * 257),
        (["aud"], []),
        (["aud"], ["a", "a"]),
        (["aud"], [1]),
        (["aud"], "has space"),
        (["iat"], True),
        (["iat"], 0),
        (["exp"], NOW),
        (["exp"], NOW + 3601),
        (["exp"], "1"),
        (["nbf"], NOW + 10_000),
        (["scope"], 3),
        (["scope"], "a  b"),
        (["scope"], 'a"b'),
        (["cnf"], {"jkt": "short"}),
        (["cnf"], {"jkt": JKT, "x5t#S256": "y"}),
        (["cnf"], "x"),
        (["model"], {"id": "m"}),
        (["model", "digest"], "sha256:zz"),
        (["model", "id"], ""),
        (["authorization_details"], []),
        (["authorization_details", 0, "type"], "other"),
        (["authorization_details", 0, "extra"], 1),
        (["authorization_details", 0, "tools"], ["bad"]),
        (["authorization_details", 0, "tools"], "fs/read"),
        (["authorization_details", 0, "data_scope"], ["doc"]),
        (["authorization_details", 0, "budgets"], {"tool_calls": -1}),
        (["authorization_details", 0, "max_depth"], 26),
        (["depth"], 6),
        (["depth"], -1),
        (["parent"], "sha256:x"),
        (["act"], {"sub": "agt_other"}),
        (["act"], {"sub": "agt_a", "iss": "x"}),
        (["act"], {"sub": "agt_a", "act": {"sub": "agt_z"}}),
    ],
)
def test_malformed_claims_are_refused(path: list[Any], value: Any) -> None:
    with pytest.raises(SessionClaimsError) as info:
        parse_session_claims(mutate(path, value))
    assert info.value.code == "invalid_token"
    assert info.value.message == "Invalid token"
    assert info.value.detail


def test_on_behalf_of_root_needs_act() -> None:
    with pytest.raises(SessionClaimsError):
        parse_session_claims(mutate(["act"], delete=True))


def test_autonomous_root_must_not_carry_act() -> None:
    claims = build(subject="agt_a")
    claims["act"] = {"sub": "agt_a"}
    with pytest.raises(SessionClaimsError):
        parse_session_claims(claims)


def test_derived_token_act_must_match_depth() -> None:
    claims = build(client_id="agt_c", act={"sub": "agt_c"}, subject="usr_alice")
    claims.update(depth=3, parent="sha256:p")
    claims["authorization_details"][0]["max_depth"] = 5
    with pytest.raises(SessionClaimsError):
        parse_session_claims(claims)


def test_nbf_is_accepted() -> None:
    assert parse_session_claims(mutate(["nbf"], NOW)).iat == NOW


def test_non_mapping_is_refused() -> None:
    with pytest.raises(SessionClaimsError):
        parse_session_claims(["not", "claims"])  # type: ignore[arg-type]
