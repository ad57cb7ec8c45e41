"""The gateway's ports: what it needs from parts it cannot import (approvals, #8).

``CallApprovals`` has exactly the shape of ``tessera.approvals.ports.CallApprovals``
(COORDINATION: the lead wires the approval service here after merge).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class CallToApprove:
    session_id: str
    agent_id: str
    user_id: str | None
    act_chain: tuple[str, ...]  # outermost first, as in the token's act claim
    action: str  # "server/tool"
    resource: Mapping[str, Any]  # AuthZEN resource {type, id, properties?}
    arguments: Mapping[str, Any]  # redacted before display/storage by the approval service
    argument_hash: str  # tessera.crypto.canonical.argument_hash(...)
    dpop_jkt: str | None
    decision_id: str
    reasons: tuple[Mapping[str, Any], ...]
    risk: Mapping[str, Any] | None


@dataclass(frozen=True)
class ApprovalTicket:
    auth_req_id: str
    expires_in: int
    interval: int
    status: str  # pending | approved | denied | expired | cancelled


class CallApprovals(Protocol):
    def request_for_call(
        self, call: CallToApprove, *, request_id: str | None = None
    ) -> ApprovalTicket: ...

    def status(self, auth_req_id: str) -> ApprovalTicket: ...

    def redeem_for_call(self, auth_req_id: str, call: CallToApprove) -> bool: ...
