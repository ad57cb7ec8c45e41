"""Remediations: each finding's fix as one normal service call (so each change writes its
event, its audit record and its CAEP signal exactly as an administrator's would).

``plan`` turns findings into actions (a dry run shows them); ``apply`` performs one.
``review`` findings have no automatic action. Applying is safe to retry: an agent already
suspended, a session already revoked or a credential already disabled is "done", not an
error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tessera.errors import Conflict, NotFound, TesseraError
from tessera.identity.ceiling import Ceiling
from tessera.identity.model import AgentStatus
from tessera.identity.narrowing import intersect
from tessera.posture.finding import Finding, Remediation


class IdentityActions(Protocol):
    """The part of ``IdentityService`` remediation uses."""

    def get_agent(self, ref: str) -> Any: ...
    def suspend_agent(self, ref: str, reason: str | None = None, *, actor: str) -> Any: ...
    def narrow_agent_ceiling(self, ref: str, ceiling: dict[str, Any], *, actor: str) -> Any: ...
    def disable_credential(
        self, credential_id: str, reason: str | None = None, *, actor: str
    ) -> Any: ...


class SessionActions(Protocol):
    def revoke_session(self, sid: str, reason: str, *, actor: str) -> list[str]: ...


@dataclass(frozen=True)
class Action:
    finding_key: str
    rule: str
    kind: Remediation
    target: str
    args: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        if self.kind == Remediation.NARROW_CEILING:
            c = self.args.get("ceiling", {})
            return (
                f"narrow ceiling of {self.target} to tools {c.get('tools')}"
                f" and data scopes {c.get('data_scopes')}"
            )
        verb = {
            Remediation.SUSPEND: "suspend agent",
            Remediation.REVOKE_SESSION: "revoke session (and its delegation subtree)",
            Remediation.DISABLE_CREDENTIAL: "disable credential",
        }.get(self.kind, str(self.kind))
        return f"{verb} {self.target}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "finding": self.finding_key,
            "rule": self.rule,
            "action": self.kind.value,
            "target": self.target,
            "description": self.describe(),
        }


@dataclass(frozen=True)
class Outcome:
    action: Action
    status: str  # applied | already | failed
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**self.action.to_dict(), "status": self.status, "message": self.message}


def plan(findings: Iterable[Finding]) -> list[Action]:
    """The actions that would fix ``findings``: suspensions first (they end sessions and
    make later narrowing moot for the attacker), then revocations, narrowing, credentials."""
    actions: list[Action] = []
    for f in findings:
        args = dict(f.remediation_args)
        if f.remediation == Remediation.SUSPEND and args.get("agent"):
            actions.append(Action(f.key, f.rule, f.remediation, str(args["agent"])))
        elif f.remediation == Remediation.REVOKE_SESSION and args.get("session"):
            actions.append(Action(f.key, f.rule, f.remediation, str(args["session"])))
        elif f.remediation == Remediation.NARROW_CEILING and f.agent and args.get("ceiling"):
            actions.append(
                Action(f.key, f.rule, f.remediation, f.agent, {"ceiling": args["ceiling"]})
            )
        elif f.remediation == Remediation.DISABLE_CREDENTIAL:
            for cred in args.get("credentials") or []:
                actions.append(Action(f.key, f.rule, f.remediation, str(cred)))
    order = {
        Remediation.SUSPEND: 0,
        Remediation.REVOKE_SESSION: 1,
        Remediation.NARROW_CEILING: 2,
        Remediation.DISABLE_CREDENTIAL: 3,
    }
    return sorted(actions, key=lambda a: (order.get(a.kind, 9), a.target, a.rule))


class Remediator:
    def __init__(self, identity: IdentityActions, sessions: SessionActions) -> None:
        self._identity = identity
        self._sessions = sessions

    def apply(self, action: Action, *, actor: str) -> Outcome:
        reason = f"posture {action.rule} ({action.finding_key})"
        try:
            return self._apply(action, reason, actor)
        except (Conflict, NotFound) as exc:
            return Outcome(action, "already" if _is_done(exc) else "failed", exc.message)
        except TesseraError as exc:
            return Outcome(action, "failed", exc.message)

    def _apply(self, action: Action, reason: str, actor: str) -> Outcome:
        if action.kind == Remediation.SUSPEND:
            agent = self._identity.get_agent(action.target)
            if agent.status != AgentStatus.ACTIVE:
                return Outcome(action, "already", f"agent is {agent.status.value}")
            self._identity.suspend_agent(action.target, reason, actor=actor)
        elif action.kind == Remediation.REVOKE_SESSION:
            revoked = self._sessions.revoke_session(action.target, reason, actor=actor)
            if not revoked:
                return Outcome(action, "already", "session was no longer active")
            return Outcome(action, "applied", f"{len(revoked)} session(s) revoked")
        elif action.kind == Remediation.NARROW_CEILING:
            agent = self._identity.get_agent(action.target)
            wanted = Ceiling.from_dict(action.args["ceiling"])
            target = intersect(wanted, agent.ceiling)
            if target == agent.ceiling:
                return Outcome(action, "already", "ceiling already as narrow")
            self._identity.narrow_agent_ceiling(action.target, target.to_dict(), actor=actor)
        elif action.kind == Remediation.DISABLE_CREDENTIAL:
            written = self._identity.disable_credential(action.target, reason, actor=actor)
            if written.consistency_token is None:
                return Outcome(action, "already", "credential was already disabled")
        return Outcome(action, "applied")


def _is_done(exc: TesseraError) -> bool:
    return exc.code in {"invalid_transition"}
