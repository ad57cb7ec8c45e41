"""Decisions as evidence: one audit record per evaluation, batch or search (DESIGN 5, the
audit ledger issue). ``record`` returns only once the record is durable (group commit), so
a decision is answered only after its evidence exists; if the ledger cannot be written the
request fails with 503 instead of answering without a record (fail closed).

Never recorded: the subject's properties (an agent subject carries its session token there)
and the request context (it may carry tool arguments); only ids, names, verdicts and reason
codes go into the ledger.
"""

from __future__ import annotations

from typing import Any, Protocol

from tessera.audit.record import ActorLayers, AuditEntry
from tessera.pdp.model import Decision
from tessera.pdp.ports import DecisionRecord

MAX_LISTED = 100


class _Ledger(Protocol):
    def record(self, entry: AuditEntry) -> int: ...

    async def record_async(self, entry: AuditEntry) -> int: ...


def behaviour_note(decision: Decision) -> dict[str, Any]:
    """The behaviour engine's part (DESIGN 5): its score and level, or that it was
    unavailable and why, so the record says when the deterministic decision stood alone."""
    for stage in decision.trace:
        if stage.stage == "behaviour":
            d = stage.detail
            if stage.reasons:
                cause = ",".join(str(x) for x in d.get("reasons", ())) or "unavailable"
                return {"behaviour": {"available": False, "cause": cause[:100]}}
            return {"behaviour": {"score": d.get("score"), "level": d.get("level")}}
    return {}


class AuditDecisionRecorder:
    def __init__(self, ledger: _Ledger) -> None:
        self._ledger = ledger

    def record(self, record: DecisionRecord) -> None:
        self._ledger.record(decision_entry(record))

    async def record_async(self, record: DecisionRecord) -> None:
        """``record`` for coroutines (the AuthZEN endpoints): the same group commit,
        awaited on the event loop; returns once the record is durable."""
        await self._ledger.record_async(decision_entry(record))


def decision_entry(record: DecisionRecord) -> AuditEntry:
    """The ledger entry for one evaluation, batch or search."""
    pairs = record.decisions
    items: list[dict[str, Any]] = []
    for req, decision in pairs[:MAX_LISTED]:
        items.append(
            {
                # the verified agent (token stage), so usage is attributable (posture)
                "agent": _verified_agent(decision),
                "decision_id": decision.decision_id,
                "subject": f"{req.subject.type}:{req.subject.id}"[:256],
                "action": req.action.name[:256],
                "resource": f"{req.resource.type}:{req.resource.id}"[:256],
                "verdict": decision.verdict,
                "reasons": [r.code for r in decision.reasons][:10],
                **behaviour_note(decision),
            }
        )
    first_req, first = pairs[0] if pairs else (None, None)
    if record.kind == "evaluation" and first is not None and first_req is not None:
        outcome: str = first.verdict
        action = first_req.action.name[:256]
        resource = f"{first_req.resource.type}:{first_req.resource.id}"[:256]
        reasons = tuple(r.code for r in first.reasons)[:10]
        policy_version = None if first.policy_version is None else str(first.policy_version)
    else:
        outcome = "batch"
        action, resource, reasons = record.kind, f"{len(pairs)} decisions", ()
        policy_version = None
    principal = (
        f"{first_req.subject.type}:{first_req.subject.id}"[:256]
        if first_req is not None
        else "unknown"
    )
    token = _token_detail(first) if first is not None else {}
    return AuditEntry(
        event_type=f"pdp.{record.kind}",
        actor=ActorLayers(
            principal=principal,
            agent=_short(token.get("agent")),
            session=_short(token.get("session")),
            user=_short(token.get("user")),
        ),
        action=action,
        resource=resource,
        outcome=outcome,
        reasons=reasons,
        policy_version=policy_version,
        request_id=record.request_id,
        details={"caller": record.caller, "decisions": items, "count": len(pairs)},
    )


def _token_detail(decision: Decision) -> dict[str, Any]:
    """The token stage's detail when it verified the agent's session token."""
    for stage in decision.trace:
        if stage.stage == "token" and stage.outcome == "allow" and stage.detail:
            return dict(stage.detail)
    return {}


def _verified_agent(decision: Decision) -> str | None:
    return _short(_token_detail(decision).get("agent"))


def _short(value: Any) -> str | None:
    return value[:256] if isinstance(value, str) and value else None
