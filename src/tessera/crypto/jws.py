"""JWT signing and strict JWS/JWT verification (RFC 7515, 7518, 7519, 8725).

Two layers, in the spirit of pyca/cryptography:

- the safe API: ``sign_jwt`` and ``verify_jwt`` (signature *and* claims);
- the lower layer, named for what it does *not* do: ``verify_jws_signature_only`` (no claim
  checks, for conformance runners and callers that check claims themselves) and
  ``verify_jws_embedded_key`` (trusts the key in the header; only a DPoP proof may do that).

Every failure raises one opaque ``TokenInvalid``; its ``detail`` names the check that failed,
for the audit record. Tessera signs only ES256 and EdDSA; it verifies ES256/384/512, EdDSA,
RS256/384/512, PS256/384/512, and HS256/384/512 with an ``oct`` key the caller configured.
"""

from __future__ import annotations

import base64
import hmac
import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ec import ECDSA, EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from tessera.crypto.errors import JwksInvalid, TokenInvalid
from tessera.crypto.hashing import b64url
from tessera.crypto.keys import SigningKey
from tessera.errors import ConfigError, InvalidInput

__all__ = [
    "ALGORITHMS",
    "JwksKeys",
    "KeyLookup",
    "VerifiedJws",
    "VerifiedJwt",
    "b64url_decode",
    "check_time_claims",
    "parse_json_object",
    "sign_compact",
    "sign_jwt",
    "typ_matches",
    "verify_jws_embedded_key",
    "verify_jws_signature_only",
    "verify_jwt",
    "verify_signature",
]

MAX_TOKEN_BYTES = 16 * 1024
MAX_LEEWAY_SECONDS = 60
# RFC 8725 §3.1 / DESIGN 9: a key found by URL or carried in a certificate chain is never
# trusted; an embedded ``jwk`` only where the protocol defines it (DPoP).
_FORBIDDEN_HEADERS = ("jku", "x5u", "x5c")
_CACHE_LIMIT = 256


class KeyLookup(Protocol):
    """Resolves a token's ``kid`` (and ``alg``) to a public JWK, or None if unknown.

    The lookup is the trust decision: it must return only keys of the issuer being verified
    (Tessera's own JWKS, or a configured issuer's keys), never keys named by the token.
    """

    def __call__(self, kid: str | None, alg: str) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class VerifiedJws:
    """A compact JWS whose signature verified; ``payload`` is the raw bytes."""

    header: dict[str, Any]
    payload: bytes
    alg: str
    jwk: Mapping[str, Any]


@dataclass(frozen=True)
class VerifiedJwt:
    """A JWT whose signature and claims verified."""

    header: dict[str, Any]
    claims: dict[str, Any]

    @property
    def alg(self) -> str:
        return str(self.header["alg"])

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


# --------------------------------------------------------------------- algorithms and keys


@dataclass(frozen=True)
class AlgSpec:
    """What a JWS ``alg`` needs from its key (RFC 7518 §3.1, RFC 8037 §3.1)."""

    kty: str
    hash: type[hashes.HashAlgorithm] | None
    curves: tuple[str, ...] = ()
    coord_bytes: int = 0  # ECDSA: the fixed size of R and of S
    pss: bool = False


ALGORITHMS: dict[str, AlgSpec] = {
    "ES256": AlgSpec("EC", hashes.SHA256, ("P-256",), 32),
    "ES384": AlgSpec("EC", hashes.SHA384, ("P-384",), 48),
    "ES512": AlgSpec("EC", hashes.SHA512, ("P-521",), 66),
    "EdDSA": AlgSpec("OKP", None, ("Ed25519", "Ed448")),
    "RS256": AlgSpec("RSA", hashes.SHA256),
    "RS384": AlgSpec("RSA", hashes.SHA384),
    "RS512": AlgSpec("RSA", hashes.SHA512),
    "PS256": AlgSpec("RSA", hashes.SHA256, pss=True),
    "PS384": AlgSpec("RSA", hashes.SHA384, pss=True),
    "PS512": AlgSpec("RSA", hashes.SHA512, pss=True),
    "HS256": AlgSpec("oct", hashes.SHA256),
    "HS384": AlgSpec("oct", hashes.SHA384),
    "HS512": AlgSpec("oct", hashes.SHA512),
}
_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
_COORD_BYTES = {"P-256": 32, "P-384": 48, "P-521": 66}
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
MIN_RSA_BITS = 2048
_B64URL_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")
_B64URL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_CANONICAL_LAST = {2: frozenset(_B64URL_CHARS[::16]), 3: frozenset(_B64URL_CHARS[::4])}


def b64url_decode(segment: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2): alphabet, length and canonical form.

    Rejects padding, whitespace, characters outside the alphabet and non-zero unused bits,
    so one token has exactly one encoding.
    """
    if not _B64URL_ALPHABET.fullmatch(segment):
        raise ValueError("character outside the base64url alphabet")
    rest = len(segment) % 4
    if rest == 1:
        raise ValueError("impossible base64url length")
    # The last character of a partial quantum carries unused bits that must be zero: its
    # alphabet index is then a multiple of 16 (2 chars left) or of 4 (3 chars left).
    if rest and segment[-1] not in _CANONICAL_LAST[rest]:
        raise ValueError("non-canonical base64url (unused bits set)")
    return base64.urlsafe_b64decode(segment + "=" * (4 - rest if rest else 0))


def check_public_only(jwk: Mapping[str, Any]) -> None:
    """A verification key must be a public key: no private or symmetric members."""
    present = [m for m in _PRIVATE_MEMBERS if m in jwk]
    if present:
        raise TokenInvalid(detail=f"key carries private members {present}")


def _member_bytes(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise TokenInvalid(detail=f"key member {name!r} missing or not a string")
    try:
        return b64url_decode(value)
    except ValueError as exc:
        raise TokenInvalid(detail=f"key member {name!r}: {exc}") from None


# ROCA (CVE-2017-15361): a weak key's modulus is, modulo each small prime, a power of 65537.
# Every weak key of 2048 bits or more satisfies this for all primes up to 701.
_ROCA_PRIMES = [p for p in range(3, 702) if all(p % q for q in range(2, math.isqrt(p) + 1))]
_ROCA_POWERS = {}
for _p in _ROCA_PRIMES:
    _seen, _x = {1}, 65537 % _p
    while _x not in _seen:
        _seen.add(_x)
        _x = _x * 65537 % _p
    _ROCA_POWERS[_p] = frozenset(_seen)


def _roca_vulnerable(n: int) -> bool:
    return all(n % p in powers for p, powers in _ROCA_POWERS.items())


def _import_rsa(jwk: Mapping[str, Any]) -> rsa.RSAPublicKey:
    n = int.from_bytes(_member_bytes(jwk, "n"), "big")
    e = int.from_bytes(_member_bytes(jwk, "e"), "big")
    if n.bit_length() < MIN_RSA_BITS:
        raise TokenInvalid(detail=f"RSA key of {n.bit_length()} bits is too small")
    if e < 3 or e % 2 == 0 or e >= n:
        raise TokenInvalid(detail="RSA public exponent is unsafe")
    if _roca_vulnerable(n):
        raise TokenInvalid(detail="RSA key has the ROCA weakness (CVE-2017-15361)")
    return rsa.RSAPublicNumbers(e, n).public_key()


def _import_ec(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey:
    crv = str(jwk.get("crv"))
    x, y = _member_bytes(jwk, "x"), _member_bytes(jwk, "y")
    if len(x) != _COORD_BYTES[crv] or len(y) != _COORD_BYTES[crv]:
        raise TokenInvalid(detail=f"EC coordinates have the wrong length for {crv}")
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(x, "big"), int.from_bytes(y, "big"), _CURVES[crv]
    )
    try:
        return numbers.public_key()  # checks the point is on the curve
    except ValueError:
        raise TokenInvalid(detail="EC point is not on the curve") from None


def _import_okp(jwk: Mapping[str, Any]) -> ed25519.Ed25519PublicKey | ed448.Ed448PublicKey:
    x = _member_bytes(jwk, "x")
    try:
        if jwk.get("crv") == "Ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(x)
        return ed448.Ed448PublicKey.from_public_bytes(x)
    except ValueError:
        raise TokenInvalid(detail="OKP public key is malformed") from None


_NativeKey = (
    rsa.RSAPublicKey
    | ec.EllipticCurvePublicKey
    | ed25519.Ed25519PublicKey
    | ed448.Ed448PublicKey
    | bytes
)
_VERIFIER_CACHE: dict[tuple[str, ...], _NativeKey] = {}


def _verification_key(alg: str, jwk: Mapping[str, Any]) -> _NativeKey:
    """The native key for ``alg``, after every rule that binds a key to an algorithm."""
    spec = ALGORITHMS[alg]
    kty = jwk.get("kty")
    # INVARIANT: the key type comes from the trusted key, so an HMAC alg can never be paired
    # with an EC/RSA/OKP public key, whatever the token says.
    if kty != spec.kty:
        raise TokenInvalid(detail=f"alg {alg} cannot be used with a {kty!r} key")
    if "alg" in jwk and jwk["alg"] != alg:
        raise TokenInvalid(detail=f"key is for {jwk['alg']!r}, token uses {alg}")
    if "use" in jwk and jwk["use"] != "sig":
        raise TokenInvalid(detail=f"key use is {jwk['use']!r}, not 'sig'")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise TokenInvalid(detail=f"key_ops {key_ops!r} do not allow verify")
    if spec.curves and jwk.get("crv") not in spec.curves:
        raise TokenInvalid(detail=f"alg {alg} cannot be used with curve {jwk.get('crv')!r}")
    if kty == "oct":
        secret = _member_bytes(jwk, "k")
        if spec.hash is None or len(secret) < spec.hash().digest_size:
            # RFC 7518 §3.2: an HMAC key at least as long as the hash output.
            raise TokenInvalid(detail=f"HMAC key shorter than {alg} requires")
        return secret
    check_public_only(jwk)
    cache_key = tuple(str(jwk.get(m, "")) for m in ("kty", "crv", "x", "y", "n", "e"))
    native = _VERIFIER_CACHE.get(cache_key)
    if native is None:
        if kty == "RSA":
            native = _import_rsa(jwk)
        elif kty == "EC":
            native = _import_ec(jwk)
        else:
            native = _import_okp(jwk)
        if len(_VERIFIER_CACHE) >= _CACHE_LIMIT:
            _VERIFIER_CACHE.clear()
        _VERIFIER_CACHE[cache_key] = native
    return native


def verify_signature(
    alg: str, jwk: Mapping[str, Any], signing_input: bytes, signature: bytes
) -> None:
    """Check one JWS signature (RFC 7518 §3) or raise ``TokenInvalid``.

    ECDSA signatures must be the raw R||S of exactly twice the coordinate size (§3.4): DER or
    any other length is rejected before the math, closing the malleability class.
    """
    spec = ALGORITHMS[alg]
    native = _verification_key(alg, jwk)
    try:
        if isinstance(native, bytes):
            if spec.hash is None:
                raise TokenInvalid(detail="HMAC needs a hash")
            mac = hmac.new(native, signing_input, spec.hash().name).digest()
            if not hmac.compare_digest(mac, signature):
                raise InvalidSignature
        elif isinstance(native, ec.EllipticCurvePublicKey):
            size = spec.coord_bytes
            if spec.hash is None or len(signature) != 2 * size:
                raise TokenInvalid(detail=f"{alg} signature must be {2 * size} raw bytes")
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            native.verify(encode_dss_signature(r, s), signing_input, ECDSA(spec.hash()))
        elif isinstance(native, rsa.RSAPublicKey):
            if spec.hash is None or len(signature) != (native.key_size + 7) // 8:
                raise TokenInvalid(detail="RSA signature length differs from the modulus")
            pad: padding.AsymmetricPadding = (
                padding.PSS(padding.MGF1(spec.hash()), spec.hash().digest_size)
                if spec.pss
                else padding.PKCS1v15()
            )
            native.verify(signature, signing_input, pad, spec.hash())
        else:
            native.verify(signature, signing_input)
    except InvalidSignature:
        raise TokenInvalid(detail="signature does not verify") from None


class JwksKeys:
    """A ``KeyLookup`` over a fixed key set: an issuer's JWKS or configured HMAC secrets.

    The set is refused as a whole when it is ambiguous (two keys with one ``kid``), mixes
    symmetric secrets with public keys, or holds private members of an asymmetric key.
    HMAC secrets (``kty: oct``) are accepted only with ``allow_symmetric=True``, which a
    caller passes for secrets it configured itself, never for a fetched JWKS.
    Without a ``kid`` in the token, a key is found only when the set holds exactly one.
    """

    def __init__(
        self, keys: Collection[Mapping[str, Any]], *, allow_symmetric: bool = False
    ) -> None:
        by_kid: dict[str, Mapping[str, Any]] = {}
        kinds = set()
        for jwk in keys:
            if not isinstance(jwk, Mapping) or not isinstance(jwk.get("kty"), str):
                raise JwksInvalid(detail="every key needs a string kty")
            if jwk["kty"] == "oct" and not allow_symmetric:
                raise JwksInvalid(detail="symmetric key in a set that may hold only public keys")
            kinds.add(jwk["kty"] == "oct")
            if jwk["kty"] != "oct":
                try:
                    check_public_only(jwk)
                except TokenInvalid as exc:
                    raise JwksInvalid(detail=exc.detail) from None
            kid = jwk.get("kid")
            if kid is not None:
                if not isinstance(kid, str) or kid in by_kid:
                    raise JwksInvalid(detail=f"duplicate or malformed kid {kid!r}")
                by_kid[kid] = jwk
        if len(kinds) > 1:
            raise JwksInvalid(detail="key set mixes symmetric secrets and public keys")
        self._keys = tuple(keys)
        self._by_kid = by_kid

    @classmethod
    def from_jwks(cls, document: Mapping[str, Any], *, allow_symmetric: bool = False) -> JwksKeys:
        """From a JWK Set document (RFC 7517 §5)."""
        keys = document.get("keys") if isinstance(document, Mapping) else None
        if not isinstance(keys, list):
            raise JwksInvalid(detail="a JWK Set needs a 'keys' array")
        return cls(keys, allow_symmetric=allow_symmetric)

    def __call__(self, kid: str | None, alg: str) -> Mapping[str, Any] | None:
        if kid is not None:
            return self._by_kid.get(kid)
        return self._keys[0] if len(self._keys) == 1 else None


# ---------------------------------------------------------------------------------- signing


_SIGNER_CACHE: dict[tuple[str, str], EllipticCurvePrivateKey | Ed25519PrivateKey] = {}


def _private_key(key: SigningKey) -> EllipticCurvePrivateKey | Ed25519PrivateKey:
    cache_key = (key.kid, str(key.private_jwk.get("d", "")))
    native = _SIGNER_CACHE.get(cache_key)
    if native is None:
        native = key.joserfc_key().private_key  # type: ignore[assignment]
        if not isinstance(native, EllipticCurvePrivateKey | Ed25519PrivateKey):
            raise ConfigError(detail=f"unsupported signing key for kid {key.kid!r}")
        if len(_SIGNER_CACHE) >= _CACHE_LIMIT:
            _SIGNER_CACHE.clear()
        _SIGNER_CACHE[cache_key] = native
    return native


def _json_segment(value: Mapping[str, Any]) -> str:
    body = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return b64url(body.encode())


def sign_compact(header: Mapping[str, Any], payload: Mapping[str, Any], key: SigningKey) -> str:
    """Compact JWS of a JSON payload (RFC 7515 §7.1); ``header['alg']`` must be the key's alg.

    ES256 signatures are the raw 64-byte R||S of RFC 7518 §3.4, never DER.
    """
    if header.get("alg") != key.alg:
        raise InvalidInput(detail="header alg must be the signing key's algorithm")
    signing_input = f"{_json_segment(header)}.{_json_segment(payload)}"
    native = _private_key(key)
    if isinstance(native, Ed25519PrivateKey):
        signature = native.sign(signing_input.encode())
    else:
        spec = ALGORITHMS[key.alg]
        size, hash_cls = spec.coord_bytes, spec.hash or hashes.SHA256
        r, s = decode_dss_signature(native.sign(signing_input.encode(), ECDSA(hash_cls())))
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return f"{signing_input}.{b64url(signature)}"


def sign_jwt(
    claims: Mapping[str, Any],
    key: SigningKey,
    *,
    typ: str,
    extra_headers: Mapping[str, Any] | None = None,
) -> str:
    """Sign ``claims`` as a JWT (RFC 7519 §7.1) with header ``alg``, ``kid`` and ``typ``.

    ``extra_headers`` may add members but never replace ``alg``, ``kid`` or ``typ``.
    """
    header: dict[str, Any] = {"alg": key.alg, "kid": key.kid, "typ": typ}
    for name, value in (extra_headers or {}).items():
        if name in header:
            raise InvalidInput(detail=f"extra_headers may not set {name!r}")
        header[name] = value
    return sign_compact(header, claims, key)


# ----------------------------------------------------------------------------- verification


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            # RFC 7515 §5.2: duplicate member names must be rejected (or last-one-wins, which
            # is how two parsers end up disagreeing about one token).
            raise ValueError(f"duplicate member {name!r}")
        out[name] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-JSON number {name}")


def parse_json_object(raw: bytes, what: str) -> dict[str, Any]:
    """Strict JSON object: UTF-8, no duplicate members, no NaN/Infinity."""
    try:
        value = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise TokenInvalid(detail=f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise TokenInvalid(detail=f"{what} is not a JSON object")
    return value


@dataclass(frozen=True)
class _Compact:
    header: dict[str, Any]
    payload: bytes
    signing_input: bytes
    signature: bytes


def _parse_compact(token: str) -> _Compact:
    if not isinstance(token, str):
        raise TokenInvalid(detail="token is not a string")
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenInvalid(detail="token too large")
    parts = token.split(".")
    if len(parts) != 3:
        # Also rejects JWE (5 parts) and the JSON serialisations.
        raise TokenInvalid(detail=f"compact JWS needs 3 segments, got {len(parts)}")
    h64, p64, s64 = parts
    if not h64 or not s64:
        raise TokenInvalid(detail="empty header or signature segment")
    try:
        header_raw = b64url_decode(h64)
        payload = b64url_decode(p64)
        signature = b64url_decode(s64)
    except ValueError as exc:
        raise TokenInvalid(detail=f"malformed base64url: {exc}") from None
    header = parse_json_object(header_raw, "header")
    return _Compact(header, payload, f"{h64}.{p64}".encode("ascii"), signature)


def _checked_alg(header: Mapping[str, Any], algorithms: Collection[str]) -> str:
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise TokenInvalid(detail="header alg missing or not a string")
    if alg.lower() == "none":
        raise TokenInvalid(detail="alg none is never accepted")
    # INVARIANT: the algorithm comes from the caller's allow-list, never from the token alone.
    if alg not in algorithms or alg not in ALGORITHMS:
        raise TokenInvalid(detail=f"alg {alg!r} not allowed")
    return alg


def _check_header(header: Mapping[str, Any], *, allow_embedded_jwk: bool) -> None:
    for name in _FORBIDDEN_HEADERS:
        if name in header:
            raise TokenInvalid(detail=f"header {name!r} is not accepted")
    if "jwk" in header and not allow_embedded_jwk:
        raise TokenInvalid(detail="embedded jwk is not accepted here")
    if "crit" in header:
        # RFC 7515 §4.1.11: we understand no extension, so every crit entry is unknown.
        raise TokenInvalid(detail=f"unsupported crit {header['crit']!r}")
    if "b64" in header:
        raise TokenInvalid(detail="unencoded payloads (RFC 7797) are not accepted")
    if "kid" in header and not isinstance(header["kid"], str):
        raise TokenInvalid(detail="kid is not a string")
    if "typ" in header and not isinstance(header["typ"], str):
        raise TokenInvalid(detail="typ is not a string")


def verify_jws_signature_only(
    token: str, *, keys: KeyLookup, algorithms: Collection[str]
) -> VerifiedJws:
    """Verify a compact JWS signature (RFC 7515 §5.2) and check **no claims at all**.

    Enforces the header rules (alg allow-list, no ``none``, no jku/x5u/x5c/jwk, no crit)
    and the key rules of ``verify_signature`` (alg matches the key's type and curve, public
    key, use and key_ops). Callers wanting a JWT must use ``verify_jwt``.
    """
    compact = _parse_compact(token)
    _check_header(compact.header, allow_embedded_jwk=False)
    alg = _checked_alg(compact.header, algorithms)
    kid = compact.header.get("kid")
    jwk = keys(kid, alg)
    if jwk is None:
        raise TokenInvalid(detail=f"no key for kid {kid!r}")
    verify_signature(alg, jwk, compact.signing_input, compact.signature)
    return VerifiedJws(compact.header, compact.payload, alg, jwk)


def verify_jws_embedded_key(token: str, *, algorithms: Collection[str]) -> VerifiedJws:
    """Verify a compact JWS with the public ``jwk`` in its own header.

    This proves possession of that key and nothing about who holds it: it is the DPoP proof
    check of RFC 9449 §4.3 (steps 5 to 8) and must not be used for anything else.
    """
    compact = _parse_compact(token)
    _check_header(compact.header, allow_embedded_jwk=True)
    alg = _checked_alg(compact.header, algorithms)
    jwk = compact.header.get("jwk")
    if not isinstance(jwk, dict):
        raise TokenInvalid(detail="header jwk missing or not an object")
    check_public_only(jwk)
    verify_signature(alg, jwk, compact.signing_input, compact.signature)
    return VerifiedJws(compact.header, compact.payload, alg, jwk)


def _media_type(value: str) -> str:
    lowered = value.strip().lower()
    return lowered.removeprefix("application/")


def typ_matches(actual: object, expected: str) -> bool:
    """RFC 7515 §4.1.9: ``typ`` is a media type, case-insensitive, ``application/`` optional."""
    return isinstance(actual, str) and _media_type(actual) == _media_type(expected)


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None and name not in claims:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenInvalid(detail=f"claim {name!r} is not a NumericDate")
    return float(value)


def check_time_claims(claims: Mapping[str, Any], *, now: float, leeway: int) -> None:
    """``exp``, ``nbf`` and ``iat`` against ``now`` with ``leeway`` (RFC 7519 §4.1.4-6)."""
    exp = _number(claims, "exp")
    if exp is not None and now >= exp + leeway:
        raise TokenInvalid(detail="token expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and now + leeway < nbf:
        raise TokenInvalid(detail="token not yet valid (nbf)")
    iat = _number(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise TokenInvalid(detail="token issued in the future (iat)")


def _check_audience(claims: Mapping[str, Any], audience: str | Collection[str]) -> None:
    expected = {audience} if isinstance(audience, str) else set(audience)
    aud = claims.get("aud")
    if isinstance(aud, str):
        present = {aud}
    elif isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
        present = set(aud)
    else:
        raise TokenInvalid(detail="aud missing or malformed")
    if not present & expected:
        raise TokenInvalid(detail="aud does not name this audience")


def verify_jwt(
    token: str,
    *,
    keys: KeyLookup,
    algorithms: Collection[str],
    typ: str | None,
    issuer: str | None,
    audience: str | Collection[str] | None,
    now: float,
    leeway: int = 60,
    require: Collection[str] = ("exp",),
) -> VerifiedJwt:
    """Verify a JWT's signature and claims (RFC 7519 §7.2, RFC 8725 §3).

    ``typ`` (when given) must match the header's ``typ``; ``issuer`` (when given) must equal
    ``iss``; ``audience`` (when given) must appear in ``aud`` (string or array); ``exp`` is
    required by default and ``exp``/``nbf``/``iat`` are checked with ``leeway`` ≤ 60 s.
    Any failure raises ``TokenInvalid``.
    """
    if not 0 <= leeway <= MAX_LEEWAY_SECONDS:
        raise ConfigError(detail=f"leeway must be between 0 and {MAX_LEEWAY_SECONDS} s")
    if any(a.lower() == "none" for a in algorithms):
        raise ConfigError(detail="alg none can never be allowed")
    verified = verify_jws_signature_only(token, keys=keys, algorithms=algorithms)
    header = verified.header
    if typ is not None and not typ_matches(header.get("typ"), typ):
        raise TokenInvalid(detail=f"typ {header.get('typ')!r} is not {typ!r}")
    claims = parse_json_object(verified.payload, "claims")
    for name in require:
        if name not in claims:
            raise TokenInvalid(detail=f"required claim {name!r} missing")
    check_time_claims(claims, now=now, leeway=leeway)
    if issuer is not None and claims.get("iss") != issuer:
        raise TokenInvalid(detail="iss is not the expected issuer")
    if audience is not None:
        _check_audience(claims, audience)
    return VerifiedJwt(header, claims)
