"""Evidence of failed client authentication (RFC 6749 §5.2 ``invalid_client``).

The client gets one opaque error; the ledger gets who *claimed* to be calling and why it
failed (``oauth.client_auth_failed``), so posture can find shadow agents: workloads using
client ids nobody registered, or decommissioned agents still trying. The claimed id is
unverified by definition; it is recorded as a claim, never trusted. Never a secret: the
Basic password, the assertion and the form are not recorded.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from urllib.parse import unquote

from tessera.audit.record import ActorLayers, AuditEntry
from tessera.tokens.peek import unverified_claim

EVENT = "oauth.client_auth_failed"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:@/+-]{1,128}$")


def claimed_client_id(form: Mapping[str, str], authorization: str | None) -> str | None:
    """The client id the request claims (form, assertion ``iss`` or Basic user), if well
    formed; anything else is None (recorded as ``<none>``)."""
    candidate = form.get("client_id")
    if not candidate and form.get("client_assertion"):
        candidate = unverified_claim(form["client_assertion"], "iss", max_len=128)
    if not candidate and authorization and authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            candidate = unquote(decoded.partition(":")[0])
        except (binascii.Error, UnicodeDecodeError, ValueError):
            candidate = None
    if candidate and _CLIENT_ID.fullmatch(candidate):
        return candidate
    return None


def client_auth_failure(
    form: Mapping[str, str], authorization: str | None, detail: str | None, *, endpoint: str
) -> AuditEntry:
    """The audit entry for one failed client authentication at ``endpoint``."""
    client = claimed_client_id(form, authorization)
    method = (
        "private_key_jwt"
        if form.get("client_assertion")
        else "client_secret_basic"
        if authorization
        else "none"
    )
    reason = "".join(c for c in (detail or "client authentication failed") if c.isprintable())
    return AuditEntry(
        event_type=EVENT,
        actor=ActorLayers(principal=f"client:{client or '<none>'}"),
        action=endpoint,
        resource=endpoint,
        outcome="failure",
        reasons=("invalid_client",),
        details={
            "client_id": client,
            "method": method,
            "grant_type": (form.get("grant_type") or "")[:100],
            "reason": reason[:200],
        },
    )
