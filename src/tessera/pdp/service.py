"""The decision point as the rest of Tessera sees it: the pipeline, the policy bundle
versions, and caller authentication, wired over the store (``build_pdp``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tessera.clock import Clock
from tessera.pdp.agents import SessionTokenVerifier
from tessera.pdp.callers import ServiceAuthenticator
from tessera.pdp.pipeline import DecisionPoint
from tessera.pdp.ports import (
    AttributeSource,
    BehaviourScorer,
    BudgetLedger,
    DecisionObserver,
    DecisionRecorder,
    MemoryAttributes,
    NoopRecorder,
)
from tessera.policy.service import PolicyService

MAX_LIVENESS_CACHE = 50_000


@dataclass
class PdpService:
    point: DecisionPoint
    policies: PolicyService
    callers: ServiceAuthenticator
    recorder: DecisionRecorder
    attributes: AttributeSource


class RebacServiceRelations:
    """``RelationChecker`` over ``tessera.rebac.service.RebacService`` (tuples from the store)."""

    def __init__(self, rebac: Any) -> None:
        self._rebac = rebac

    def check(self, user: str, relation: str, object: str, context: Mapping[str, Any]) -> bool:
        return bool(self._rebac.check(user, relation, object, context=context or None).allowed)


class StoredLiveness:
    """Is a session still live? ``TokenService.session_is_live`` over the stored session,
    remembered per token until the event log moves (every revocation and lifecycle change
    appends an event, decisions.md 3-4) or ``max_age`` seconds pass (time-based expiry).
    With ``event_head`` each decision costs one tiny read; without it, a full check."""

    def __init__(
        self,
        store: Any,
        clock: Clock,
        tokens: Any,
        event_head: Callable[[], int] | None,
        max_age: float = 1.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self._tokens = tokens
        self._head = event_head
        self._max_age = max_age
        self._cache: dict[str, tuple[bool, str, int, float]] = {}

    def __call__(self, token_hash: str, sid: str) -> tuple[bool, str]:
        now = self._clock.timestamp()
        head = self._head() if self._head is not None else -1
        hit = self._cache.get(token_hash)
        if hit is not None and head >= 0 and hit[2] == head and now - hit[3] < self._max_age:
            return hit[0], hit[1]
        with self._store.read() as raw:
            tx = self._tokens.view(raw)  # identity reads from the event-fed cache
            rec = tx.sessions.find_by_token_hash(token_hash)
            if rec is None or rec.sid != sid:
                live, reason = False, "unknown session"
            else:
                ok, why = self._tokens.session_is_live(tx, rec, self._clock.now())
                live, reason = bool(ok), str(why)
        if len(self._cache) >= MAX_LIVENESS_CACHE:
            self._cache.clear()
        self._cache[token_hash] = (live, reason, head, now)
        return live, reason


def build_pdp(
    store: Any,
    clock: Clock,
    *,
    keys: Any,
    issuer: str,
    tokens: Any,
    rebac: Any,
    recorder: DecisionRecorder | None = None,
    attributes: AttributeSource | None = None,
    event_head: Callable[[], int] | None = None,
    user_ref: Callable[[str], str] | None = None,
    budgets: BudgetLedger | None = None,
    behaviour: BehaviourScorer | None = None,
    observer: DecisionObserver | None = None,
) -> PdpService:
    """Wire the PDP. Session liveness is checked on every decision (``StoredLiveness``),
    so a revocation applies to the next decision."""

    liveness = StoredLiveness(store, clock, tokens, event_head)
    policies = PolicyService(store, clock)
    recorder = recorder or NoopRecorder()
    attributes = attributes or MemoryAttributes()
    point = DecisionPoint(
        policies,
        clock,
        relations=RebacServiceRelations(rebac),
        attributes=attributes,
        recorder=recorder,
        agents=SessionTokenVerifier(keys, issuer, liveness),
        user_ref=user_ref,
        budgets=budgets,
        behaviour=behaviour,
        observer=observer,
    )
    return PdpService(
        point, policies, ServiceAuthenticator(keys, issuer, store), recorder, attributes
    )
