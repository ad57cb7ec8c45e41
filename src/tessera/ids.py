"""Identifiers. Random, URL-safe, prefixed by kind so a log line says what it names."""

from __future__ import annotations

import re
import secrets

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case

PREFIXES = {
    "operator": "op",
    "user": "usr",
    "service": "svc",
    "agent": "agt",
    "model": "mdl",
    "credential": "cred",
    "key": "key",
    "session": "ses",
    "event": "evt",
}

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def new_id(kind: str) -> str:
    """A new id such as ``agt_3k9x...``: 16 random base32 characters (80 bits)."""
    prefix = PREFIXES[kind]
    body = "".join(secrets.choice(_ALPHABET) for _ in range(16))
    return f"{prefix}_{body}"


def is_valid_name(value: str) -> bool:
    """Names (operators, agents, services) are lower-case slugs, 1 to 63 characters."""
    return bool(_NAME.fullmatch(value))
