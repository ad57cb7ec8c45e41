from __future__ import annotations

import pytest

from tessera.crypto.canonical import argument_hash, canonical_json
from tessera.crypto.hashing import hash_password_secret, verify_password_secret
from tessera.crypto.keys import (
    KeySealError,
    generate_signing_key,
    jwk_thumbprint,
    new_kek,
    open_private_key,
    parse_kek,
    seal_private_key,
    validate_public_jwk,
)
from tessera.errors import ConfigError, InvalidInput
from tessera.signals.events import decode_consistency_token, encode_consistency_token


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_seal_round_trip_and_tamper_detection(alg: str) -> None:
    key = generate_signing_key(alg)  # type: ignore[arg-type]
    kek = parse_kek(new_kek())
    blob = seal_private_key(key, kek)
    assert open_private_key(blob, kek, key.kid) == key
    assert b'"d"' not in blob
    with pytest.raises(KeySealError):
        open_private_key(blob, parse_kek(new_kek()), key.kid)  # wrong KEK
    with pytest.raises(KeySealError):
        open_private_key(blob, kek, "another-kid")  # moved to another row
    flipped = bytearray(blob)
    flipped[-1] ^= 1
    with pytest.raises(KeySealError):
        open_private_key(bytes(flipped), kek, key.kid)


def test_kid_is_the_rfc7638_thumbprint_and_public_jwk_has_no_private_part() -> None:
    key = generate_signing_key()
    pub = key.public_jwk()
    assert "d" not in pub
    assert pub["kid"] == key.kid == jwk_thumbprint(pub)
    assert pub["alg"] == "ES256"
    assert pub["use"] == "sig"


def test_validate_public_jwk() -> None:
    key = generate_signing_key()
    public, thumb = validate_public_jwk(key.public_jwk())
    assert thumb == key.kid
    assert "d" not in public
    with pytest.raises(InvalidInput, match="private"):
        validate_public_jwk(key.private_jwk)
    with pytest.raises(InvalidInput):
        validate_public_jwk({"kty": "RSA", "n": "x", "e": "AQAB"})
    with pytest.raises(InvalidInput):
        validate_public_jwk({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"})


def test_parse_kek_accepts_hex_and_base64url_only_of_32_bytes() -> None:
    assert parse_kek("00" * 32) == bytes(32)
    assert len(parse_kek(new_kek())) == 32
    with pytest.raises(ConfigError):
        parse_kek("00" * 16)


def test_password_secret_hash() -> None:
    stored = hash_password_secret("s3cret")
    assert verify_password_secret("s3cret", stored)
    assert not verify_password_secret("s3cret!", stored)
    assert not verify_password_secret("s3cret", "garbage")


def test_argument_hash_is_canonical() -> None:
    a = argument_hash("fs", "read", {"b": 1, "a": [1.0, "x"]})
    b = argument_hash("fs", "read", {"a": [1, "x"], "b": 1})
    assert a == b
    assert a.startswith("sha256:")
    assert argument_hash("fs", "read", {"a": 2}) != a
    assert canonical_json({"b": 1, "a": 2}) == b'{"a":2,"b":1}'


def test_consistency_token_round_trip() -> None:
    for seq in (0, 1, 12345, 2**40):
        assert decode_consistency_token(encode_consistency_token(seq)) == seq
    for bad in ("", "ct1.", "ct1.@@@", "xx", "ct1." + "A" * 40):
        with pytest.raises(InvalidInput):
            decode_consistency_token(bad)
