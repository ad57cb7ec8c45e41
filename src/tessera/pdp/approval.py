"""Human approval inside the decision pipeline (issue 8; COORDINATION approvals ↔ PDP).

* The ``approval`` stage runs after Cedar: a bundle ``approvals`` rule for the action, or an
  ``@approval`` annotation on a permit policy that decided, turns the answer into
  ``approval_required`` (it can only tighten: the grant stage must already have allowed).
* ``context.approval_token``: when the pipeline's verdict is ``approval_required`` and the
  one-shot token verifies for exactly this call (Tessera-signed, type, exp, same sid and
  jkt, same action and resource, argument hash recomputed from ``action`` = ``server/tool``
  and ``context.arguments``) and its jti is consumed atomically, the verdict becomes
  ``allow`` with reason ``approved_call``. Otherwise nothing changes: a bad approval token
  never loosens anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

from tessera.pdp.agents import AgentSubject
from tessera.pdp.model import EvaluationRequest, Reason, StageResult
from tessera.pdp.ports import RiskScore
from tessera.policy.approval_rules import annotation_approvers
from tessera.policy.bundle import PolicyBundle

APPROVAL_STAGE: Final = "approval"
MAX_APPROVAL_TOKEN: Final = 8192


class ApprovalTokenRedeemer(Protocol):
    """Verifies a one-shot approval token for one call and consumes it (True once)."""

    def redeem_token(
        self,
        token: str,
        *,
        sid: str,
        agent_id: str,
        jkt: str | None,
        action: str,
        resource: Mapping[str, Any],
        arguments: Any,
    ) -> tuple[bool, str]: ...


def annotated_permits(bundle: PolicyBundle, permits: Sequence[str]) -> list[tuple[str, int]]:
    """(policy id, approvers) of deciding permit policies carrying ``@approval``."""
    out = []
    for pid in permits:
        n = annotation_approvers(bundle.cedar.annotation(pid, "approval"))
        if n is not None and bundle.cedar.is_permit(pid):
            out.append((pid, n))
    return out


def approval_stage(
    bundle: PolicyBundle,
    req: EvaluationRequest,
    trace: Sequence[StageResult],
    risk: RiskScore,
) -> tuple[StageResult, None]:
    """``approval_required`` when the bundle or a deciding permit asks for a human."""
    policy = next((s for s in reversed(trace) if s.stage == "policy"), None)
    permits = list(policy.detail.get("policies", ())) if policy is not None else []
    need = bundle.approvals.requirement(
        req.action.name,
        annotated=annotated_permits(bundle, permits),
        risk_level=risk.level if risk.available else None,
    )
    if need is None:
        return StageResult(APPROVAL_STAGE, "skip"), None
    reason = Reason(
        APPROVAL_STAGE,
        "approval_rule",
        f"{req.action.name} needs {need.approvers} approver(s) ({need.source})",
    )
    detail = {"approvers": need.approvers, "group": need.group, "passkey": need.passkey}
    return StageResult(APPROVAL_STAGE, "approval_required", (reason,), detail), None


def honour_approval_token(
    redeemer: ApprovalTokenRedeemer | None,
    req: EvaluationRequest,
    agent: AgentSubject | None,
) -> StageResult | None:
    """The ``approved_call`` stage, or None when there is no token to consider."""
    token = req.context.get("approval_token")
    if redeemer is None or agent is None or token is None:
        return None
    if not isinstance(token, str) or not token or len(token) > MAX_APPROVAL_TOKEN:
        reason = Reason(APPROVAL_STAGE, "approval_token_invalid", "the approval token is invalid")
        return StageResult("approval_token", "skip", (reason,), {"cause": "malformed"})
    c = agent.claims
    resource: dict[str, Any] = {"type": req.resource.type, "id": req.resource.id}
    ok, why = redeemer.redeem_token(
        token,
        sid=c.sid,
        agent_id=c.client_id,
        jkt=c.jkt,
        action=req.action.name,
        resource=resource,
        arguments=req.context.get("arguments", {}),
    )
    if not ok:
        reason = Reason(APPROVAL_STAGE, "approval_token_invalid", "the approval token is invalid")
        return StageResult("approval_token", "skip", (reason,), {"cause": why})
    reason = Reason(APPROVAL_STAGE, "approved_call", "a human approved exactly this call")
    return StageResult("approval_token", "allow", (reason,))
