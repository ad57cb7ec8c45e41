"""Reading a claim of a JWT *before* verifying it, only to choose which keys verify it.

Nothing read here is trusted: the value picks a key set (an issuer's, a client's, a trust
domain's) and the token is then verified against that set, which must name the same value.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from tessera.identity.model import Credential, CredentialKind, CredentialStatus

MAX_TOKEN = 16384


def unverified_claim(token: str, name: str, *, max_len: int = 2048) -> str | None:
    """The string claim ``name`` of a compact JWS's payload, or None if absent/malformed."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > MAX_TOKEN:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    value = payload.get(name) if isinstance(payload, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= max_len else None


def active_jwks(creds: list[Credential], now: datetime) -> list[dict[str, Any]]:
    """The public JWKs of active, unexpired key credentials, each with its thumbprint as kid."""
    keys = []
    for c in creds:
        if c.kind != CredentialKind.JWK or c.status != CredentialStatus.ACTIVE:
            continue
        if c.expires_at is not None and c.expires_at <= now:
            continue
        if c.public_jwk is not None:
            keys.append({**c.public_jwk, "kid": c.jkt or c.public_jwk.get("kid")})
    return keys
