"""Human approval for high-risk actions (issue 8): CIBA requests bound to one call, one-shot
tokens, passkey-backed approvers. The gateway and the PDP use ``ports``."""

from tessera.approvals.ports import ApprovalTicket, CallApprovals, CallToApprove

__all__ = ["ApprovalTicket", "CallApprovals", "CallToApprove"]
