"""Tessera events → Security Event Tokens (RFC 8417) with CAEP 1.0 / RISC 1.0 events.

The mapping (also in README "Shared Signals" and docs/decisions.md):

| Tessera event             | SET event                         | ``sub_id``                    |
|---------------------------|-----------------------------------|-------------------------------|
| ``session.revoked``       | CAEP ``session-revoked``, one per | complex: ``session`` (opaque) |
|                           | revoked session                   | + ``user`` / ``application``  |
| ``agent.suspended``       | CAEP ``session-revoked``          | the agent (all its sessions)  |
| ``agent.decommissioned``  | RISC ``account-disabled``         | the agent                     |
| ``user.disabled``         | RISC ``account-disabled``         | the user                      |
| ``agent.ceiling_changed`` | CAEP ``token-claims-change``      | the agent                     |
| ``user.grants_changed``   | CAEP ``token-claims-change``      | the user                      |
| ``credential.added``      | CAEP ``credential-change`` create | the credential's owner        |
| ``credential.disabled``   | CAEP ``credential-change`` revoke | the credential's owner        |
| ``risk.level_changed``    | CAEP ``risk-level-change``        | the agent (or its session)    |
| ``model.revoked``         | CAEP ``assurance-level-change``   | the model digest (opaque)     |

Principals are RFC 9493 ``iss_sub`` identifiers with ``iss`` = Tessera's issuer and ``sub``
= the Tessera id (``agt_…``, ``usr_…``, ``op_…``, ``svc_…``); sessions are ``opaque``
identifiers (their ``sid``). SSF 1.0 §4.1.1: ``sub_id`` is top-level, there is no ``sub``
claim and no ``exp``; ``txn`` carries the event-log sequence number so a receiver can
correlate the SETs that one change produced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tessera.signals.events import Event

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
SSF = "https://schemas.openid.net/secevent/ssf/event-type/"
SESSION_REVOKED = CAEP + "session-revoked"
TOKEN_CLAIMS_CHANGE = CAEP + "token-claims-change"
CREDENTIAL_CHANGE = CAEP + "credential-change"
ASSURANCE_LEVEL_CHANGE = CAEP + "assurance-level-change"
RISK_LEVEL_CHANGE = CAEP + "risk-level-change"
ACCOUNT_DISABLED = RISC + "account-disabled"
VERIFICATION = SSF + "verification"
STREAM_UPDATED = SSF + "stream-updated"

EVENTS_SUPPORTED = (
    SESSION_REVOKED,
    TOKEN_CLAIMS_CHANGE,
    CREDENTIAL_CHANGE,
    ASSURANCE_LEVEL_CHANGE,
    RISK_LEVEL_CHANGE,
    ACCOUNT_DISABLED,
)
MODEL_NAMESPACE = "tessera-model-status"  # CAEP §3.4: a namespace both sides agree on
SET_TYP = "secevent+jwt"


@dataclass(frozen=True)
class SetDraft:
    """One SET before it is addressed (``aud``) and signed for a stream."""

    event_type: str
    sub_id: dict[str, Any]
    event: dict[str, Any]
    txn: str


class Directory(Protocol):
    """What the mapping reads from the store (in the mapping's transaction)."""

    def session_owner(self, sid: str) -> tuple[str, str | None] | None:
        """(agent id, user id or None) of a session."""

    def user_email(self, user_id: str) -> str | None: ...


def principal(issuer: str, ident: str) -> dict[str, Any]:
    """An RFC 9493 §3.2.4 ``iss_sub`` identifier for a Tessera principal."""
    return {"format": "iss_sub", "iss": issuer, "sub": ident}


def user_subject(issuer: str, user_id: str, email: str | None) -> dict[str, Any]:
    """A user: ``iss_sub``, or RFC 9493 §3.2.8 ``aliases`` of it and the user's e-mail so
    a receiver that knows the user by address can match (SSF 1.0 §3)."""
    ident = principal(issuer, user_id)
    if not email:
        return ident
    return {"format": "aliases", "identifiers": [ident, {"format": "email", "email": email}]}


def opaque(ident: str) -> dict[str, Any]:
    """An RFC 9493 §3.2.6 ``opaque`` identifier."""
    return {"format": "opaque", "id": ident}


def _initiator(actor: str) -> str:
    # CAEP §2: admin | user | policy | system
    if actor.startswith(("admin:", "cli", "init")):
        return "admin"
    if actor == "system":
        return "system"
    if actor.startswith("agt_"):
        return "user"  # the agent itself (e.g. RFC 7009 revocation by its client)
    return "policy"


def _common(e: Event, reason: object = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_timestamp": int(e.created_at.timestamp()),
        "initiating_entity": _initiator(e.actor),
    }
    if isinstance(reason, str) and reason:
        body["reason_admin"] = {"en": reason[:256]}
    return body


def drafts_for(e: Event, issuer: str, directory: Directory) -> list[SetDraft]:
    """The SETs one Tessera event produces (possibly none), in a stable order."""
    txn = f"tessera-event-{e.seq}"
    p: Mapping[str, Any] = e.payload
    out: list[SetDraft] = []

    def add(event_type: str, sub_id: dict[str, Any], event: dict[str, Any]) -> None:
        out.append(SetDraft(event_type, sub_id, event, txn))

    def user(user_id: str) -> dict[str, Any]:
        return user_subject(issuer, user_id, directory.user_email(user_id))

    if e.type == "session.revoked":
        for sid in p.get("sessions") or [e.subject]:
            owner = directory.session_owner(str(sid))
            sub: dict[str, Any] = {"format": "complex", "session": opaque(str(sid))}
            if owner is not None:
                agent_id, user_id = owner
                sub["user"] = user(user_id) if user_id else principal(issuer, agent_id)
                if user_id is not None:
                    sub["application"] = principal(issuer, agent_id)  # the acting agent
            add(SESSION_REVOKED, sub, _common(e, p.get("reason")))
    elif e.type == "agent.suspended":
        add(SESSION_REVOKED, principal(issuer, e.subject), _common(e, p.get("reason")))
    elif e.type == "agent.decommissioned":
        add(ACCOUNT_DISABLED, principal(issuer, e.subject), _common(e, p.get("reason")))
    elif e.type == "user.disabled":
        add(ACCOUNT_DISABLED, user(e.subject), _common(e, p.get("reason")))
    elif e.type == "agent.ceiling_changed":
        claims = {"tessera_ceiling_removed": p.get("removed", {})}
        add(TOKEN_CLAIMS_CHANGE, principal(issuer, e.subject), {**_common(e), "claims": claims})
    elif e.type == "user.grants_changed":
        claims = {"tessera_grants": p.get("grants", {})}
        add(TOKEN_CLAIMS_CHANGE, user(e.subject), {**_common(e), "claims": claims})
    elif e.type in ("credential.added", "credential.disabled"):
        owner_id = p.get("owner_id") or p.get("owner")
        if isinstance(owner_id, str):
            body = {
                **_common(e, p.get("reason")),
                "credential_type": str(p.get("kind") or "jwk"),
                "change_type": "create" if e.type == "credential.added" else "revoke",
            }
            add(CREDENTIAL_CHANGE, principal(issuer, owner_id), body)
    elif e.type == "risk.level_changed":
        session = p.get("session")
        body = {
            **_common(e),
            "principal": "SESSION" if session else "USER",
            "current_level": str(p.get("level", "")).upper(),
            "risk_reason": ",".join(str(r) for r in p.get("reasons") or []) or "behaviour",
        }
        if p.get("previous"):
            body["previous_level"] = str(p["previous"]).upper()
        sub = (
            {
                "format": "complex",
                "session": opaque(str(session)),
                "user": principal(issuer, e.subject),
            }
            if session
            else principal(issuer, e.subject)
        )
        add(RISK_LEVEL_CHANGE, sub, body)
    elif e.type == "model.revoked":
        body = {
            **_common(e, p.get("reason")),
            "namespace": MODEL_NAMESPACE,
            "current_level": "revoked",
            "previous_level": "active",
            "change_direction": "decrease",
        }
        add(ASSURANCE_LEVEL_CHANGE, opaque(str(p.get("digest") or e.subject)), body)
    return out


def set_claims(
    draft: SetDraft, *, issuer: str, audience: str | list[str], jti: str, now: datetime
) -> dict[str, Any]:
    """The claims of one SET (RFC 8417 §2.2, SSF 1.0 §4)."""
    return {
        "iss": issuer,
        "aud": audience,
        "iat": int(now.timestamp()),
        "jti": jti,
        "txn": draft.txn,
        "sub_id": draft.sub_id,
        "events": {draft.event_type: draft.event},
    }


def subject_ids(sub_id: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The simple identifiers a subject names: itself, each member of a ``complex``
    subject, each identifier of ``aliases`` (recursively)."""
    fmt = sub_id.get("format")
    if fmt == "complex":
        members = [v for v in sub_id.values() if isinstance(v, Mapping)]
    elif fmt == "aliases":
        members = [v for v in sub_id.get("identifiers") or [] if isinstance(v, Mapping)]
    else:
        return [dict(sub_id)]
    out: list[dict[str, Any]] = []
    for m in members[:16]:
        if m.get("format") not in ("complex", "aliases"):
            out.append(dict(m))
        elif fmt == "complex":  # one level of nesting: complex → aliases
            out.extend(x for x in subject_ids(m) if x.get("format") != "aliases")
    return out
