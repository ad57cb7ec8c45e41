"""Wycheproof JOSE vectors (C2SP/wycheproof ``testvectors_v1``) through ``tessera.crypto.jws``.

Each test group's key is the trusted key of an issuer, and the algorithm allow-list is that
key's: its ``alg`` member when it names a JWS algorithm, otherwise every algorithm its key
type and curve can serve (corpora README). Valid vectors must verify, invalid ones must raise
``TokenInvalid`` (or ``JwksInvalid`` when the key set itself is refused).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tessera.crypto.errors import JwksInvalid, TokenInvalid
from tessera.crypto.jws import ALGORITHMS, JwksKeys, verify_jws_signature_only

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "wycheproof-jose"
JWS_FILE = CORPUS / "json_web_signature_test.json"
JWK_FILE = CORPUS / "json_web_key_test.json"

_KEY_ALG = (
    "the group's key says alg {key} but the vector is {token}; honouring a key's alg member "
    "(RFC 8725 §3.1) is the rule that rejects the WrongPrimitive vectors 332-340, so both "
    "cannot pass"
)
_SAME_AS_357 = (
    "byte-identical token and key to tcId 357, which the corpus marks valid; the padding this "
    "vector was meant to carry is not in the file"
)
_LENIENT_B64 = (
    "valid only for a decoder that skips a '?' outside the base64url alphabet and MACs a "
    "different string than it received; we reject non-alphabet characters (RFC 7515 §2)"
)
# (file, tcId) -> why our verifier's result differs from the corpus on purpose.
UNSUPPORTED: dict[tuple[str, int], str] = {
    ("jws", 346): _KEY_ALG.format(key="PS256", token="PS384"),
    ("jws", 350): _KEY_ALG.format(key="PS256", token="PS384"),
    ("jws", 347): _KEY_ALG.format(key="ES521 (not a JWS alg)", token="ES512"),
    ("jws", 351): _KEY_ALG.format(key="ES521 (not a JWS alg)", token="ES512"),
    ("jws", 367): _SAME_AS_357,
    ("jws", 370): _SAME_AS_357,
    ("jws", 372): _LENIENT_B64,
    ("jws", 373): _LENIENT_B64,
}


def allow_list(jwk: Mapping[str, Any]) -> set[str]:
    """The algorithms an issuer configured with this key accepts."""
    if jwk.get("alg") in ALGORITHMS:
        return {str(jwk["alg"])}
    return {
        name
        for name, spec in ALGORITHMS.items()
        if spec.kty == jwk.get("kty") and (not spec.curves or jwk.get("crv") in spec.curves)
    }


def _vectors() -> Iterator[Any]:
    for label, path in (("jws", JWS_FILE), ("jwk", JWK_FILE)):
        if not path.exists():
            continue
        for group in json.loads(path.read_text())["testGroups"]:
            key = group.get("public") or group.get("private")
            # The JWS file gives one key per group; the JWK file a JWK Set.
            keyset = key if "keys" in key else {"keys": [key]}
            for case in group["tests"]:
                marks = []
                reason = UNSUPPORTED.get((label, case["tcId"]))
                if reason:
                    marks.append(pytest.mark.xfail(strict=True, reason=reason))
                yield pytest.param(
                    keyset, case, marks=marks, id=f"{label}-{case['tcId']}-{case['comment']}"
                )


def _accepts(keyset: Mapping[str, Any], token: Any) -> bool:
    try:
        # A group whose key is a secret models a caller that configured that secret itself.
        symmetric = any(k.get("kty") == "oct" for k in keyset["keys"])
        keys = JwksKeys.from_jwks(keyset, allow_symmetric=symmetric)
        algorithms = set().union(*(allow_list(k) for k in keyset["keys"]))
        verify_jws_signature_only(token, keys=keys, algorithms=algorithms)
    except (TokenInvalid, JwksInvalid):
        return False
    return True


pytestmark = pytest.mark.skipif(
    not JWS_FILE.exists(), reason=f"Wycheproof corpus not found at {CORPUS}"
)


@pytest.mark.parametrize(("keyset", "case"), list(_vectors()))
def test_vector(keyset: Mapping[str, Any], case: Mapping[str, Any]) -> None:
    assert _accepts(keyset, case["jws"]) == (case["result"] == "valid")


def test_every_vector_is_run() -> None:
    data = json.loads(JWS_FILE.read_text())
    run = [p for p in _vectors() if p.id.startswith("jws-")]
    assert len(run) == data["numberOfTests"] == 401
    assert all(k[0] in {"jws", "jwk"} for k in UNSUPPORTED)
