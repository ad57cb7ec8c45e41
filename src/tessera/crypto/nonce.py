"""Stateless DPoP server nonces (RFC 9449 §8, DESIGN 6b).

A nonce is an HMAC, under a key shared by every node, of the number of the current time
window. Any node can check it without storage: the nonce of the current window and of the
previous one are accepted, so a nonce lives between one and two windows. Every client gets
the same nonce within a window: it bounds how far ahead proofs can be made, it does not stop
replay (the ``jti`` cache does that).
"""

from __future__ import annotations

import hashlib
import hmac
import math

from tessera.crypto.hashing import b64url
from tessera.errors import ConfigError

__all__ = ["DpopNonceIssuer"]

MIN_SECRET_BYTES = 32
_LABEL = b"tessera/dpop-nonce/v1\x00"
_NONCE_CHARS = 32  # 24 bytes of HMAC-SHA256, base64url: well inside NQCHAR (RFC 9449 §8.1)


class DpopNonceIssuer:
    """Issues and checks server nonces; ``now`` is seconds since the epoch from the clock."""

    def __init__(self, secret: bytes, window_seconds: int = 300) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(detail=f"DPoP nonce secret needs at least {MIN_SECRET_BYTES} bytes")
        if window_seconds <= 0:
            raise ConfigError(detail="DPoP nonce window must be positive")
        self._secret = secret
        self._window = window_seconds

    def _window_of(self, now: float) -> int:
        return math.floor(now / self._window)

    def _nonce_for(self, window: int) -> str:
        mac = hmac.new(
            self._secret, _LABEL + window.to_bytes(8, "big", signed=True), hashlib.sha256
        ).digest()
        return b64url(mac[:24])

    def issue(self, now: float) -> str:
        """The nonce of the window containing ``now`` (send it in the ``DPoP-Nonce`` header)."""
        return self._nonce_for(self._window_of(now))

    def check(self, nonce: str | None, now: float) -> bool:
        """True when ``nonce`` is the nonce of the current or the previous window."""
        if not isinstance(nonce, str) or len(nonce) != _NONCE_CHARS:
            return False
        window = self._window_of(now)
        given = nonce.encode()
        # Compare against both windows every time, so timing says nothing about which matched.
        current = hmac.compare_digest(given, self._nonce_for(window).encode())
        previous = hmac.compare_digest(given, self._nonce_for(window - 1).encode())
        return current | previous
