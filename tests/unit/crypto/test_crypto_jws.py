"""tessera.crypto.jws: signing and the verification rules of DESIGN 9 / RFC 8725."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.crypto.errors import JwksInvalid, TokenInvalid
from tessera.crypto.hashing import b64url
from tessera.crypto.jws import (
    JwksKeys,
    b64url_decode,
    sign_compact,
    sign_jwt,
    typ_matches,
    verify_jws_signature_only,
    verify_jwt,
)
from tessera.crypto.keys import SigningKey, generate_signing_key
from tessera.errors import ConfigError, InvalidInput, Unauthenticated

NOW = 1_800_000_000
ISS = "https://tessera.example"
AUD = "https://pep.example"
ALGS = ("ES256", "EdDSA")


@pytest.fixture(scope="module")
def es_key() -> SigningKey:
    return generate_signing_key("ES256")


@pytest.fixture(scope="module")
def ed_key() -> SigningKey:
    return generate_signing_key("EdDSA")


def claims(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "sub": "agent-1",
        "aud": AUD,
        "iat": NOW,
        "exp": NOW + 600,
        "jti": "j1",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def verify(token: str, key: SigningKey, **over: Any) -> Any:
    kwargs: dict[str, Any] = {
        "keys": JwksKeys([key.public_jwk()]),
        "algorithms": ALGS,
        "typ": "at+jwt",
        "issuer": ISS,
        "audience": AUD,
        "now": NOW,
    }
    kwargs.update(over)
    return verify_jwt(token, **kwargs)


def segment(value: Any) -> str:
    return b64url(json.dumps(value).encode())


def reason(exc: pytest.ExceptionInfo[TokenInvalid]) -> str:
    return str(exc.value.detail)


# ------------------------------------------------------------------------------ round trip


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_sign_then_verify_round_trips(alg: str) -> None:
    key = generate_signing_key(alg)  # type: ignore[arg-type]
    token = sign_jwt(claims(scope="a b"), key, typ="at+jwt")
    verified = verify(token, key)
    assert verified.header == {"alg": alg, "kid": key.kid, "typ": "at+jwt"}
    assert verified.claims == claims(scope="a b")
    assert verified.kid == key.kid
    assert verified.alg == alg


def test_es256_signature_is_raw_r_s_of_64_bytes(es_key: SigningKey) -> None:
    token = sign_jwt(claims(), es_key, typ="at+jwt")
    assert len(b64url_decode(token.split(".")[2])) == 64


def test_extra_headers_cannot_replace_alg_kid_or_typ(es_key: SigningKey) -> None:
    for name in ("alg", "kid", "typ"):
        with pytest.raises(InvalidInput):
            sign_jwt(claims(), es_key, typ="at+jwt", extra_headers={name: "x"})
    token = sign_jwt(claims(), es_key, typ="at+jwt", extra_headers={"x-hint": 1})
    assert json.loads(b64url_decode(token.split(".")[0]))["x-hint"] == 1


# ------------------------------------------------------------------------------ algorithms


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("sig", ["", "AAAA"])
def test_alg_none_is_rejected_in_any_casing(es_key: SigningKey, alg: str, sig: str) -> None:
    token = f"{segment({'alg': alg, 'kid': es_key.kid, 'typ': 'at+jwt'})}.{segment(claims())}.{sig}"
    lookup = JwksKeys([es_key.public_jwk()])
    with pytest.raises(TokenInvalid):
        verify_jws_signature_only(token, keys=lookup, algorithms=["ES256", alg])
    if sig:
        with pytest.raises(TokenInvalid) as exc:
            verify_jws_signature_only(token, keys=lookup, algorithms=["ES256", alg])
        assert "none" in reason(exc)


def test_none_can_never_be_put_in_the_allow_list(es_key: SigningKey) -> None:
    token = sign_jwt(claims(), es_key, typ="at+jwt")
    with pytest.raises(ConfigError):
        verify(token, es_key, algorithms=["ES256", "NoNe"])


def test_hs256_with_the_ec_public_key_as_secret_is_rejected(es_key: SigningKey) -> None:
    public = es_key.public_jwk()
    header = segment({"alg": "HS256", "kid": es_key.kid, "typ": "at+jwt"})
    body = segment(claims())
    for secret in (
        json.dumps(public).encode(),
        b64url_decode(public["x"]) + b64url_decode(public["y"]),
    ):
        mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
        token = f"{header}.{body}.{b64url(mac)}"
        with pytest.raises(TokenInvalid) as exc:
            verify(token, es_key, algorithms=["ES256", "HS256"])
        assert "cannot be used with a 'EC' key" in reason(exc)


def test_hs256_verifies_with_an_oct_key_configured_by_the_caller() -> None:
    secret = bytes(range(32))
    header = segment({"alg": "HS256", "kid": "ext", "typ": "JWT"})
    body = segment(claims())
    mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    token = f"{header}.{body}.{b64url(mac)}"
    keys = JwksKeys([{"kty": "oct", "kid": "ext", "k": b64url(secret)}], allow_symmetric=True)
    got = verify_jwt(
        token, keys=keys, algorithms=["HS256"], typ="JWT", issuer=ISS, audience=AUD, now=NOW
    )
    assert got.claims["sub"] == "agent-1"
    short = JwksKeys([{"kty": "oct", "kid": "ext", "k": b64url(secret[:31])}], allow_symmetric=True)
    with pytest.raises(TokenInvalid):
        verify_jwt(
            token, keys=short, algorithms=["HS256"], typ="JWT", issuer=ISS, audience=AUD, now=NOW
        )


def test_alg_outside_the_allow_list_is_rejected(ed_key: SigningKey) -> None:
    token = sign_jwt(claims(), ed_key, typ="at+jwt")
    with pytest.raises(TokenInvalid) as exc:
        verify(token, ed_key, algorithms=["ES256"])
    assert "not allowed" in reason(exc)


def test_alg_must_match_the_key_alg_member(es_key: SigningKey) -> None:
    token = sign_jwt(claims(), es_key, typ="at+jwt")
    jwk = {**es_key.public_jwk(), "alg": "ES384"}
    with pytest.raises(TokenInvalid) as exc:
        verify(token, es_key, keys=JwksKeys([jwk]), algorithms=["ES256", "ES384"])
    assert "key is for" in reason(exc)


def test_key_with_use_enc_is_not_a_signature_key(es_key: SigningKey) -> None:
    token = sign_jwt(claims(), es_key, typ="at+jwt")
    with pytest.raises(TokenInvalid):
        verify(token, es_key, keys=JwksKeys([{**es_key.public_jwk(), "use": "enc"}]))


def test_unknown_kid_is_rejected(es_key: SigningKey) -> None:
    other = generate_signing_key("ES256")
    token = sign_jwt(claims(), other, typ="at+jwt")
    with pytest.raises(TokenInvalid) as exc:
        verify(token, es_key)
    assert "no key for kid" in reason(exc)


def test_signature_by_another_key_under_a_known_kid_is_rejected(es_key: SigningKey) -> None:
    impostor = generate_signing_key("ES256")
    forged = SigningKey(kid=es_key.kid, alg="ES256", private_jwk=impostor.private_jwk)
    token = sign_jwt(claims(), forged, typ="at+jwt")
    with pytest.raises(TokenInvalid) as exc:
        verify(token, es_key)
    assert reason(exc) == "signature does not verify"


# --------------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jwk", {"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}),
        ("jku", "https://attacker.example/jwks.json"),
        ("x5u", "https://attacker.example/cert.pem"),
        ("x5c", ["MIIB"]),
        ("crit", ["exp"]),
        ("b64", False),
    ],
)
def test_dangerous_headers_are_rejected_in_access_tokens(
    es_key: SigningKey, name: str, value: Any
) -> None:
    header = {"alg": "ES256", "kid": es_key.kid, "typ": "at+jwt", name: value}
    token = sign_compact(header, claims(), es_key)
    with pytest.raises(TokenInvalid) as exc:
        verify(token, es_key)
    assert name in reason(exc) or "unencoded" in reason(exc)


def test_embedded_jwk_of_the_real_key_is_still_rejected(es_key: SigningKey) -> None:
    header = {"alg": "ES256", "kid": es_key.kid, "typ": "at+jwt", "jwk": es_key.public_jwk()}
    with pytest.raises(TokenInvalid):
        verify(sign_compact(header, claims(), es_key), es_key)


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+JWT"])
def test_typ_is_compared_as_a_media_type(es_key: SigningKey, typ: str) -> None:
    token = sign_jwt(claims(), es_key, typ=typ)
    assert verify(token, es_key).claims["sub"] == "agent-1"


@pytest.mark.parametrize("typ", ["JWT", "dpop+jwt", "application/jwt", "at+jwt2"])
def test_wrong_typ_is_rejected(es_key: SigningKey, typ: str) -> None:
    with pytest.raises(TokenInvalid) as exc:
        verify(sign_jwt(claims(), es_key, typ=typ), es_key)
    assert "typ" in reason(exc)


def test_missing_typ_is_rejected_when_a_typ_is_expected(es_key: SigningKey) -> None:
    token = sign_compact({"alg": "ES256", "kid": es_key.kid}, claims(), es_key)
    with pytest.raises(TokenInvalid):
        verify(token, es_key)
    assert verify(token, es_key, typ=None).claims["sub"] == "agent-1"


def test_typ_matches_helper() -> None:
    assert typ_matches("application/DPoP+JWT", "dpop+jwt")
    assert not typ_matches(None, "jwt")
    assert not typ_matches("application/at+jwt", "jwt")


# ---------------------------------------------------------------------------------- claims


def test_missing_aud_is_rejected_when_an_audience_is_expected(es_key: SigningKey) -> None:
    token = sign_jwt(claims(aud=None), es_key, typ="at+jwt")
    with pytest.raises(TokenInvalid) as exc:
        verify(token, es_key)
    assert "aud" in reason(exc)
    assert verify(token, es_key, audience=None).claims["sub"] == "agent-1"


@pytest.mark.parametrize(
    ("aud", "expected", "ok"),
    [
        ([AUD, "other"], AUD, True),
        ("other", AUD, False),
        (["other"], AUD, False),
        ([], AUD, False),
        ([AUD, 3], AUD, False),
        (AUD, ["x", AUD], True),
    ],
)
def test_aud_string_or_array(es_key: SigningKey, aud: Any, expected: Any, ok: bool) -> None:
    token = sign_jwt(claims(aud=aud), es_key, typ="at+jwt")
    if ok:
        assert verify(token, es_key, audience=expected).claims["aud"] == aud
    else:
        with pytest.raises(TokenInvalid):
            verify(token, es_key, audience=expected)


def test_wrong_issuer_is_rejected(es_key: SigningKey) -> None:
    with pytest.raises(TokenInvalid) as exc:
        verify(sign_jwt(claims(iss="https://evil.example"), es_key, typ="at+jwt"), es_key)
    assert "iss" in reason(exc)


def test_exp_is_required_by_default(es_key: SigningKey) -> None:
    token = sign_jwt(claims(exp=None), es_key, typ="at+jwt")
    with pytest.raises(TokenInvalid) as exc:
        verify(token, es_key)
    assert "exp" in reason(exc)
    assert verify(token, es_key, require=()).claims["sub"] == "agent-1"


def test_expired_token_is_rejected_after_the_leeway(es_key: SigningKey) -> None:
    token = sign_jwt(claims(exp=NOW - 30), es_key, typ="at+jwt")
    assert verify(token, es_key)  # inside the 60 s leeway
    with pytest.raises(TokenInvalid) as exc:
        verify(token, es_key, leeway=0)
    assert reason(exc) == "token expired"
    with pytest.raises(TokenInvalid):
        verify(sign_jwt(claims(exp=NOW - 61), es_key, typ="at+jwt"), es_key)


def test_leeway_is_capped_at_60_seconds(es_key: SigningKey) -> None:
    with pytest.raises(ConfigError):
        verify(sign_jwt(claims(), es_key, typ="at+jwt"), es_key, leeway=61)


def test_nbf_in_the_future_is_rejected(es_key: SigningKey) -> None:
    assert verify(sign_jwt(claims(nbf=NOW + 60), es_key, typ="at+jwt"), es_key)
    with pytest.raises(TokenInvalid) as exc:
        verify(sign_jwt(claims(nbf=NOW + 61), es_key, typ="at+jwt"), es_key)
    assert "nbf" in reason(exc)


def test_iat_in_the_future_is_rejected(es_key: SigningKey) -> None:
    with pytest.raises(TokenInvalid) as exc:
        verify(sign_jwt(claims(iat=NOW + 61), es_key, typ="at+jwt"), es_key)
    assert "iat" in reason(exc)


@pytest.mark.parametrize("exp", ["1800000600", True, None])
def test_non_numeric_exp_is_rejected(es_key: SigningKey, exp: Any) -> None:
    body = {**claims(), "exp": exp}
    with pytest.raises(TokenInvalid):
        verify(sign_jwt(body, es_key, typ="at+jwt"), es_key)


# ------------------------------------------------------------------------------- malformed


def _parts(es_key: SigningKey) -> list[str]:
    return sign_jwt(claims(), es_key, typ="at+jwt").split(".")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: ".".join(p[:2]),
        lambda p: ".".join([*p, ""]),
        lambda p: ".".join([*p, "e30", "e30"]),
        lambda p: "",
        lambda p: f"{p[0]}=.{p[1]}.{p[2]}",
        lambda p: f"{p[0]}.{p[1]}.{p[2]}==",
        lambda p: f"{p[0]}.{p[1]} .{p[2]}",
        lambda p: f"{p[0]}.{p[1].replace('-', '+').replace('_', '/')}x.{p[2]}",
        lambda p: f"{b64url(b'not json')}.{p[1]}.{p[2]}",
        lambda p: f"{b64url(b'[1]')}.{p[1]}.{p[2]}",
        lambda p: f"{b64url(bytes([0xFF, 0xFE]))}.{p[1]}.{p[2]}",
        lambda p: f"{p[0]}.{b64url(b'not json')}.{p[2]}",
    ],
)
def test_malformed_tokens_are_rejected(es_key: SigningKey, mangle: Any) -> None:
    with pytest.raises(TokenInvalid):
        verify(mangle(_parts(es_key)), es_key)


def test_duplicate_header_members_are_rejected(es_key: SigningKey) -> None:
    raw = f'{{"alg":"ES256","kid":"{es_key.kid}","typ":"at+jwt","typ":"JWT"}}'
    h = b64url(raw.encode())
    _, p, _ = _parts(es_key)
    # The signature cannot match, but parsing must fail before any key is used.
    with pytest.raises(TokenInvalid) as exc:
        verify(f"{h}.{p}.AAAA", es_key)
    assert "duplicate" in reason(exc)


def _der(r: int, s: int) -> bytes:
    def integer(v: int) -> bytes:
        raw = v.to_bytes((v.bit_length() + 8) // 8, "big")
        return b"\x02" + bytes([len(raw)]) + raw

    body = integer(r) + integer(s)
    return b"\x30" + bytes([len(body)]) + body


def test_der_encoded_ecdsa_signature_is_rejected(es_key: SigningKey) -> None:
    h, p, s = _parts(es_key)
    raw = b64url_decode(s)
    der = _der(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    with pytest.raises(TokenInvalid) as exc:
        verify(f"{h}.{p}.{b64url(der)}", es_key)
    assert "64 raw bytes" in reason(exc)
    padded = b64url(raw + bytes(1))
    with pytest.raises(TokenInvalid):
        verify(f"{h}.{p}.{padded}", es_key)
    with pytest.raises(TokenInvalid):
        verify(f"{h}.{p}.{b64url(raw[:63])}", es_key)


def test_tampered_payload_is_rejected(es_key: SigningKey) -> None:
    h, _, s = _parts(es_key)
    with pytest.raises(TokenInvalid) as exc:
        verify(f"{h}.{segment(claims(sub='admin'))}.{s}", es_key)
    assert reason(exc) == "signature does not verify"


def test_b64url_decode_is_strict() -> None:
    assert b64url_decode("Zm9v") == b"foo"
    assert b64url_decode("") == b""
    for bad in ("Zm9v=", "Zm 9v", "Zm+v", "Zm9vA", "AB"):
        with pytest.raises(ValueError, match="base64url"):
            b64url_decode(bad)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_single_character_change_is_rejected(es_key: SigningKey, data: st.DataObject) -> None:
    token = sign_jwt(claims(), es_key, typ="at+jwt")
    index = data.draw(st.integers(0, len(token) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "
    char = data.draw(st.sampled_from([c for c in alphabet if c != token[index]]))
    with pytest.raises(TokenInvalid):
        verify(token[:index] + char + token[index + 1 :], es_key)


# -------------------------------------------------------------------------- opaque errors


def test_every_failure_is_one_opaque_error(es_key: SigningKey) -> None:
    good = sign_jwt(claims(), es_key, typ="at+jwt")
    failures = [
        "garbage",
        sign_jwt(claims(exp=NOW - 3600), es_key, typ="at+jwt"),
        sign_jwt(claims(aud="x"), es_key, typ="at+jwt"),
        sign_jwt(claims(), generate_signing_key("ES256"), typ="at+jwt"),
        good[:-4] + "AAAA",
    ]
    errors = []
    for token in failures:
        with pytest.raises(TokenInvalid) as exc:
            verify(token, es_key)
        errors.append(exc.value)
    assert {(e.code, str(e), e.message) for e in errors} == {
        ("invalid_token", "The token is invalid", "The token is invalid")
    }
    assert len({e.detail for e in errors}) == len(errors)
    assert all(isinstance(e, Unauthenticated) and e.status == 401 for e in errors)


# ---------------------------------------------------------------------------------- JWKS


def test_jwks_keys_refuses_ambiguous_or_unsafe_sets(es_key: SigningKey) -> None:
    pub = es_key.public_jwk()
    with pytest.raises(JwksInvalid):
        JwksKeys([pub, dict(pub)])
    with pytest.raises(JwksInvalid):
        JwksKeys([es_key.private_jwk | {"kid": "p"}])
    secret = {"kty": "oct", "kid": "s", "k": b64url(bytes(32))}
    with pytest.raises(JwksInvalid) as mixed:
        JwksKeys([pub, secret], allow_symmetric=True)
    assert "mixes" in str(mixed.value.detail)
    with pytest.raises(JwksInvalid) as fetched:
        JwksKeys.from_jwks({"keys": [secret]})  # a JWKS document never carries secrets
    assert "symmetric" in str(fetched.value.detail)
    with pytest.raises(JwksInvalid):
        JwksKeys.from_jwks({"keys": "nope"})


def test_jwks_keys_lookup(es_key: SigningKey, ed_key: SigningKey) -> None:
    one = JwksKeys.from_jwks({"keys": [es_key.public_jwk()]})
    assert one(es_key.kid, "ES256") == es_key.public_jwk()
    assert one(None, "ES256") == es_key.public_jwk()  # a single key needs no kid
    assert one("other", "ES256") is None
    two = JwksKeys([es_key.public_jwk(), ed_key.public_jwk()])
    assert two(None, "ES256") is None  # ambiguous without kid


def test_a_plain_function_is_a_key_lookup(es_key: SigningKey) -> None:
    seen: list[tuple[str | None, str]] = []

    def lookup(kid: str | None, alg: str) -> dict[str, Any] | None:
        seen.append((kid, alg))
        return es_key.public_jwk() if kid == es_key.kid else None

    token = sign_jwt(claims(), es_key, typ="at+jwt")
    assert verify(token, es_key, keys=lookup).claims["jti"] == "j1"
    assert seen == [(es_key.kid, "ES256")]


def test_rsa_keys_below_2048_bits_are_refused() -> None:
    n = base64.urlsafe_b64encode((2**1023 + 1).to_bytes(128, "big")).decode().rstrip("=")
    token = f"{segment({'alg': 'RS256'})}.{segment(claims())}.{b64url(bytes(128))}"
    with pytest.raises(TokenInvalid) as exc:
        verify_jws_signature_only(
            token, keys=JwksKeys([{"kty": "RSA", "n": n, "e": "AQAB"}]), algorithms=["RS256"]
        )
    assert "too small" in reason(exc)
