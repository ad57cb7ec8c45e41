"""AuthZEN 1.0 request shapes and Tessera's decision values (AuthZEN §5, §6, §7).

Parsing is strict enough to fail closed (wrong types are ``InvalidInput``) and lenient
where the spec is open: unknown members of subject/resource/action are ignored, and
``properties`` / ``context`` are arbitrary JSON objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from tessera.errors import InvalidInput

Outcome = Literal["allow", "deny", "approval_required", "error", "skip"]
Verdict = Literal["allow", "deny", "approval_required"]
SEMANTICS: Final = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")
MAX_ID: Final = 512
MAX_BATCH: Final = 1000


@dataclass(frozen=True, slots=True)
class Entity:
    """An AuthZEN subject or resource: ``type``, ``id`` and optional ``properties``."""

    type: str
    id: str
    properties: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    properties: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True, slots=True)
class EvaluationRequest:
    """One access evaluation (AuthZEN §6.1)."""

    subject: Entity
    action: Action
    resource: Entity
    context: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a stage decided: a stable ``code`` and, for trusted PEPs, a ``message``."""

    stage: str
    code: str
    message: str = ""

    def to_dict(self) -> dict[str, str]:
        out = {"stage": self.stage, "code": self.code}
        if self.message:
            out["message"] = self.message
        return out


@dataclass(frozen=True, slots=True)
class StageResult:
    """What one pipeline stage returned; ``skip`` means the stage did not apply."""

    stage: str
    outcome: Outcome
    reasons: tuple[Reason, ...] = ()
    detail: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Decision:
    """The PDP's answer. ``allowed`` is the AuthZEN boolean: true only for ``allow``."""

    verdict: Verdict
    reasons: tuple[Reason, ...]
    decision_id: str
    policy_version: int | None
    trace: tuple[StageResult, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.verdict == "allow"

    def to_authzen(self, *, explain: bool = False) -> dict[str, Any]:
        """AuthZEN §5.5: ``{decision, context}``; reasons travel in ``context``."""
        ctx: dict[str, Any] = {
            "decision_id": self.decision_id,
            "verdict": self.verdict,
            "reasons": [r.to_dict() for r in self.reasons],
        }
        if self.policy_version is not None:
            ctx["policy_version"] = self.policy_version
        if self.verdict == "approval_required":
            ctx["approval_required"] = True
        if explain:
            ctx["trace"] = [
                {
                    "stage": s.stage,
                    "outcome": s.outcome,
                    "reasons": [r.to_dict() for r in s.reasons],
                    **({"detail": dict(s.detail)} if s.detail else {}),
                }
                for s in self.trace
            ]
        return {"decision": self.allowed, "context": ctx}


def _obj(value: Any, what: str, *, required: bool = True) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{what} must be a JSON object")
    return dict(value)


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID:
        raise InvalidInput(f"{what} must be a non-empty string of at most {MAX_ID} characters")
    return value


def parse_entity(value: Any, what: str, *, need_id: bool = True) -> Entity:
    obj = _obj(value, what)
    etype = _str(obj.get("type"), f"{what}.type")
    eid = _str(obj.get("id"), f"{what}.id") if need_id or "id" in obj else ""
    return Entity(etype, eid, _obj(obj.get("properties"), f"{what}.properties", required=False))


def parse_action(value: Any, what: str = "action") -> Action:
    obj = _obj(value, what)
    return Action(
        _str(obj.get("name"), f"{what}.name"),
        _obj(obj.get("properties"), f"{what}.properties", required=False),
    )


def parse_evaluation(body: Any) -> EvaluationRequest:
    """AuthZEN §6.1: subject, action and resource are required; context is optional."""
    obj = _obj(body, "request")
    return EvaluationRequest(
        parse_entity(obj.get("subject"), "subject"),
        parse_action(obj.get("action")),
        parse_entity(obj.get("resource"), "resource"),
        _obj(obj.get("context"), "context", required=False),
    )


def parse_evaluations(body: Any) -> tuple[list[EvaluationRequest], str]:
    """AuthZEN §7.1: top-level subject/action/resource/context are defaults for each item;
    an item's own member replaces the default (context objects are replaced, not merged).
    Without ``evaluations`` the request is a single evaluation. Returns (items, semantic)."""
    obj = _obj(body, "request")
    options = _obj(obj.get("options"), "options", required=False)
    semantic = options.get("evaluations_semantic", "execute_all")
    if semantic not in SEMANTICS:
        raise InvalidInput("options.evaluations_semantic is not supported")
    items = obj.get("evaluations")
    if items is None:
        return [parse_evaluation(obj)], semantic
    if not isinstance(items, list):
        raise InvalidInput("evaluations must be an array")
    if len(items) > MAX_BATCH:
        raise InvalidInput(f"at most {MAX_BATCH} evaluations per request")
    out = []
    for i, item in enumerate(items):
        one = _obj(item, f"evaluations[{i}]")
        merged = {k: one.get(k, obj.get(k)) for k in ("subject", "action", "resource", "context")}
        out.append(parse_evaluation(merged))
    return out, semantic
