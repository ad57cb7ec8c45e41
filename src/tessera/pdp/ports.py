"""What the decision point needs from the rest of Tessera, as narrow ports.

Each has a small in-memory implementation here; ``app.py`` plugs in the real ones
(the ReBAC service, the audit ledger, the stored sessions).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tessera.pdp.model import Decision, EvaluationRequest
from tessera.rebac import RebacEngine
from tessera.rebac.jsonmodel import model_digest

if TYPE_CHECKING:
    from tessera.pdp.agents import AgentSubject


class RelationChecker(Protocol):
    """OpenFGA Check (the ReBAC stage). ``RebacService`` fits through a two-line adapter."""

    def check(self, user: str, relation: str, object: str, context: Mapping[str, Any]) -> bool: ...

    def model_digest(self) -> str | None:
        """``rebac.jsonmodel.model_digest`` of the model ``check`` answers with (None: no
        model). The ReBAC stage denies (``model_mismatch``) when it is not the bundle's
        pinned model (decisions.md 85)."""
        ...


class EngineRelations:
    """A ``RelationChecker`` over the pure engine (tests, bundle test files, bench)."""

    def __init__(self, engine: RebacEngine) -> None:
        self.engine = engine
        self._digest = model_digest(engine.model)

    def check(self, user: str, relation: str, object: str, context: Mapping[str, Any]) -> bool:
        return self.engine.check(object, relation, user, context=context or None)

    def model_digest(self) -> str | None:
        return self._digest


class AttributeSource(Protocol):
    """Attributes of subjects and resources the PDP knows (a directory), and the ids of a
    type (candidates for the AuthZEN search APIs)."""

    def attributes(self, etype: str, eid: str) -> Mapping[str, Any] | None: ...

    def ids_of_type(self, etype: str) -> Sequence[str]: ...


class MemoryAttributes:
    def __init__(self, data: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> None:
        self._data: dict[str, dict[str, Mapping[str, Any]]] = {}
        for etype, items in (data or {}).items():
            for eid, attrs in items.items():
                self.put(etype, eid, attrs)

    def put(self, etype: str, eid: str, attrs: Mapping[str, Any]) -> None:
        self._data.setdefault(etype, {})[eid] = dict(attrs)

    def attributes(self, etype: str, eid: str) -> Mapping[str, Any] | None:
        return self._data.get(etype, {}).get(eid)

    def ids_of_type(self, etype: str) -> Sequence[str]:
        return sorted(self._data.get(etype, {}))


@dataclass(frozen=True, slots=True)
class RiskScore:
    """A behaviour score from 0 (normal) to 100; ``available`` is false when the scorer
    failed or timed out, in which case the deterministic decision stands. ``reasons``
    name the features that drove the score, or why it is unavailable. ``learn`` is the
    scorer's own note for learning from the decision it scored (handed back to it with the
    decision, ``DecisionObserver.observe``), opaque to the pipeline."""

    score: int = 0
    level: str = "none"
    available: bool = True
    reasons: tuple[str, ...] = ()
    learn: Any = field(default=None, compare=False, repr=False)


class BehaviourScorer(Protocol):
    def score(
        self,
        request: EvaluationRequest,
        session: str | None,
        agent: AgentSubject | None = None,
    ) -> RiskScore: ...


class NeutralBehaviour:
    """No behaviour engine (``TESSERA_BEHAVIOUR=off``, unit tests): every request scores 0."""

    def score(
        self,
        request: EvaluationRequest,
        session: str | None,
        agent: AgentSubject | None = None,
    ) -> RiskScore:
        return RiskScore()


class DecisionObserver(Protocol):
    """Told about every real decision (evaluation or batch item, never search or explain)
    after it is made; it cannot change it (the behaviour engine learns from it). ``risk`` is
    the behaviour score the decision used (None when no score was reached)."""

    def observe(
        self,
        request: EvaluationRequest,
        agent: AgentSubject | None,
        decision: Decision,
        risk: RiskScore | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class DecisionRecord:
    """One audit record: a single evaluation, a batch, or a search (``kind``)."""

    kind: str  # evaluation | evaluations | search
    caller: str
    request_id: str | None
    decisions: tuple[tuple[EvaluationRequest, Decision], ...] = field(repr=False)


class DecisionRecorder(Protocol):
    def record(self, record: DecisionRecord) -> None: ...


class NoopRecorder:
    def record(self, record: DecisionRecord) -> None:
        return None


class MemoryRecorder:
    """Keeps records in memory (tests; the lead connects the audit ledger)."""

    def __init__(self) -> None:
        self.records: list[DecisionRecord] = []
        self._lock = threading.Lock()

    def record(self, record: DecisionRecord) -> None:
        with self._lock:
            self.records.append(record)


class SessionTaint(Protocol):
    def is_tainted(self, sid: str) -> bool: ...

    def taint(self, sid: str, cause: str) -> None: ...


class MemoryTaint:
    """Taint marks of this node. A tainted session stays tainted until it ends."""

    def __init__(self) -> None:
        self._marks: dict[str, str] = {}

    def is_tainted(self, sid: str) -> bool:
        return sid in self._marks

    def taint(self, sid: str, cause: str) -> None:
        self._marks.setdefault(sid, cause)

    def marks(self) -> Iterable[tuple[str, str]]:
        return list(self._marks.items())


class BudgetLedger(Protocol):
    """Spends session budget units in the store (a conditional decrement per counter)."""

    def consume(self, sid: str, amounts: Mapping[str, int]) -> bool: ...
