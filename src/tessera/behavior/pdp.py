"""The behaviour engine as the decision point's second opinion (DESIGN 5).

``PipelineBehaviour`` implements the PDP's ``BehaviourScorer`` (called before Cedar, so
policies can read ``context.risk``) and ``DecisionObserver`` (called after each real
decision, to learn). It can only tighten: the PDP's risk stage turns a score into
``approval_required`` (sensitive actions) or ``deny``; this module adds only the session
revocation that follows a high-risk deny. Any failure, a late answer (cooperative
deadline) or an open circuit breaker gives ``RiskScore(available=False)`` and the
deterministic decision stands; the trace and the audit record say why.

Features come from the AuthZEN request: the tool is ``action.name``, the resource its type
and id, and the PEP may add ``context.external_content`` (bool), ``context.volume``
(bytes) and ``context.arguments`` (whose canonical size is the volume when none is given).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from tessera.behavior.guard import BehaviourTimeout, CircuitBreaker, Deadline
from tessera.behavior.scoring import CallFeatures
from tessera.behavior.service import BehaviourService
from tessera.clock import Clock
from tessera.pdp.agents import AgentSubject
from tessera.pdp.model import Decision, EvaluationRequest
from tessera.pdp.ports import RiskScore

log = logging.getLogger("tessera.behavior")
MAX_ARGUMENT_BYTES: Final = 1_048_576
NOT_SCORED: Final = RiskScore(0, "none", True)


def request_volume(context: Any) -> int | None:
    """``context.volume`` when it is a non-negative integer, else the size of the canonical
    JSON of ``context.arguments``, else unknown."""
    v = context.get("volume")
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    args = context.get("arguments")
    if args is None:
        return None
    try:
        size = len(json.dumps(args, separators=(",", ":"), sort_keys=True, default=str))
    except (TypeError, ValueError):
        return None
    return min(size, MAX_ARGUMENT_BYTES)


class PipelineBehaviour:
    def __init__(
        self,
        service: BehaviourService,
        clock: Clock,
        *,
        deadline_ms: float = 2.0,
        breaker: CircuitBreaker | None = None,
        revoke_on_high: bool = True,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.service = service
        self.engine = service.engine
        self.clock = clock
        self.deadline_s = deadline_ms / 1000.0
        self.breaker = breaker or CircuitBreaker()
        self.revoke_on_high = revoke_on_high
        self._timer = timer

    # -- BehaviourScorer -----------------------------------------------------------------

    def score(
        self, request: EvaluationRequest, session: str | None, agent: AgentSubject | None = None
    ) -> RiskScore:
        if agent is None:
            return NOT_SCORED  # baselines are per agent; other subjects are not scored
        if not self.breaker.allow():
            return RiskScore(0, "unavailable", False, ("behaviour_circuit_open",))
        try:
            if not self.service.loaded:
                self.service.ensure_loaded()  # once per process, before the first score
            # the request's size is the PEP's input, not engine work: measured before the
            # deadline starts, so large arguments never read as a slow engine
            volume = request_volume(request.context)
            deadline = Deadline(self.deadline_s, self._timer)
            f = self._features(request, agent, volume)
            deadline.check()
            a = self.engine.score(f)
            deadline.check()
        except BehaviourTimeout:
            self.breaker.failure()
            return RiskScore(0, "unavailable", False, ("behaviour_timeout",))
        except Exception:
            log.exception("behaviour scoring failed")
            self.breaker.failure()
            return RiskScore(0, "unavailable", False, ("behaviour_error",))
        self.breaker.success()
        # what observe learns from, carried with the score (no per-thread state: a
        # coroutine's decision may be scored and observed around other decisions)
        return RiskScore(a.score, a.level, True, a.reasons, learn=(f, a))

    def _features(
        self, req: EvaluationRequest, agent: AgentSubject, volume: int | None
    ) -> CallFeatures:
        c = agent.claims
        ctx = req.context
        return self.engine.features(
            agent=c.client_id,
            operator=c.operator,
            model_digest=c.grant.model_digest or "",
            session=c.sid,
            tool=req.action.name,
            rtype=req.resource.type,
            resource_id=req.resource.id,
            volume=volume,
            external=ctx.get("external_content") is True,
            ts=self.clock.timestamp(),
        )

    # -- DecisionObserver ----------------------------------------------------------------

    def observe(
        self,
        request: EvaluationRequest,
        agent: AgentSubject | None,
        decision: Decision,
        risk: RiskScore | None = None,
    ) -> None:
        """Learn from a real decision; revoke the session after a high-risk deny."""
        learned = risk.learn if risk is not None else None
        if agent is None or not isinstance(learned, tuple):
            return  # not scored (engine down, or another subject): nothing to learn
        f, a = learned
        self.service.ensure_started()
        self.engine.observe(f, a, allowed=decision.verdict == "allow")
        if (
            self.revoke_on_high
            and decision.verdict == "deny"
            and any(r.code == "high_risk" for r in decision.reasons)
        ):
            try:
                self.service.revoke(agent.claims.sid, a.reasons)
            except Exception:  # the deny stands; the session ends at its expiry at worst
                log.exception("behaviour: revoking session %s failed", agent.claims.sid)
