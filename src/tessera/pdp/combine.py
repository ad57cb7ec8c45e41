"""Combining rules of the decision pipeline (DESIGN 5).

Each stage returns an outcome: ``allow``, ``deny``, ``approval_required``, ``error`` or
``skip`` (the stage did not apply). The rules, in priority order:

1. any ``error`` is a deny with the error as its reason (fail closed);
2. any ``deny`` is a deny (deny overrides);
3. only the grant stage (Cedar) can permit: without its ``allow`` the answer is deny
   (no applicable permit is a deny);
4. otherwise any ``approval_required`` makes the answer ``approval_required``;
5. otherwise ``allow``.

So a stage after the grant (risk rules, behaviour) can only tighten, never loosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from tessera.pdp.model import Reason, StageResult, Verdict

GRANT_STAGE: Final = "policy"
NO_PERMIT: Final = Reason(GRANT_STAGE, "no_permit", "no policy permits the request")


def combine(
    results: Sequence[StageResult], grant_stage: str = GRANT_STAGE
) -> tuple[Verdict, tuple[Reason, ...]]:
    """The verdict and the reasons that decided it."""
    # One pass over the trace (it runs on every decision); the rules are those above.
    errored = False
    errors: list[Reason] = []
    denies: list[StageResult] = []
    approvals: list[StageResult] = []
    allows: list[Reason] = []
    grant: StageResult | None = None
    for s in results:
        outcome = s.outcome
        if outcome == "error":
            errored = True
            errors.extend(s.reasons)
        elif outcome == "deny":
            denies.append(s)
        elif outcome == "approval_required":
            approvals.append(s)
        elif outcome == "allow":
            allows.extend(s.reasons)
        if s.stage == grant_stage:
            grant = s
    if errored:
        return "deny", tuple(errors) or (Reason("pipeline", "evaluation_error"),)
    if denies:
        return "deny", tuple(r for s in denies for r in s.reasons) or (
            Reason(denies[0].stage, "denied"),
        )
    if grant is None or grant.outcome != "allow":
        return "deny", (NO_PERMIT,)
    if approvals:
        return "approval_required", tuple(r for s in approvals for r in s.reasons) or (
            Reason(approvals[0].stage, "approval_required"),
        )
    return "allow", tuple(allows)


def is_final(result: StageResult) -> bool:
    """A stage outcome after which later stages cannot change the verdict."""
    return result.outcome in ("deny", "error")
