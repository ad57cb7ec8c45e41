"""Signing keys: generation, sealing at rest, public JWK export.

Private keys never leave this module in the clear except as a ``SigningKey`` in memory.
At rest they are sealed with AES-256-GCM under the key-encryption key (KEK); the key id is
the associated data, so a sealed blob cannot be moved to another key row.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc.jwk import ECKey, OKPKey

from tessera.errors import ConfigError, TesseraError

SigningAlg = Literal["ES256", "EdDSA"]
SUPPORTED_SIGNING_ALGS: tuple[SigningAlg, ...] = ("ES256", "EdDSA")
_SEAL_VERSION = b"\x01"
KEK_BYTES = 32


class KeySealError(TesseraError):
    code = "key_seal_error"
    status = 500
    title = "A stored key could not be unsealed"


@dataclass(frozen=True)
class SigningKey:
    """A private signing key with its id and algorithm."""

    kid: str
    alg: SigningAlg
    private_jwk: dict[str, Any] = field(repr=False)

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK with ``kid``, ``alg`` and ``use: sig`` (RFC 7517 §4)."""
        return public_jwk_of(self.private_jwk, self.kid, self.alg)

    def joserfc_key(self) -> ECKey | OKPKey:
        return _import(self.private_jwk)


def _import(jwk: dict[str, Any]) -> ECKey | OKPKey:
    kty = jwk.get("kty")
    if kty == "EC":
        return ECKey.import_key(jwk)
    if kty == "OKP":
        return OKPKey.import_key(jwk)
    raise KeySealError(detail=f"unsupported key type {kty!r}")


def public_jwk_of(jwk: dict[str, Any], kid: str, alg: str) -> dict[str, Any]:
    pub = dict(_import(jwk).as_dict(private=False))
    pub.update({"kid": kid, "alg": alg, "use": "sig"})
    return pub


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of a public or private JWK (base64url, no padding)."""
    return str(_import(jwk).thumbprint())


def generate_signing_key(alg: SigningAlg = "ES256") -> SigningKey:
    """A fresh key; its ``kid`` is its RFC 7638 thumbprint."""
    key: ECKey | OKPKey
    if alg == "ES256":
        key = ECKey.generate_key("P-256")
    elif alg == "EdDSA":
        key = OKPKey.generate_key("Ed25519")
    else:
        raise ConfigError(f"unsupported signing algorithm {alg!r}")
    private = dict(key.as_dict(private=True))
    return SigningKey(kid=str(key.thumbprint()), alg=alg, private_jwk=private)


def parse_kek(value: str) -> bytes:
    """A KEK is 32 random bytes, written as base64url (padding optional) or 64 hex digits."""
    text = value.strip()
    raw: bytes | None = None
    if len(text) == 64:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (ValueError, TypeError):
            raw = None
    if raw is None or len(raw) != KEK_BYTES:
        raise ConfigError("must be 32 bytes as base64url or 64 hex digits")
    return raw


def new_kek() -> str:
    return base64.urlsafe_b64encode(os.urandom(KEK_BYTES)).decode().rstrip("=")


def seal_private_key(key: SigningKey, kek: bytes) -> bytes:
    """Encrypt a private key for storage: version byte, 12-byte nonce, AES-GCM ciphertext."""
    nonce = os.urandom(12)
    body = json.dumps({"alg": key.alg, "jwk": key.private_jwk}, separators=(",", ":")).encode()
    ct = AESGCM(kek).encrypt(nonce, body, key.kid.encode())
    return _SEAL_VERSION + nonce + ct


def open_private_key(blob: bytes, kek: bytes, kid: str) -> SigningKey:
    """Decrypt a sealed key; a wrong KEK, wrong kid or any modified byte raises."""
    if len(blob) < 1 + 12 + 16 or blob[:1] != _SEAL_VERSION:
        raise KeySealError(detail="unknown sealed key format")
    try:
        body = AESGCM(kek).decrypt(blob[1:13], blob[13:], kid.encode())
    except InvalidTag as exc:
        raise KeySealError(detail="sealed key failed authentication (wrong KEK?)") from exc
    data = json.loads(body)
    alg = data["alg"]
    if alg not in SUPPORTED_SIGNING_ALGS:
        raise KeySealError(detail=f"unsupported algorithm {alg!r}")
    return SigningKey(kid=kid, alg=alg, private_jwk=data["jwk"])


def seal_secret(secret: str, key: bytes, context: str) -> str:
    """Encrypt a short secret Tessera must send later (e.g. an SSF push ``Authorization``
    header): base64url of version byte, 12-byte nonce, AES-GCM ciphertext; ``context`` is
    the associated data (the owning record's id), so a sealed value cannot be moved."""
    nonce = os.urandom(12)
    ct = AESGCM(key).encrypt(nonce, secret.encode(), context.encode())
    return base64.urlsafe_b64encode(_SEAL_VERSION + nonce + ct).decode().rstrip("=")


def open_secret(blob: str, key: bytes, context: str) -> str:
    """Decrypt ``seal_secret``'s output; a wrong key, context or any modified byte raises."""
    try:
        raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
    except ValueError as exc:
        raise KeySealError(detail="sealed secret is not base64url") from exc
    if len(raw) < 1 + 12 + 16 or raw[:1] != _SEAL_VERSION:
        raise KeySealError(detail="unknown sealed secret format")
    try:
        return AESGCM(key).decrypt(raw[1:13], raw[13:], context.encode()).decode()
    except InvalidTag as exc:
        raise KeySealError(detail="sealed secret failed authentication") from exc


def public_jwks(keys: list[dict[str, Any]]) -> dict[str, Any]:
    """A JWK Set document (RFC 7517 §5) of public JWKs."""
    return {"keys": [dict(k) for k in keys]}


_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# Client keys Tessera accepts for private_key_jwt and DPoP: the algorithms it verifies.
_ACCEPTED_CLIENT_KEYS = {("EC", "P-256"), ("OKP", "Ed25519")}


def validate_public_jwk(jwk: Any) -> tuple[dict[str, Any], str]:
    """Check a client's public JWK and return (normalised JWK, RFC 7638 thumbprint).

    Only EC P-256 and OKP Ed25519 keys are accepted; any private member is refused so a
    caller who pastes a private key by mistake is told, and nothing secret is stored.
    """
    from tessera.errors import InvalidInput

    if not isinstance(jwk, dict):
        raise InvalidInput("jwk must be a JSON object")
    if _PRIVATE_MEMBERS & set(jwk):
        raise InvalidInput("jwk contains private key material; register the public key only")
    if (jwk.get("kty"), jwk.get("crv")) not in _ACCEPTED_CLIENT_KEYS:
        raise InvalidInput("jwk must be an EC P-256 or OKP Ed25519 public key")
    try:
        key = _import(jwk)
        public = dict(key.as_dict(private=False))
        thumb = str(key.thumbprint())
    except Exception as exc:  # joserfc raises several types for malformed keys
        raise InvalidInput("jwk is not a valid public key") from exc
    for extra in ("kid", "use", "alg"):
        if isinstance(jwk.get(extra), str) and len(jwk[extra]) <= 128:
            public[extra] = jwk[extra]
    return public, thumb
