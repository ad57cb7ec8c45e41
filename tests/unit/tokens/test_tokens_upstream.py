"""In-process RFC 8693 exchange for upstream audiences (the gateway's upstream tokens)."""

from __future__ import annotations

from tessera.crypto.jws import JwksKeys, verify_jwt
from tessera.crypto.keys import generate_signing_key
from tessera.tokens.claims import SessionClaims, build_session_claims, parse_session_claims
from tessera.tokens.grant import SessionGrant
from tessera.tokens.upstream import UpstreamTokenExchange

ISS = "https://tessera.example"


def _claims(
    *, act: dict[str, object] | None, iat: int = 1000, lifetime: int = 600
) -> SessionClaims:
    grant = SessionGrant(
        tools=frozenset({"tools/*"}),
        deny=frozenset(),
        data_scope=frozenset(),
        budgets={},
        audience=frozenset({f"{ISS}/mcp/tools"}),
        lifetime=lifetime,
        model_digest="sha256:" + "a" * 64,
    )
    raw = build_session_claims(
        grant,
        issuer=ISS,
        subject="usr_alice" if act else "agt_a",
        client_id="agt_a",
        jti="jti_1",
        iat=iat,
        sid="ses_1",
        operator="op_1",
        model_id="mdl_1",
        jkt=None,
        act=act,
    )
    return parse_session_claims(raw)


def test_the_token_names_the_upstream_and_the_act_chain() -> None:
    key = generate_signing_key()
    now = [1000.0]
    ex = UpstreamTokenExchange(ISS, lambda: key, lambda: now[0], service_id="svc_gw")
    minted = ex.exchange(_claims(act={"sub": "agt_a"}), "https://up.example", "tools/read_file")
    claims = verify_jwt(
        minted.token,
        keys=JwksKeys([key.public_jwk()]),
        algorithms=("ES256",),
        typ="at+jwt",
        issuer=ISS,
        audience="https://up.example",
        now=now[0],
    ).claims
    assert claims["aud"] == "https://up.example"  # only the upstream, not the gateway
    assert claims["sub"] == "usr_alice"
    assert claims["act"] == {"sub": "svc_gw", "act": {"sub": "agt_a"}}  # gateway, then agent
    assert claims["authorization_details"] == [
        {"type": "tessera_upstream_call", "tools": ["tools/read_file"]}
    ]
    assert claims["sid"] == "ses_1"
    assert claims["exp"] - claims["iat"] == 120


def test_tokens_are_reused_briefly_and_never_outlive_the_session() -> None:
    key = generate_signing_key()
    now = [1000.0]
    ex = UpstreamTokenExchange(ISS, lambda: key, lambda: now[0], service_id="svc_gw")
    autonomous = _claims(act=None, lifetime=100)  # exp = 1100
    first = ex.exchange(autonomous, "https://up.example", "t")
    assert first.exp == 1100  # capped at the agent token's exp
    assert ex.exchange(autonomous, "https://up.example", "t") is first
    assert ex.exchange(autonomous, "https://up.example", "other") is not first
    now[0] = 1075.0  # within the reuse margin of exp: a new one
    assert ex.exchange(autonomous, "https://up.example", "t") is not first
    ex.forget("ses_1")
    claims = verify_jwt(
        ex.exchange(autonomous, "https://up.example", "t").token,
        keys=JwksKeys([key.public_jwk()]),
        algorithms=("ES256",),
        typ="at+jwt",
        issuer=ISS,
        audience="https://up.example",
        now=now[0],
    ).claims
    assert claims["act"] == {"sub": "svc_gw", "act": {"sub": "agt_a"}}
