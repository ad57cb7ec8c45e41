"""Canonical JSON (RFC 8785) and the argument hash of DESIGN 6b."""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785


def canonical_json(value: Any) -> bytes:
    """RFC 8785 JSON Canonicalization Scheme bytes of a JSON-compatible value."""
    return bytes(rfc8785.dumps(value))


def argument_hash(server: str, tool: str, arguments: Any) -> str:
    """DESIGN 6b: SHA-256 of the RFC 8785 canonical JSON of ``{server, tool, arguments}``.

    Returned as ``sha256:<hex>``; the gateway, approvals and the SDK all use this function.
    """
    body = canonical_json({"server": server, "tool": tool, "arguments": arguments})
    return "sha256:" + hashlib.sha256(body).hexdigest()
