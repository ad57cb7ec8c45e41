"""tessera.crypto.dpop: RFC 9449 proofs, and the nonce/invalid distinction."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tessera.crypto.dpop import (
    DpopProof,
    access_token_hash,
    create_proof,
    jwk_thumbprint_of,
    normalize_htu,
    verify_proof,
)
from tessera.crypto.errors import DpopNonceRequired, DpopProofInvalid
from tessera.crypto.hashing import b64url
from tessera.crypto.jws import b64url_decode, sign_compact
from tessera.crypto.keys import SigningKey, generate_signing_key, jwk_thumbprint
from tessera.crypto.nonce import DpopNonceIssuer
from tessera.errors import ConfigError

NOW = 1_800_000_000
HTU = "https://as.example/token"


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return generate_signing_key("ES256")


def proof(key: SigningKey, **over: Any) -> str:
    kwargs: dict[str, Any] = {"htm": "POST", "htu": HTU, "iat": NOW}
    kwargs.update(over)
    return create_proof(key, **kwargs)


def check(token: str, **over: Any) -> DpopProof:
    kwargs: dict[str, Any] = {"htm": "POST", "htu": HTU, "now": NOW}
    kwargs.update(over)
    return verify_proof(token, **kwargs)


def forged(
    key: SigningKey, header: dict[str, Any] | None = None, claims: dict[str, Any] | None = None
) -> str:
    """A proof with a hand-made header or claims, signed by ``key``."""
    h: dict[str, Any] = {
        "typ": "dpop+jwt",
        "alg": key.alg,
        "jwk": {k: v for k, v in key.public_jwk().items() if k in ("kty", "crv", "x", "y")},
    }
    c: dict[str, Any] = {"jti": "j-1", "htm": "POST", "htu": HTU, "iat": NOW}
    h.update(header or {})
    c.update(claims or {})
    return sign_compact(
        {k: v for k, v in h.items() if v is not None},
        {k: v for k, v in c.items() if v is not None},
        key,
    )


def detail(exc: pytest.ExceptionInfo[Any]) -> str:
    return str(exc.value.detail)


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_round_trip_returns_the_proof_fields(alg: str) -> None:
    k = generate_signing_key(alg)  # type: ignore[arg-type]
    got = check(proof(k, jti="abc", nonce="n-1"))
    assert got == DpopProof(jkt=k.kid, jti="abc", iat=float(NOW), htm="POST", htu=HTU, nonce="n-1")
    assert got.jkt == jwk_thumbprint(k.private_jwk)


def test_thumbprint_matches_keys_module(key: SigningKey) -> None:
    assert jwk_thumbprint_of(key.public_jwk()) == jwk_thumbprint(key.private_jwk) == key.kid


def test_proof_header_carries_only_the_public_key(key: SigningKey) -> None:
    header = json.loads(b64url_decode(proof(key).split(".")[0]))
    assert header["typ"] == "dpop+jwt"
    assert set(header["jwk"]) == {"kty", "crv", "x", "y"}


def test_replayed_proof_verifies_again_with_the_same_jti(key: SigningKey) -> None:
    token = proof(key)
    first, second = check(token), check(token)
    assert first.jti == second.jti
    assert len(first.jti) >= 16
    assert proof(key) != token  # fresh jti each time


@pytest.mark.parametrize("typ", ["jwt", "at+jwt", None])
def test_wrong_typ_is_rejected(key: SigningKey, typ: str | None) -> None:
    with pytest.raises(DpopProofInvalid) as exc:
        check(forged(key, header={"typ": typ}))
    assert "typ" in detail(exc)


def test_typ_as_media_type_is_accepted(key: SigningKey) -> None:
    assert check(forged(key, header={"typ": "application/DPoP+JWT"})).jti == "j-1"


def test_alg_outside_the_allow_list_is_rejected() -> None:
    ed = generate_signing_key("EdDSA")
    with pytest.raises(DpopProofInvalid) as exc:
        check(proof(ed), algorithms=("ES256",))
    assert "not allowed" in detail(exc)


@pytest.mark.parametrize("alg", ["none", "NONE"])
def test_alg_none_is_rejected(key: SigningKey, alg: str) -> None:
    h, p, s = forged(key).split(".")
    header = json.loads(b64url_decode(h))
    header["alg"] = alg
    with pytest.raises(DpopProofInvalid):
        check(f"{b64url(json.dumps(header).encode())}.{p}.{s}", algorithms=("ES256", alg))


def test_missing_jwk_is_rejected(key: SigningKey) -> None:
    with pytest.raises(DpopProofInvalid) as exc:
        check(forged(key, header={"jwk": None}))
    assert "jwk" in detail(exc)


@pytest.mark.parametrize("member", ["d", "p", "k"])
def test_private_key_material_in_the_jwk_is_rejected(key: SigningKey, member: str) -> None:
    jwk = {k: v for k, v in key.public_jwk().items() if k in ("kty", "crv", "x", "y")}
    jwk[member] = key.private_jwk["d"]
    with pytest.raises(DpopProofInvalid) as exc:
        check(forged(key, header={"jwk": jwk}))
    assert "private" in detail(exc)


def test_symmetric_jwk_is_rejected(key: SigningKey) -> None:
    with pytest.raises(DpopProofInvalid):
        check(forged(key, header={"jwk": {"kty": "oct", "k": b64url(bytes(32))}}))


def test_jku_or_kid_lookup_headers_are_rejected(key: SigningKey) -> None:
    with pytest.raises(DpopProofInvalid):
        check(forged(key, header={"jku": "https://attacker.example/jwks"}))


def test_signature_by_another_key_is_rejected(key: SigningKey) -> None:
    other = generate_signing_key("ES256")
    victim_jwk = {k: v for k, v in key.public_jwk().items() if k in ("kty", "crv", "x", "y")}
    with pytest.raises(DpopProofInvalid) as exc:
        check(forged(other, header={"jwk": victim_jwk}))
    assert detail(exc) == "signature does not verify"


@pytest.mark.parametrize("htm", ["GET", "post", "PUT"])
def test_wrong_htm_is_rejected(key: SigningKey, htm: str) -> None:
    with pytest.raises(DpopProofInvalid) as exc:
        check(proof(key), htm=htm)
    assert "htm" in detail(exc)


@pytest.mark.parametrize(
    "request_uri",
    [
        "https://as.example/token?client=1",
        "https://as.example/token#frag",
        "HTTPS://AS.EXAMPLE/token",
        "https://as.example:443/token",
    ],
)
def test_htu_ignores_query_fragment_case_and_default_port(
    key: SigningKey, request_uri: str
) -> None:
    assert check(proof(key), htu=request_uri).htu == HTU


@pytest.mark.parametrize(
    "request_uri",
    [
        "https://as.example/token/",
        "https://as.example/Token",
        "http://as.example/token",
        "https://as.example:8443/token",
        "https://rs.example/token",
    ],
)
def test_wrong_htu_is_rejected(key: SigningKey, request_uri: str) -> None:
    with pytest.raises(DpopProofInvalid) as exc:
        check(proof(key), htu=request_uri)
    assert "htu" in detail(exc)


def test_normalize_htu() -> None:
    assert normalize_htu("HTTPS://Host.Example:443?q#f") == "https://host.example/"
    assert normalize_htu("http://[::1]:8080/a?b") == "http://[::1]:8080/a"


@pytest.mark.parametrize(
    ("iat", "ok"),
    [
        (NOW - 300, True),
        (NOW + 60, True),
        (NOW - 301, False),
        (NOW + 61, False),
    ],
)
def test_iat_window(key: SigningKey, iat: int, ok: bool) -> None:
    token = proof(key, iat=iat)
    if ok:
        assert check(token).iat == iat
    else:
        with pytest.raises(DpopProofInvalid) as exc:
            check(token)
        assert "iat" in detail(exc)


@pytest.mark.parametrize("claim", ["jti", "htm", "htu", "iat"])
def test_required_claims(key: SigningKey, claim: str) -> None:
    with pytest.raises(DpopProofInvalid) as exc:
        check(forged(key, claims={claim: None}))
    assert claim in detail(exc)


def test_ath_must_hash_the_presented_access_token(key: SigningKey) -> None:
    token = proof(key, access_token="at-1")
    assert check(token, access_token="at-1").jti
    with pytest.raises(DpopProofInvalid) as exc:
        check(token, access_token="at-2")
    assert "ath" in detail(exc)
    with pytest.raises(DpopProofInvalid):
        check(proof(key), access_token="at-1")  # no ath at all


def test_ath_value_is_rfc_9449_example() -> None:
    # RFC 9449 §7.1 example access token and its ath.
    assert access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU") == (
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    )


def test_cnf_jkt_must_match_when_expected(key: SigningKey) -> None:
    assert check(proof(key), expected_jkt=key.kid).jkt == key.kid
    with pytest.raises(DpopProofInvalid) as exc:
        check(proof(key), expected_jkt=generate_signing_key("ES256").kid)
    assert "bound" in detail(exc)


def test_nonce_problems_are_use_dpop_nonce_not_invalid_proof(key: SigningKey) -> None:
    issuer = DpopNonceIssuer(b"s" * 32)

    def nonce_check(n: str | None) -> bool:
        return issuer.check(n, NOW)

    with pytest.raises(DpopNonceRequired) as missing:
        check(proof(key), nonce_check=nonce_check)
    assert missing.value.code == "use_dpop_nonce"
    with pytest.raises(DpopNonceRequired) as stale:
        check(proof(key, nonce=issuer.issue(NOW - 900)), nonce_check=nonce_check)
    assert stale.value.detail == "nonce refused"
    good = check(proof(key, nonce=issuer.issue(NOW)), nonce_check=nonce_check)
    assert good.nonce == issuer.issue(NOW)


def test_bad_proof_is_invalid_even_when_the_nonce_is_missing(key: SigningKey) -> None:
    bad = proof(key)[:-4] + "AAAA"
    with pytest.raises(DpopProofInvalid) as exc:
        check(bad, nonce_check=lambda n: False)
    assert exc.value.code == "invalid_dpop_proof"


def test_stale_proof_without_nonce_is_invalid_not_use_nonce(key: SigningKey) -> None:
    with pytest.raises(DpopProofInvalid) as exc:
        check(proof(key, iat=NOW - 3600), nonce_check=lambda n: False)
    assert "iat" in detail(exc)


def test_errors_are_opaque(key: SigningKey) -> None:
    seen = set()
    for token, kwargs in [("x", {}), (proof(key), {"htm": "GET"}), (proof(key, iat=0), {})]:
        with pytest.raises(DpopProofInvalid) as exc:
            check(token, **kwargs)
        seen.add((exc.value.code, str(exc.value)))
    assert seen == {("invalid_dpop_proof", "The DPoP proof is invalid")}


def test_leeway_above_60_seconds_is_refused(key: SigningKey) -> None:
    with pytest.raises(ConfigError):
        check(proof(key), leeway=120)
