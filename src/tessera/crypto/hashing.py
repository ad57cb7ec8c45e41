"""Hashes and secrets. Secrets and tokens are stored only as hashes (DESIGN section 9)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def sha256_b64url(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return b64url(hashlib.sha256(raw).digest())


def sha256_hex(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()


def new_secret(prefix: str = "", nbytes: int = 32) -> str:
    """A high-entropy secret for humans to copy (admin tokens, API keys)."""
    return f"{prefix}{secrets.token_urlsafe(nbytes)}"


def hash_token(token: str) -> str:
    """Hash of a high-entropy token (admin token, API key, access token): SHA-256 suffices."""
    return "sha256:" + sha256_hex(token)


def verify_token_hash(token: str, stored: str) -> bool:
    return hmac.compare_digest(hash_token(token), stored)


# Legacy client secrets may be chosen by people, so they get a slow, salted hash.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def hash_password_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        secret.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64url(salt)}${b64url(digest)}"


def verify_password_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_s, digest_s = stored.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.urlsafe_b64decode(salt_s + "=" * (-len(salt_s) % 4))
        expected = base64.urlsafe_b64decode(digest_s + "=" * (-len(digest_s) % 4))
        got = hashlib.scrypt(
            secret.encode(), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def constant_time_equals(a: str | bytes, b: str | bytes) -> bool:
    ab = a.encode() if isinstance(a, str) else a
    bb = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(ab, bb)
