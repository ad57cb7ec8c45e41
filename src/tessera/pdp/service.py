"""The decision point as the rest of Tessera sees it: the pipeline, the policy bundle
versions, and caller authentication, wired over the store (``build_pdp``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
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
from tessera.signals.events import Event
from tessera.signals.tailer import EventTailer

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

    def model_digest(self) -> str | None:  # decisions.md 85 (pinned model)
        digest: str | None = self._rebac.active_model_digest()
        return digest


LIVENESS_EVENT_PREFIXES = ("session.revoked", "agent.", "operator.", "user.", "model.")


class StoredLiveness:
    """Is a session still live? ``TokenService.session_is_live`` over the stored session,
    remembered per token until an event that can end a session arrives through the node's
    event tailer (``session.revoked`` and every agent/operator/user/model change,
    decisions.md 3-4), the session or its agent expires, or ``max_age`` seconds pass (a
    backstop). Revocation therefore reaches this cache only through the log. The hot path reads
    nothing from the store; a node whose tailer is stale raises ``StaleState`` and the
    decision is a deny with reason ``stale_state`` (DESIGN 6)."""

    def __init__(
        self,
        store: Any,
        clock: Clock,
        tokens: Any,
        tailer: EventTailer,
        max_age: float = 60.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self._tokens = tokens
        self._tailer = tailer
        self._max_age = max_age
        self._lock = threading.Lock()
        self._epoch = 0
        self._cache: dict[str, tuple[bool, str, float]] = {}
        tailer.subscribe("session-liveness", self.on_events)

    def on_events(self, _tx: Any, events: Sequence[Event]) -> None:
        """Tailer subscriber: forget every answer when a session may have ended."""
        if any(e.type.startswith(LIVENESS_EVENT_PREFIXES) for e in events):
            with self._lock:
                self._cache.clear()
                self._epoch += 1

    def __call__(self, token_hash: str, sid: str) -> tuple[bool, str]:
        self._tailer.ensure_fresh()  # StaleState: fail closed
        now = self._clock.timestamp()
        with self._lock:
            hit = self._cache.get(token_hash)
            epoch = self._epoch
        if hit is not None and now < hit[2]:
            return hit[0], hit[1]
        until = now + self._max_age
        with self._store.read() as raw:
            tx = self._tokens.view(raw)  # identity reads from the event-fed cache
            rec = tx.sessions.find_by_token_hash(token_hash)
            if rec is None or rec.sid != sid:
                live, reason = False, "unknown session"
            else:
                ok, why = self._tokens.session_is_live(tx, rec, self._clock.now())
                live, reason = bool(ok), str(why)
                agent = tx.agents.get(rec.agent_id)
                for expiry in (rec.expires_at, agent.expires_at if agent else None):
                    if expiry is not None:
                        until = min(until, expiry.timestamp())
        with self._lock:
            # INVARIANT: an answer read before an invalidating event is never kept.
            if epoch == self._epoch:
                if len(self._cache) >= MAX_LIVENESS_CACHE:
                    self._cache.clear()
                self._cache[token_hash] = (live, reason, until)
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
    tailer: EventTailer | None = None,
    user_ref: Callable[[str], str] | None = None,
    budgets: BudgetLedger | None = None,
    behaviour: BehaviourScorer | None = None,
    observer: DecisionObserver | None = None,
) -> PdpService:
    """Wire the PDP. Session liveness is checked on every decision (``StoredLiveness``),
    so a revocation applies to the next decision."""

    node_tailer: EventTailer = tailer or tokens.tailer
    liveness = StoredLiveness(store, clock, tokens, node_tailer)
    policies = PolicyService(store, clock)
    node_tailer.subscribe("policy", policies.on_events)
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
