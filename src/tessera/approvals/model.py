"""The approval request state machine and the rules about it (issue 8). Pure: no SQL, no
HTTP, no clock reads (times come in as arguments).

States::

    pending ──approve by N distinct─▶ approved ──token issued / redeemed (once)──▶ (done)
       │  └──first deny──────────────▶ denied
       ├──expires_at passed──────────▶ expired
       └──agent suspended/decommissioned ▶ cancelled (also an approved, unredeemed one)

Only ``pending`` changes state by votes; ``approved`` is spent exactly once, either by the
gateway (``redeem_for_call``) or by the CIBA grant issuing the one-shot token whose jti is
then consumed by the PDP.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from tessera.crypto.canonical import canonical_json
from tessera.errors import Conflict

Status = Literal["pending", "approved", "denied", "expired", "cancelled"]
Decision = Literal["approve", "deny"]
STATUSES: Final = ("pending", "approved", "denied", "expired", "cancelled")
TERMINAL: Final = frozenset({"denied", "expired", "cancelled"})
REDACTED: Final = "[redacted]"
MAX_ARGUMENT_BYTES: Final = 16_384
BINDING_MAX: Final = 80
DEFAULT_INTERVAL: Final = 2
SLOW_DOWN_STEP: Final = 5  # CIBA §11 / RFC 8628 §3.5: add 5 s to the interval
COLLECT_WINDOW: Final = 300  # seconds an approved request stays collectable


class ApprovalStateError(Conflict):
    """A transition the state machine does not allow (409; ``code`` says which)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


@dataclass(frozen=True)
class Vote:
    approver: str  # user id, or admin:<actor>
    decision: Decision
    method: str  # passkey | admin | dev
    note: str
    at: datetime


@dataclass(frozen=True)
class ApprovalRequest:
    auth_req_id: str
    status: Status
    origin: str
    agent_id: str
    session_id: str
    user_id: str | None
    act_chain: tuple[str, ...]
    action: str
    resource: Mapping[str, Any]
    arguments: Mapping[str, Any]  # redacted
    argument_hash: str
    dpop_jkt: str | None
    decision_id: str
    reasons: tuple[Mapping[str, Any], ...]
    risk: Mapping[str, Any] | None
    binding_message: str
    required: int
    group_name: str | None
    passkey_required: bool
    delivery: str
    group_key: str
    repeats: int
    interval: int
    created_at: datetime
    expires_at: datetime
    candidates: tuple[str, ...] = ()
    votes: tuple[Vote, ...] = ()
    next_poll_at: datetime | None = None
    decided_at: datetime | None = None
    token_jti: str | None = None
    token_issued_at: datetime | None = None
    redeemed_at: datetime | None = None
    outcome: str | None = None
    notify_token: bytes | None = field(default=None, repr=False)

    def expires_in(self, now: datetime) -> int:
        return max(0, int((self.expires_at - now).total_seconds()))

    @property
    def spent(self) -> bool:
        return self.redeemed_at is not None or self.token_issued_at is not None

    def approvals(self) -> list[Vote]:
        return [v for v in self.votes if v.decision == "approve"]


def server_tool(action: str) -> tuple[str, str]:
    """``server/tool`` → (server, tool); the argument hash of DESIGN 6b needs both."""
    server, sep, tool = action.partition("/")
    if not sep or not server or not tool:
        raise ApprovalStateError("invalid_request", "the action must be server/tool")
    return server, tool


def group_key(
    agent_id: str,
    session_id: str,
    action: str,
    resource: Mapping[str, Any],
    argument_hash: str,
    dpop_jkt: str | None,
) -> str:
    """Identical requests (same session, call and key) share one pending request."""
    body = canonical_json(
        {
            "agent": agent_id,
            "session": session_id,
            "action": action,
            "resource": {"type": resource.get("type"), "id": resource.get("id")},
            "argument_hash": argument_hash,
            "jkt": dpop_jkt,
        }
    )
    return "sha256:" + hashlib.sha256(body).hexdigest()


def redact(value: Any, names: frozenset[str], depth: int = 0) -> Any:
    """Arguments as approvers and the store see them: values under sensitive keys (any
    depth, case-insensitive) become ``[redacted]`` (DESIGN 9)."""
    if depth > 20:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if str(k).lower() in names else redact(v, names, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v, names, depth + 1) for v in value]
    return value


def bounded_arguments(arguments: Mapping[str, Any]) -> str:
    body = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    if len(body) > MAX_ARGUMENT_BYTES:
        return json.dumps({"_truncated": body[: MAX_ARGUMENT_BYTES - 64]})
    return body


def _plain(text: str) -> str:
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)


def binding_message(action: str, arguments: Mapping[str, Any], argument_hash: str) -> str:
    """CIBA §7.1 ``binding_message``, generated by Tessera from the action and its (redacted)
    arguments, plus a short code from the argument hash that the approver's page shows too.
    Plain ASCII, at most 80 characters."""
    code = argument_hash.split(":", 1)[-1][:8].upper()
    suffix = f" [{code}]"
    parts = []
    for k in sorted(arguments)[:4]:
        v = arguments[k]
        shown = v if isinstance(v, str | int | float | bool) else "…"
        parts.append(f"{k}={shown}")
    head = _plain(f"{action} " + " ".join(parts)).strip()
    room = BINDING_MAX - len(suffix)
    if len(head) > room:
        head = head[: room - 3] + "..."
    return head + suffix


def eligible_approvers(
    *,
    required: int,
    user_id: str | None,
    owner_id: str | None,
    group_members: Sequence[str] | None,
    excluded: Iterable[str],
) -> list[str]:
    """Who may approve (issue 8): a configured group if the rule names one; else the user
    the agent acts for; else the agent's owner. Dual control (N > 1) without a group asks
    the user and the owner. Never the agent or anyone in its act chain."""
    out: list[str]
    if group_members is not None:
        out = list(group_members)
    elif required > 1:
        out = [u for u in (user_id, owner_id) if u]
    else:
        out = [user_id] if user_id else ([owner_id] if owner_id else [])
    banned = set(excluded)
    seen: list[str] = []
    for u in out:
        if u not in banned and u not in seen:
            seen.append(u)
    return seen


def tally(req: ApprovalRequest, votes: Sequence[Vote]) -> Status:
    """The status after ``votes``: the first denial denies; N distinct approvers approve."""
    if any(v.decision == "deny" for v in votes):
        return "denied"
    approvers = {v.approver for v in votes if v.decision == "approve"}
    return "approved" if len(approvers) >= req.required else "pending"


def check_vote(
    req: ApprovalRequest,
    approver: str,
    method: str,
    decision: str,
    now: datetime,
    *,
    accept_dev: bool = False,
) -> None:
    """Refuse a vote that may not count: wrong state, expired, not an approver, a second
    vote, or an approval without a passkey where the rule requires one (an administrator's
    approval is refused there; a denial only tightens and is always accepted from an
    administrator). ``dev`` votes count only on a development server."""
    if req.status != "pending":
        raise ApprovalStateError("not_pending", f"the request is {req.status}")
    if req.expires_at <= now:
        raise ApprovalStateError("expired", "the request has expired")
    if approver in req.act_chain or approver == req.agent_id:
        raise ApprovalStateError("not_an_approver", "an agent never approves its own call")
    if method not in ("passkey", "admin", "dev"):
        raise ApprovalStateError("invalid_method", "unknown approval method")
    if method == "dev" and not accept_dev:
        raise ApprovalStateError("passkey_required", "development approvals are disabled")
    if method != "admin" and approver not in req.candidates:
        raise ApprovalStateError("not_an_approver", "you are not an approver of this request")
    if decision == "approve" and method == "admin" and req.passkey_required:
        raise ApprovalStateError(
            "passkey_required", "this request needs a passkey approval from an approver"
        )
    if any(v.approver == approver for v in req.votes):
        raise ApprovalStateError("already_voted", "each approver decides once")


def approval_challenge(
    auth_req_id: str, argument_hash: str, decision: str, note: str, nonce: str
) -> bytes:
    """The WebAuthn challenge of one approval decision: SHA-256 over the request's binding
    data (auth_req_id, argument hash), the decision, the note and a server nonce, so an
    assertion approves exactly one decision on one request (WebAuthn L3 §13.4.3)."""
    body = canonical_json(
        {
            "v": "tessera-approval-1",
            "auth_req_id": auth_req_id,
            "argument_hash": argument_hash,
            "decision": decision,
            "note_hash": hashlib.sha256(note.encode()).hexdigest(),
            "nonce": nonce,
        }
    )
    return hashlib.sha256(body).digest()
