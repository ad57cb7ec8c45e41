"""The decision pipeline (DESIGN 5): token limits → ReBAC (agent, then user) → behaviour
score → Cedar → risk rules → verdict. Combining rules are in ``combine.py``.

A plain evaluation never creates an approval request: ``approval_required`` is only a
verdict here. Every error inside a stage is a deny with the error as reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from tessera.clock import Clock
from tessera.identity.ceiling import covered_by_any
from tessera.ids import unique_hex
from tessera.pdp.agents import (
    MAX_TOKEN,
    AgentSubject,
    AgentTokenRejected,
    Caller,
    SessionTokenVerifier,
)
from tessera.pdp.approval import ApprovalTokenRedeemer, approval_stage, honour_approval_token
from tessera.pdp.combine import combine, is_final
from tessera.pdp.model import Decision, EvaluationRequest, Reason, StageResult
from tessera.pdp.pinned import model_mismatch
from tessera.pdp.ports import (
    AttributeSource,
    BehaviourScorer,
    BudgetLedger,
    DecisionObserver,
    DecisionRecord,
    DecisionRecorder,
    MemoryAttributes,
    MemoryTaint,
    NeutralBehaviour,
    NoopRecorder,
    RelationChecker,
    RiskScore,
    SessionTaint,
)
from tessera.policy.bundle import PolicyBundle
from tessera.policy.cedar import SharedEntities
from tessera.policy.service import ActiveBundle

AGENT: Final = "agent"
log = logging.getLogger("tessera.pdp")
_PRIVATE_PROPS: Final = frozenset({"token", "jkt"})
MAX_PRINCIPALS: Final = 4096


class BundleSource(Protocol):
    def active(self) -> ActiveBundle | None: ...


class StaticBundle:
    def __init__(self, bundle: PolicyBundle | None, version: int | None = None) -> None:
        self._active = None if bundle is None else ActiveBundle(bundle, version)

    def active(self) -> ActiveBundle | None:
        return self._active


def cedar_value(value: Any) -> Any:
    """JSON → Cedar JSON: arrays become sets, ``null`` members are dropped, non-integral
    numbers become strings (Cedar has no floats)."""
    t = type(value)
    if t is str or t is int or t is bool:  # the common leaves, without the ABC check below
        return value
    if t is dict or isinstance(value, Mapping):
        return {str(k): cedar_value(v) for k, v in value.items() if v is not None}
    if t is list or isinstance(value, list):
        return [cedar_value(v) for v in value if v is not None]
    if isinstance(value, float):
        return int(value) if value.is_integer() else repr(value)
    return value


def _entity(etype: str, eid: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {"uid": {"type": etype, "id": eid}, "attrs": cedar_value(attrs), "parents": []}


def _text(entry: Mapping[str, Any] | None) -> str:
    """A directory entry as exact JSON text (entries are read-only mappings, which
    ``json.dumps`` does not take as they are)."""
    if entry is None:
        return "null"
    return json.dumps(entry if isinstance(entry, dict) else dict(entry))


def _error(stage: str, exc: BaseException) -> StageResult:
    msg = getattr(exc, "message", None) or type(exc).__name__
    code = getattr(exc, "code", None) or "evaluation_error"
    return StageResult(stage, "error", (Reason(stage, str(code), str(msg)[:300]),))


_ONE_CALL: Final[Mapping[str, int]] = {"tool_calls": 1}


def _stops(semantic: str, d: Decision) -> bool:
    """Whether a batch ends after ``d`` (AuthZEN §7.1.2 short-circuit semantics)."""
    if semantic == "deny_on_first_deny":
        return not d.allowed
    return semantic == "permit_on_first_permit" and d.allowed


class _Spend:
    """A decision that allows so far and waits for its ``tool_calls`` unit."""

    __slots__ = ("active", "agent", "approved", "decision_id", "req", "risk", "trace")

    def __init__(
        self,
        req: EvaluationRequest,
        active: ActiveBundle,
        trace: list[StageResult],
        agent: AgentSubject,
        approved: StageResult | None,
        risk: RiskScore | None,
        decision_id: str,
    ) -> None:
        self.req, self.active, self.trace, self.agent = req, active, trace, agent
        self.approved, self.risk, self.decision_id = approved, risk, decision_id

    @property
    def sid(self) -> str:
        return self.agent.claims.sid


class _Batch:
    """What repeats across the decisions of one ``decide`` / ``decide_many`` call: verified
    session tokens (with their liveness), directory reads, the principal's Cedar entities.
    Never kept beyond the call."""

    __slots__ = ("attrs", "memo")

    def __init__(self, memo: dict[Any, AgentSubject | AgentTokenRejected] | None = None) -> None:
        self.memo: dict[Any, AgentSubject | AgentTokenRejected] = {} if memo is None else memo
        self.attrs: dict[tuple[str, str], Mapping[str, Any] | None] = {}

    def attributes(self, source: AttributeSource, etype: str, eid: str) -> Mapping[str, Any] | None:
        key = (etype, eid)
        if key not in self.attrs:
            self.attrs[key] = source.attributes(etype, eid)
        return self.attrs[key]


class DecisionPoint:
    """Evaluates AuthZEN requests against the active bundle; pure apart from its ports."""

    def __init__(
        self,
        bundles: BundleSource,
        clock: Clock,
        *,
        relations: RelationChecker | None = None,
        attributes: AttributeSource | None = None,
        behaviour: BehaviourScorer | None = None,
        recorder: DecisionRecorder | None = None,
        agents: SessionTokenVerifier | None = None,
        taint: SessionTaint | None = None,
        user_ref: Callable[[str], str] | None = None,
        budgets: BudgetLedger | None = None,
        observer: DecisionObserver | None = None,
        approvals: ApprovalTokenRedeemer | None = None,
    ) -> None:
        self.bundles = bundles
        self.observer = observer
        # Issue 8: one-shot approval tokens in ``context.approval_token`` (pdp/approval.py).
        self.approvals = approvals
        # How a user appears in relationship tuples: ``user:<username>`` by default wiring
        # (OpenFGA style); the token names the user by id.
        self.user_ref: Callable[[str], str] = user_ref or (lambda user_id: user_id)
        # DESIGN 5: PEPs that only speak AuthZEN have no "executed" callback, so an allowed
        # decision consumes one ``tool_calls`` unit of the stored session budget right away.
        self.budgets = budgets
        self.clock = clock
        self.relations = relations
        self.attributes: AttributeSource = attributes or MemoryAttributes()
        self.behaviour: BehaviourScorer = behaviour or NeutralBehaviour()
        self.recorder: DecisionRecorder = recorder or NoopRecorder()
        self.agents = agents
        self.taint: SessionTaint = taint or MemoryTaint()
        # An agent's Cedar entities (its claims and directory entries, serialised), keyed
        # by the token and the exact text of those directory entries: a pure function of
        # its key, so reusing it never changes an answer.
        self._principals: dict[tuple[str, str, str], tuple[AgentSubject, SharedEntities]] = {}

    # -- public API ----------------------------------------------------------------------

    def evaluate(
        self, req: EvaluationRequest, caller: Caller, *, request_id: str | None = None
    ) -> Decision:
        decision = self.decide(req, caller, consume=True)
        self.recorder.record(
            DecisionRecord("evaluation", caller.service_id, request_id, ((req, decision),))
        )
        return decision

    def evaluate_many(
        self,
        reqs: Sequence[EvaluationRequest],
        semantic: str,
        caller: Caller,
        *,
        request_id: str | None = None,
    ) -> list[Decision]:
        """AuthZEN §7.1.2 semantics; the batch is one audit record listing its decisions."""
        decisions = self.decide_many(reqs, caller, semantic=semantic)
        self.recorder.record(
            DecisionRecord(
                "evaluations",
                caller.service_id,
                request_id,
                tuple(zip(reqs, decisions, strict=False)),
            )
        )
        return decisions

    # -- the pipeline --------------------------------------------------------------------

    def decide_many(
        self,
        requests: Sequence[EvaluationRequest],
        caller: Caller,
        *,
        semantic: str = "execute_all",
        consume: bool = True,
    ) -> list[Decision]:
        """The decisions of a batch: exactly ``decide(req, caller, consume=consume)`` for
        each request in order (budget spent per allowed decision, taint marks, the
        observer, one-shot approval tokens: all in order), amortising what repeats across
        the batch: one bundle version, each distinct session token verified (and its
        liveness read) once, each directory entry read once, the principal's Cedar
        entities built and parsed once. ``semantic`` (AuthZEN §7.1.2) stops after the
        first deny (``deny_on_first_deny``) or permit (``permit_on_first_permit``); the
        list then ends with that decision."""
        active = self.bundles.active()
        batch = _Batch()
        out: list[Decision] = []
        for req in requests:
            d = self._decide(req, caller, active, batch, consume)
            out.append(d)
            if _stops(semantic, d):
                break
        return out

    def decide(
        self,
        req: EvaluationRequest,
        caller: Caller,
        *,
        memo: dict[Any, AgentSubject | AgentTokenRejected] | None = None,
        consume: bool = False,
    ) -> Decision:
        """One decision. ``consume`` (real evaluations, never search or explain) spends one
        ``tool_calls`` unit of the agent's session budget when everything else allows."""
        return self._decide(req, caller, self.bundles.active(), _Batch(memo), consume)

    async def decide_async(
        self,
        req: EvaluationRequest,
        caller: Caller,
        *,
        consume: bool = False,
        offload: Callable[[Callable[[], Any]], Awaitable[Any]] | None = None,
    ) -> Decision:
        """``decide`` for coroutines: the same decision, with the budget unit awaited
        (``BudgetLedger.consume_async``: the budget group commit) instead of blocking a
        thread. The stages before it run in the caller (they read the store: fine on an
        embedded SQLite store) or through ``offload`` (a worker thread, for a store across
        the network); what follows the spend (the verdict, the observer) is in memory."""

        def begin() -> Decision | _Spend:
            return self._until_spend(req, caller, self.bundles.active(), _Batch(), consume)

        step = begin() if offload is None else await offload(begin)
        return step if isinstance(step, Decision) else await self._spend_async(step)

    async def decide_many_async(
        self,
        requests: Sequence[EvaluationRequest],
        caller: Caller,
        *,
        semantic: str = "execute_all",
        consume: bool = True,
    ) -> list[Decision]:
        """``decide_many`` for coroutines, every stage in the caller (an embedded store):
        each decision in turn, awaiting its budget unit; the same amortised reads."""
        active = self.bundles.active()
        batch = _Batch()
        out: list[Decision] = []
        for req in requests:
            step = self._until_spend(req, caller, active, batch, consume)
            d = step if isinstance(step, Decision) else await self._spend_async(step)
            out.append(d)
            if _stops(semantic, d):
                break
        return out

    async def _spend_async(self, step: _Spend) -> Decision:
        spend = getattr(self.budgets, "consume_async", None)
        try:
            if spend is not None:
                ok, error = await spend(step.sid, _ONE_CALL), None
            else:
                ok, error = self._spend(step.sid), None
        except Exception as exc:
            ok, error = False, exc
        return self._after_spend(step, ok, error)

    def _decide(
        self,
        req: EvaluationRequest,
        caller: Caller,
        active: ActiveBundle | None,
        batch: _Batch,
        consume: bool,
    ) -> Decision:
        step = self._until_spend(req, caller, active, batch, consume)
        if isinstance(step, Decision):
            return step
        try:
            ok, error = self._spend(step.sid), None
        except Exception as exc:
            ok, error = False, exc
        return self._after_spend(step, ok, error)

    def _spend(self, sid: str) -> bool:
        if self.budgets is None:  # pragma: no cover - a _Spend exists only with a ledger
            raise RuntimeError("no budget ledger")
        return self.budgets.consume(sid, _ONE_CALL)

    def _until_spend(
        self,
        req: EvaluationRequest,
        caller: Caller,
        active: ActiveBundle | None,
        batch: _Batch,
        consume: bool,
    ) -> Decision | _Spend:
        """Every stage up to the budget unit: the decision, or what it waits for when it
        allows so far and spends a metered session's ``tool_calls`` unit."""
        # a keyed-hash id: no GIL-releasing urandom per decision (tessera/ids.py)
        decision_id = "dec_" + unique_hex(10)
        if active is None:
            r = StageResult("policy", "error", (Reason("policy", "no_policy", "no active bundle"),))
            return Decision("deny", r.reasons, decision_id, None, (r,))
        trace: list[StageResult] = []
        agent: AgentSubject | None = None
        approved: StageResult | None = None
        risk: RiskScore | None = None
        try:
            agent, risk = self._run(req, caller, active.bundle, trace, batch)
            if consume and combine(trace)[0] == "approval_required":
                token_stage = honour_approval_token(self.approvals, req, agent)
                if token_stage is not None:
                    trace.append(token_stage)
                    approved = token_stage if token_stage.outcome == "allow" else None
            if (
                consume
                and agent is not None
                and (approved is not None or combine(trace)[0] == "allow")
            ):
                if self.budgets is not None and "tool_calls" in agent.claims.grant.budgets:
                    return _Spend(req, active, trace, agent, approved, risk, decision_id)
                trace.append(StageResult("budget", "skip"))
        except Exception as exc:  # fail closed: any failure is a deny with its reason
            trace.append(_error("pipeline", exc))
        return self._conclude(req, active, trace, agent, approved, risk, decision_id, consume)

    def _after_spend(self, step: _Spend, ok: bool, error: BaseException | None) -> Decision:
        if error is not None:  # fail closed: the decision denies with the error
            result = _error("budget", error)
        elif ok:
            result = StageResult("budget", "skip", detail={"consumed": dict(_ONE_CALL)})
        else:
            reason = Reason("budget", "budget_exhausted", "the session's tool_calls are spent")
            result = StageResult("budget", "deny", (reason,))
        step.trace.append(result)
        return self._conclude(
            step.req,
            step.active,
            step.trace,
            step.agent,
            step.approved,
            step.risk,
            step.decision_id,
            True,
        )

    def _conclude(
        self,
        req: EvaluationRequest,
        active: ActiveBundle,
        trace: list[StageResult],
        agent: AgentSubject | None,
        approved: StageResult | None,
        risk: RiskScore | None,
        decision_id: str,
        consume: bool,
    ) -> Decision:
        verdict, reasons = combine(trace)
        if verdict == "approval_required" and approved is not None:
            # INVARIANT: only a redeemed one-shot token for exactly this call lifts
            # approval_required; deny and error stay as they are.
            verdict, reasons = "allow", approved.reasons
        decision = Decision(verdict, reasons, decision_id, active.version, tuple(trace))
        if consume and self.observer is not None:
            try:  # the observer learns from the decision; it can never change it
                self.observer.observe(req, agent, decision, risk)
            except Exception:  # learning is best effort; the decision is already made
                log.exception("decision observer failed")
        return decision

    def _run(
        self,
        req: EvaluationRequest,
        caller: Caller,
        bundle: PolicyBundle,
        trace: list[StageResult],
        batch: _Batch,
    ) -> tuple[AgentSubject | None, RiskScore | None]:
        """The stages up to the risk rules: the verified agent and its behaviour score;
        both None for other subjects and when a stage ended the pipeline (then nothing is
        spent and the observer learns nothing)."""
        agent: AgentSubject | None = None
        if req.subject.type == AGENT:
            verified = self._stage(trace, "token", lambda: self._token(req, caller, batch.memo))
            if verified is None:
                return None, None
            agent = verified
            if self._stage(trace, "limits", lambda: self._limits(req, agent, bundle)) is None:
                return None, None
        if self._stage(trace, "rebac", lambda: self._rebac(req, agent, bundle)) is None:
            return None, None
        risk = self.behaviour_score(req, agent, trace)
        if (
            self._stage(trace, "policy", lambda: self._cedar(req, agent, bundle, risk, batch))
            is None
        ):
            return None, None
        needs_human = approval_stage(bundle, req, trace, risk)[0]  # issue 8: only tightens
        if needs_human.outcome != "skip":
            trace.append(needs_human)
        self._stage(trace, "risk", lambda: self._risk(req, bundle, risk))
        if agent is not None and not any(is_final(s) for s in trace):
            marks = bundle.tools.get(req.action.name)
            # A PEP that knows the call reads untrusted content (the gateway's tool marks)
            # says so in context.external_content; marks only ever add taint.
            if (marks is not None and marks.untrusted_input) or req.context.get(
                "external_content"
            ) is True:
                self.taint.taint(agent.claims.sid, req.action.name)
        return agent, risk

    def _stage(self, trace: list[StageResult], name: str, fn: Callable[[], Any]) -> Any:
        """Run a stage; append its result; return its value, or None when it ended the
        pipeline (deny or error)."""
        try:
            result, value = fn()
        except Exception as exc:
            result, value = _error(name, exc), None
        trace.append(result)
        return None if is_final(result) else (value if value is not None else True)

    def _token(
        self,
        req: EvaluationRequest,
        caller: Caller,
        memo: dict[Any, AgentSubject | AgentTokenRejected] | None,
    ) -> tuple[StageResult, AgentSubject | None]:
        if self.agents is None:
            raise AgentTokenRejected("agent subjects are not enabled")
        props = req.subject.properties
        token, jkt = props.get("token"), props.get("jkt", req.context.get("dpop_jkt"))
        # Everything verify reads from the request, exactly; anything else is not memoised.
        key = (
            (token, jkt, req.subject.id)
            if isinstance(token, str)
            and len(token) <= MAX_TOKEN
            and (jkt is None or isinstance(jkt, str))
            else None
        )
        now = self.clock.timestamp()
        found = memo.get(key) if memo is not None and key is not None else None
        if isinstance(found, AgentSubject) and found.claims.exp <= now:
            found = None  # expired during the batch: verify again, as a lone decide would
        try:
            if found is None:
                found = self.agents.verify(props, req.subject.id, req.context, caller, now)
        except AgentTokenRejected as exc:
            found = exc
        if memo is not None and key is not None:
            memo[key] = found
        if isinstance(found, AgentTokenRejected):
            # DESIGN 5: token failures stay one opaque reason; the cause is in the trace
            # (audit record, explain), not in the answer.
            reason = Reason("token", "invalid_token", "the agent token is not valid")
            return StageResult("token", "deny", (reason,), {"cause": found.detail}), None
        c = found.claims
        detail = {"agent": c.client_id, "session": c.sid, "user": found.user, "act": list(c.actors)}
        return StageResult("token", "allow", detail=detail), found

    def _limits(
        self, req: EvaluationRequest, agent: AgentSubject, bundle: PolicyBundle
    ) -> tuple[StageResult, None]:
        g = agent.claims.grant
        tool = req.action.name
        deny: list[Reason] = []
        if not g.allows_tool(tool):
            if covered_by_any(g.tools, tool, kind="tool"):
                deny.append(Reason("limits", "tool_denied", f"{tool} is denied to this session"))
            else:
                deny.append(Reason("limits", "tool_not_granted", f"{tool} is not a session tool"))
        rtype = bundle.scope_types.get(req.resource.type, req.resource.type)
        scope = f"{rtype}:{req.resource.id}"
        if not g.allows_scope(scope):
            deny.append(
                Reason("limits", "data_scope", f"{scope} is outside the session's data scope")
            )
        if g.budgets.get("tool_calls", 1) <= 0:
            deny.append(Reason("limits", "budget_exhausted", "tool_calls"))
        if deny:
            return StageResult("limits", "deny", tuple(deny)), None
        marks = bundle.tools.get(tool)
        tainted = self.taint.is_tainted(agent.claims.sid) or req.context.get("tainted") is True
        egress = (marks is not None and marks.egress) or req.context.get("egress") is True
        if egress and tainted:
            reason = Reason(
                "limits",
                "session_tainted",
                f"{tool} is an egress tool and the session read untrusted content",
            )
            outcome = "deny" if bundle.taint == "deny" else "approval_required"
            return StageResult("limits", outcome, (reason,)), None  # type: ignore[arg-type]
        return StageResult("limits", "allow", detail={"tainted": tainted}), None

    def _rebac(
        self, req: EvaluationRequest, agent: AgentSubject | None, bundle: PolicyBundle
    ) -> tuple[StageResult, None]:
        rule = bundle.actions.get(req.action.name)
        if rule is None:
            reason = Reason(
                "rebac", "unmapped_action", f"{req.action.name} is not mapped by the bundle"
            )
            return StageResult("rebac", "deny", (reason,)), None
        if rule.relation is None:
            return StageResult("rebac", "skip", detail={"relation": None}), None
        if self.relations is None:
            raise RuntimeError("no relationship engine configured")
        # decisions.md 85: relations only against the bundle's pinned model.
        mismatch = model_mismatch(bundle, self.relations)
        if mismatch is not None:
            return StageResult("rebac", "deny", (mismatch,), {"relation": rule.relation}), None
        obj = f"{req.resource.type}:{req.resource.id}"
        users = (
            [f"agent:{agent.agent}"] + ([f"user:{self.user_ref(agent.user)}"] if agent.user else [])
            if agent is not None
            else [f"{req.subject.type}:{req.subject.id}"]
        )
        checks = {}
        for user in users:
            ok = self.relations.check(user, rule.relation, obj, req.context)
            checks[user] = ok
            if not ok:
                reason = Reason("rebac", "no_relation", f"{user} is not {rule.relation} of {obj}")
                return StageResult("rebac", "deny", (reason,), {"checks": checks}), None
        return StageResult(
            "rebac", "allow", detail={"relation": rule.relation, "checks": checks}
        ), None

    def behaviour_score(
        self, req: EvaluationRequest, agent: AgentSubject | None, trace: list[StageResult]
    ) -> RiskScore:
        try:
            risk = self.behaviour.score(req, agent.claims.sid if agent else None, agent=agent)
        except Exception:  # the deterministic decision stands; the trace says so
            risk = RiskScore(0, "unavailable", available=False, reasons=("behaviour_error",))
        reasons = (
            ()
            if risk.available
            else (Reason("behaviour", "behaviour_unavailable", ",".join(risk.reasons)),)
        )
        detail = {"score": risk.score, "level": risk.level, "reasons": list(risk.reasons)}
        trace.append(StageResult("behaviour", "skip", reasons, detail))
        return risk

    def _cedar(
        self,
        req: EvaluationRequest,
        agent: AgentSubject | None,
        bundle: PolicyBundle,
        risk: RiskScore,
        batch: _Batch,
    ) -> tuple[StageResult, None]:
        r = req.resource
        principal, shared = self._principal(req, agent, batch)
        rest: list[dict[str, Any]] = []
        if (r.type, r.id) != principal:
            rattrs = dict(r.properties)
            rattrs.update(batch.attributes(self.attributes, r.type, r.id) or {})
            rest.append(_entity(r.type, r.id, rattrs))
        context = {k: v for k, v in req.context.items() if k != "dpop_jkt"}
        context["risk"] = {"score": risk.score, "level": risk.level}
        answer = bundle.cedar.authorize(
            principal, req.action.name, (r.type, r.id), cedar_value(context), rest, shared=shared
        )
        detail: dict[str, Any] = {"policies": list(answer.policies)}
        if answer.errors:
            detail["errors"] = list(answer.errors)
        if answer.allowed:
            reasons = tuple(Reason("policy", "permit", p) for p in answer.policies)
            return StageResult("policy", "allow", reasons, detail), None
        if answer.policies:
            reasons = tuple(Reason("policy", "forbid", p) for p in answer.policies)
            return StageResult("policy", "deny", reasons, detail), None
        msg = "no policy permits the request" + (
            "; " + answer.errors[0][:200] if answer.errors else ""
        )
        return StageResult("policy", "deny", (Reason("policy", "no_permit", msg),), detail), None

    def _principal(
        self, req: EvaluationRequest, agent: AgentSubject | None, batch: _Batch
    ) -> tuple[tuple[str, str], SharedEntities]:
        """The Cedar principal and the entities that come with it (its user when an agent
        acts on behalf of one): for an agent the same for every request of its session in
        a batch, so built once per batch."""
        if agent is None:
            s = req.subject
            attrs = {k: v for k, v in s.properties.items() if k not in _PRIVATE_PROPS}
            attrs.update(batch.attributes(self.attributes, s.type, s.id) or {})
            return (s.type, s.id), SharedEntities([_entity(s.type, s.id, attrs)])
        own = batch.attributes(self.attributes, AGENT, agent.agent)
        user = batch.attributes(self.attributes, "user", agent.user) if agent.user else None
        try:  # the directory's part of the key, as exact text (True and 1 differ)
            key = (agent.token_hash, _text(own), _text(user))
        except (TypeError, ValueError):
            key = None
        hit = self._principals.get(key) if key is not None else None
        if hit is not None and hit[0] is agent:
            return (AGENT, agent.agent), hit[1]
        entities: list[dict[str, Any]] = []
        attrs = dict(own or {})
        attrs.update(agent.attributes())
        if agent.user:
            entities.append(_entity("user", agent.user, user or {}))
        entities.append(_entity(AGENT, agent.agent, attrs))
        shared = SharedEntities(entities)
        if key is not None:
            if len(self._principals) >= MAX_PRINCIPALS:
                self._principals.clear()
            self._principals[key] = (agent, shared)
        return (AGENT, agent.agent), shared

    def _risk(
        self, req: EvaluationRequest, bundle: PolicyBundle, risk: RiskScore
    ) -> tuple[StageResult, None]:
        """Risk rules (DESIGN 5): they may only tighten a decision."""
        if not risk.available:
            return StageResult("risk", "skip"), None
        why = f" ({', '.join(risk.reasons[:4])})" if risk.reasons else ""
        if risk.score >= bundle.deny_at:
            reason = Reason("risk", "high_risk", f"behaviour score {risk.score}{why}")
            return StageResult("risk", "deny", (reason,)), None
        rule = bundle.actions.get(req.action.name)
        sensitive = (rule is not None and rule.sensitive) or req.context.get("sensitive") is True
        if risk.score >= bundle.approval_at and sensitive:
            reason = Reason(
                "risk",
                "risk_approval",
                f"behaviour score {risk.score}{why} on a sensitive action",
            )
            return StageResult("risk", "approval_required", (reason,)), None
        return StageResult("risk", "skip"), None
