"""The gateway's ports: what it needs from the approval service (issue 8).

The values and the protocol are defined once, in ``tessera.approvals.ports``; the gateway
re-exports them so its modules and tests name one contract (an approval request built by the
gateway must compare equal to the one the approval service stored)."""

from __future__ import annotations

from tessera.approvals.ports import ApprovalTicket, CallApprovals, CallToApprove

__all__ = ["ApprovalTicket", "CallApprovals", "CallToApprove"]
