"""Authorization of MCP messages (DESIGN flow B; the AuthZEN COAZ-style mapping).

A ``tools/call`` becomes one AuthZEN evaluation: subject = the agent (its verified session
token and DPoP thumbprint), action = ``<server>/<tool>``, resource = the upstream's resource
(or one built from an argument, per the tool's configuration), context = the arguments
(``context.arguments``, so Cedar can restrict paths, recipients, amounts), the behaviour
features ``external_content`` and ``volume``, the tool marks (``egress``, ``sensitive``) and
a one-shot approval token from ``params._meta["tessera/approval"]`` (``approval_token``).
``resources/read`` and ``prompts/get`` are decided the same way
(``<server>/resources/read`` on resource ``mcp_resource:<uri>``, ``<server>/prompts/get``
on ``mcp_prompt:<name>``).

Budgets: the decision reserves one ``tool_calls`` unit (and one ``external_calls`` unit for
an egress tool, when the session has that budget); ``release`` gives them back when the call
does not run (decisions.md 24: PEPs with an executed-callback reserve and release).

This module is synchronous (run it off the event loop); it holds no HTTP and no SQL.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from tessera.audit.record import ActorLayers, AuditEntry
from tessera.crypto.canonical import argument_hash
from tessera.gateway.config import Upstream
from tessera.gateway.ports import CallToApprove
from tessera.pdp.agents import AgentSubject, Caller
from tessera.pdp.model import Action, Decision, Entity, EvaluationRequest, Reason, StageResult
from tessera.pdp.pipeline import DecisionPoint

APPROVAL_META: Final = "tessera/approval"
MAX_ARGUMENTS: Final = 64 * 1024
AUTHORIZED_METHODS: Final = ("tools/call", "resources/read", "prompts/get")


class BudgetReservations(Protocol):
    def reserve(self, sid: str, amounts: Mapping[str, int]) -> bool: ...

    def release(self, sid: str, amounts: Mapping[str, int]) -> None: ...


@dataclass(frozen=True)
class CallRequest:
    """One MCP message that needs a decision, as the gateway understood it."""

    server: str
    method: str
    name: str  # tool name, resource URI or prompt name
    arguments: Mapping[str, Any]
    approval_token: str | None = None

    @property
    def action(self) -> str:
        if self.method == "tools/call":
            return f"{self.server}/{self.name}"
        return f"{self.server}/{self.method}"


@dataclass
class CallVerdict:
    decision: Decision
    request: EvaluationRequest
    reserved: dict[str, int] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return self.decision.verdict

    @property
    def reason_code(self) -> str:
        return self.decision.reasons[0].code if self.decision.reasons else self.verdict

    @property
    def token_refused(self) -> bool:
        """Denied at the token stage: the session ended (or the token stopped verifying)
        after the guard authenticated the request, e.g. a revocation the node learnt in
        between. The agent is answered as authentication would have answered it."""
        return not self.decision.allowed and any(
            r.stage == "token" and r.code == "invalid_token" for r in self.decision.reasons
        )


def _resource(up: Upstream, call: CallRequest) -> Entity:
    if call.method == "resources/read":
        return Entity("mcp_resource", call.name[:512] or "-")
    if call.method == "prompts/get":
        return Entity("mcp_prompt", call.name[:512] or "-")
    spec = up.tool(call.name)
    if spec.resource_type and spec.resource_id_argument:
        value = call.arguments.get(spec.resource_id_argument)
        # A missing or non-string id argument names no resource: it can match no scope.
        rid = value if isinstance(value, str) and 0 < len(value) <= 512 else "-"
        return Entity(spec.resource_type, rid)
    return Entity(up.resource_type, up.name)


class CallGate:
    """Decides MCP messages through the decision point and keeps budgets honest."""

    def __init__(
        self,
        point: DecisionPoint,
        budgets: BudgetReservations | None,
    ) -> None:
        self._point = point
        self._budgets = budgets

    def evaluation(
        self, up: Upstream, call: CallRequest, agent: AgentSubject, token: str, jkt: str | None
    ) -> EvaluationRequest:
        spec = up.tool(call.name) if call.method == "tools/call" else None
        volume = len(json.dumps(call.arguments, separators=(",", ":"), default=str))
        context: dict[str, Any] = {
            "arguments": dict(call.arguments),
            "external_content": bool(spec and spec.untrusted_input),
            "volume": volume,
            "method": call.method,
        }
        if spec is not None and spec.egress:
            context["egress"] = True
        if spec is not None and spec.sensitive:
            context["sensitive"] = True
        if jkt is not None:
            context["dpop_jkt"] = jkt
        if call.approval_token is not None:
            context["approval_token"] = call.approval_token
        return EvaluationRequest(
            Entity("agent", agent.agent, {"token": token, "jkt": jkt}),
            Action(call.action),
            _resource(up, call),
            context,
        )

    def decide(
        self,
        up: Upstream,
        call: CallRequest,
        agent: AgentSubject,
        token: str,
        jkt: str | None,
        caller: Caller,
    ) -> CallVerdict:
        """The decision, with its budget reservation when it allows (DESIGN 5)."""
        req = self.evaluation(up, call, agent, token, jkt)
        decision = self._point.decide(req, caller, consume=True)
        verdict = CallVerdict(decision, req, _consumed(decision))
        if decision.allowed:
            self._reserve_external(up, call, agent, verdict)
        return verdict

    def _reserve_external(
        self, up: Upstream, call: CallRequest, agent: AgentSubject, verdict: CallVerdict
    ) -> None:
        spec = up.tool(call.name) if call.method == "tools/call" else None
        budgets = agent.claims.grant.budgets
        if spec is None or not spec.egress or "external_calls" not in budgets:
            return
        if self._budgets is not None and self._budgets.reserve(
            agent.claims.sid, {"external_calls": 1}
        ):
            verdict.reserved["external_calls"] = 1
            return
        self.release(agent.claims.sid, verdict)
        reason = Reason("budget", "budget_exhausted", "the session's external_calls are spent")
        d = verdict.decision
        verdict.decision = Decision(
            "deny",
            (reason,),
            d.decision_id,
            d.policy_version,
            (*d.trace, StageResult("budget", "deny", (reason,))),
        )

    def reserve_approved(self, agent: AgentSubject, verdict: CallVerdict) -> bool:
        """After a human approved: take the units the allow would have taken."""
        if "tool_calls" not in agent.claims.grant.budgets or self._budgets is None:
            return True
        if not self._budgets.reserve(agent.claims.sid, {"tool_calls": 1}):
            return False
        verdict.reserved["tool_calls"] = 1
        return True

    def release(self, sid: str, verdict: CallVerdict) -> None:
        """The call did not run: give its reserved units back (once)."""
        if verdict.reserved and self._budgets is not None:
            self._budgets.release(sid, verdict.reserved)
        verdict.reserved = {}

    def visible_tools(self, server: str, agent: AgentSubject, names: list[str]) -> set[str]:
        """``tools/list`` filtering: tools the session's grant allows (tools, deny) that the
        active bundle maps (an unmapped action is always denied, DESIGN 6b). Argument
        conditions are decided per call, so a listed tool may still be refused."""
        active = self._point.bundles.active()
        if active is None:
            return set()
        grant = agent.claims.grant
        return {
            n
            for n in names
            if grant.allows_tool(f"{server}/{n}") and f"{server}/{n}" in active.bundle.actions
        }

    def approval_call(
        self, call: CallRequest, agent: AgentSubject, jkt: str | None, verdict: CallVerdict
    ) -> CallToApprove:
        c = agent.claims
        req = verdict.request
        risk = next((s.detail for s in verdict.decision.trace if s.stage == "behaviour"), None)
        return CallToApprove(
            session_id=c.sid,
            agent_id=c.client_id,
            user_id=agent.user,
            act_chain=c.actors,
            action=call.action,
            resource={"type": req.resource.type, "id": req.resource.id},
            arguments=dict(call.arguments),
            argument_hash=argument_hash(call.server, call.name, dict(call.arguments)),
            dpop_jkt=jkt,
            decision_id=verdict.decision.decision_id,
            reasons=tuple(r.to_dict() for r in verdict.decision.reasons),
            risk=dict(risk) if risk else None,
        )


def _consumed(decision: Decision) -> dict[str, int]:
    for stage in decision.trace:
        if stage.stage == "budget":
            consumed = stage.detail.get("consumed")
            if isinstance(consumed, Mapping):
                return {str(k): int(v) for k, v in consumed.items()}
    return {}


def call_record(
    *,
    call: CallRequest,
    agent: AgentSubject,
    verdict: CallVerdict,
    outcome: str,
    service_id: str,
    request_id: str | None,
    upstream_jti: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """The ``gateway.call`` audit record: ids, verdict and reason codes, the argument hash
    (never the arguments, never a token)."""
    c = agent.claims
    d = verdict.decision
    details: dict[str, Any] = {
        "decision_id": d.decision_id,
        "server": call.server,
        "method": call.method,
        "name": call.name[:256],
        "argument_hash": argument_hash(call.server, call.name, dict(call.arguments)),
        "gateway": service_id,
        "verdict": d.verdict,
        "reserved": dict(verdict.reserved),
    }
    if upstream_jti is not None:
        details["upstream_credential_jti"] = upstream_jti
    details.update(extra or {})
    return AuditEntry(
        event_type="gateway.call",
        actor=ActorLayers(
            principal=f"agent:{c.client_id}",
            operator=c.operator,
            agent=c.client_id,
            model_digest=c.grant.model_digest,
            session=c.sid,
            user=agent.user,
            act=c.actors,
        ),
        action=call.action[:256],
        resource=f"{verdict.request.resource.type}:{verdict.request.resource.id}"[:256],
        outcome=outcome,
        reasons=tuple(r.code for r in d.reasons)[:10],
        policy_version=None if d.policy_version is None else str(d.policy_version),
        request_id=request_id,
        jti=c.jti,
        details=details,
    )


def parse_call(server: str, method: str, params: Any) -> CallRequest | str:
    """The call a ``tools/call`` / ``resources/read`` / ``prompts/get`` message asks for, or
    the JSON-RPC ``-32602`` message explaining why its params are invalid."""
    if not isinstance(params, Mapping):
        return "params must be an object"
    meta = params.get("_meta")
    token = meta.get(APPROVAL_META) if isinstance(meta, Mapping) else None
    if token is not None and (not isinstance(token, str) or len(token) > 16_384):
        return "the approval token must be a string"
    if method == "resources/read":
        uri = params.get("uri")
        if not isinstance(uri, str) or not uri or len(uri) > 2048:
            return "params.uri must be a string"
        return CallRequest(server, method, uri, {"uri": uri}, token)
    name = params.get("name")
    if not isinstance(name, str) or not name or len(name) > 256:
        return "params.name must be a string"
    args = params.get("arguments", {})
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        return "params.arguments must be an object"
    if len(json.dumps(args, default=str)) > MAX_ARGUMENTS:
        return "params.arguments is too large"
    return CallRequest(server, method, name, dict(args), token)
