"""The behaviour engine: features, scores, session and agent risk levels, baselines, drift.

Pure domain logic over an injected timestamp (no clock, no store): ``score`` reads, and
``observe`` learns. The pipeline scores a call *before* deciding and observes it after, so
a call is never judged against a baseline that already contains it.

Learning rules (why slow creep and attacks are not learned as normal):
- only calls the PDP allowed, and that scored below ``learn_below``, are learned;
- the agent's first ``reference_calls`` learned calls form its reference window, which is
  then frozen; drift compares the recent window against it, not against the live baseline.

Concurrency: ``observe`` and the drift check run under one lock; ``score`` reads plain
dicts without it (a racing update at worst makes a score one call stale).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from tessera.behavior import scoring
from tessera.behavior.baseline import SEP, Baseline, Reference
from tessera.behavior.drift import Divergence, counts, divergence
from tessera.behavior.state import (
    SPAN_CALLS,
    AgentState,
    DriftNotice,
    LevelChange,
    Notice,
    SessionState,
    agent_state_dict,
    agent_state_from,
    peer_key,
)

__all__ = [
    "Assessment",
    "BehaviourEngine",
    "BehaviourSettings",
    "DriftNotice",
    "LevelChange",
    "Notice",
    "agent_state_dict",
    "agent_state_from",
    "level_of",
]

LEVELS: Final = ("low", "medium", "high")
SESSION_DECAY: Final = 0.85
ESCALATE: Final = 10.0


@dataclass(frozen=True)
class BehaviourSettings:
    """Tuning of the engine; the main knobs come from `TESSERA_BEHAVIOUR_*` (docs/behavior.md)."""

    warmup_calls: int = 200
    reference_calls: int = 600
    window: int = 400
    drift_every: int = 50
    drift_threshold: float = 0.1
    medium_at: int = 50
    high_at: int = 80
    learn_below: int = 35
    after_external_calls: int = 3
    session_idle: float = 3600.0
    agent_memory: float = 3600.0
    max_sessions: int = 100_000


@dataclass(frozen=True, slots=True)
class Assessment:
    """One call's score: ``score`` (0-100) is what the pipeline sees (the call's own score,
    or its session's once the session is high), ``reasons`` the components that drove it."""

    score: int
    level: str
    reasons: tuple[str, ...]
    parts: tuple[tuple[str, float], ...]
    call_score: int
    basis: str  # agent | peer | none (warming up)


def level_of(score: float, s: BehaviourSettings) -> str:
    return "high" if score >= s.high_at else ("medium" if score >= s.medium_at else "low")


def _rank(level: str) -> int:
    return LEVELS.index(level) if level in LEVELS else 0


class BehaviourEngine:
    def __init__(self, settings: BehaviourSettings | None = None) -> None:
        self.settings = settings or BehaviourSettings()
        self.agents: dict[str, AgentState] = {}
        self.peers: dict[str, Baseline] = {}
        self.sessions: dict[str, SessionState] = {}
        self.notices: list[Notice] = []
        self.dirty_agents: set[str] = set()
        self.dirty_peers: set[str] = set()
        self.drift_due: dict[str, float] = {}
        self._lock = threading.Lock()
        self._observed = 0

    # -- features and scores (hot path, no lock) ----------------------------------------

    def features(
        self,
        *,
        agent: str,
        operator: str,
        model_digest: str,
        session: str | None,
        tool: str,
        rtype: str,
        resource_id: str,
        volume: int | None,
        external: bool,
        ts: float,
    ) -> scoring.CallFeatures:
        s = self.sessions.get(session) if session is not None else None
        prev = gap = span = None
        after_external = False
        if s is not None:
            prev = s.prev
            if s.times:
                gap = max(0.0, ts - s.times[-1])
                if len(s.times) == SPAN_CALLS - 1:
                    span = max(0.0, ts - s.times[0])
            after_external = s.since_external < self.settings.after_external_calls
        wildcard = resource_id == "*" or resource_id.endswith(":*") or resource_id == ""
        hour = int(ts // 3600) % 24
        return scoring.CallFeatures(
            agent,
            operator,
            model_digest,
            session,
            tool,
            rtype,
            wildcard,
            volume,
            ts,
            hour,
            gap,
            prev,
            external,
            after_external,
            span,
        )

    def score(self, f: scoring.CallFeatures) -> Assessment:
        st = self.settings
        a = self.agents.get(f.agent)
        peer = self.peers.get(peer_key(f.operator, f.model_digest))
        if a is not None and a.baseline.n >= st.warmup_calls:
            base, basis = a.baseline, "agent"
        elif peer is not None and peer.n >= st.warmup_calls:
            base, basis, peer = peer, "peer", None
        else:
            return Assessment(0, "low", ("warming_up",), (), 0, "none")
        parts = scoring.components(f, base, peer)
        call = scoring.total(parts)
        score = call
        sess = self.sessions.get(f.session) if f.session is not None else None
        reasons = scoring.named(parts)
        if sess is not None and sess.level == "high" and sess.score > score:
            score = round(sess.score)
            reasons = (*reasons, "session_high_risk")
        return Assessment(score, level_of(score, st), reasons, tuple(parts), call, basis)

    # -- learning ------------------------------------------------------------------------

    def observe(self, f: scoring.CallFeatures, a: Assessment, *, allowed: bool) -> None:
        """After the decision: session state, level changes, learning, drift."""
        st = self.settings
        with self._lock:
            agent = self.agents.get(f.agent)
            if agent is None:
                agent = self.agents[f.agent] = AgentState(f.agent, f.operator, f.model_digest)
            agent.operator, agent.model_digest = f.operator, f.model_digest
            agent.observed += 1
            self._session_update(f, a)
            learn = allowed and a.call_score < st.learn_below
            if learn:
                args = (f.tool, f.prev, f.rtype, f.wildcard, f.hour, f.log_volume, f.log_span)
                agent.baseline.learn(*args, ts=f.ts)
                pk = peer_key(f.operator, f.model_digest)
                peer = self.peers.get(pk)
                if peer is None:
                    peer = self.peers[pk] = Baseline()
                peer.learn(*args, ts=f.ts)
                self.dirty_peers.add(pk)
                ref = agent.reference
                if not ref.frozen:
                    ref.add(f.tool, f.prev)
                    if ref.n >= st.reference_calls:
                        ref.frozen, ref.frozen_at = True, f.ts
            # interned: the window holds hundreds of these per agent, mostly the same few
            trans = None if f.prev is None else sys.intern(f.prev + SEP + f.tool)
            agent.window.append((sys.intern(f.tool), trans, sys.intern(f.model_digest)))
            while len(agent.window) > st.window:
                agent.window.popleft()
            dc = agent.digest_counts(f.model_digest)
            dc["n"] += 1
            dc["tools"][f.tool] = dc["tools"].get(f.tool, 0) + 1
            if trans is not None:
                dc["transitions"][trans] = dc["transitions"].get(trans, 0) + 1
            self.dirty_agents.add(f.agent)
            agent.since_check += 1
            if agent.since_check >= st.drift_every:
                agent.since_check = 0
                self.drift_due[f.agent] = f.ts  # checked off the hot path (check_drift_due)
            self._agent_level(agent, f, a)
            self._observed += 1
            if self._observed % 1000 == 0:
                self._expire_sessions(f.ts)

    def _session_update(self, f: scoring.CallFeatures, a: Assessment) -> None:
        if f.session is None:
            return
        s = self.sessions.get(f.session)
        if s is None:
            if len(self.sessions) >= self.settings.max_sessions:
                self._expire_sessions(f.ts, force=True)
            s = self.sessions[f.session] = SessionState(f.agent)
        decayed = s.score * SESSION_DECAY
        new = max(float(a.call_score), decayed)
        if a.call_score >= self.settings.medium_at and decayed >= self.settings.medium_at:
            new = min(100.0, new + ESCALATE)  # repeated anomalies escalate the session
        s.score = new
        level = level_of(new, self.settings)
        if _rank(level) > _rank(s.level):
            self.notices.append(
                LevelChange(
                    f.agent, f.session, level, s.level, round(new), a.reasons, f.model_digest, f.ts
                )
            )
            s.level = level
        s.prev = f.tool
        s.times.append(f.ts)
        s.since_external = 0 if f.external else s.since_external + 1
        s.last_ts = f.ts

    def _agent_level(self, agent: AgentState, f: scoring.CallFeatures, a: Assessment) -> None:
        st = self.settings
        sess = self.sessions.get(f.session) if f.session is not None else None
        if sess is not None and sess.level == "high":
            agent.last_high = f.ts
        elif sess is not None and sess.level == "medium":
            agent.last_medium = f.ts
        level = "low"
        if agent.drift_open:
            level = "medium"
        if f.ts - agent.last_medium < st.agent_memory and agent.last_medium:
            level = "medium"
        if f.ts - agent.last_high < st.agent_memory and agent.last_high:
            level = "high"
        if level != agent.level:
            reasons = ("behaviour_drift",) if agent.drift_open and level == "medium" else a.reasons
            self.notices.append(
                LevelChange(
                    agent.agent,
                    None,
                    level,
                    agent.level,
                    a.score,
                    reasons,
                    f.model_digest,
                    f.ts,
                )
            )
            agent.level = level

    # -- drift ---------------------------------------------------------------------------

    def check_drift_due(self) -> int:
        """Run the drift checks that ``observe`` scheduled (every ``drift_every`` calls of an
        agent); the service's flusher calls this, so no decision waits for numpy."""
        if not self.drift_due:
            return 0
        with self._lock:
            due, self.drift_due = self.drift_due, {}
            for agent_id, ts in due.items():
                agent = self.agents.get(agent_id)
                if agent is not None:
                    self._check_drift(agent, ts)
            return len(due)

    def _check_drift(self, agent: AgentState, ts: float) -> None:
        st = self.settings
        if len(agent.window) < st.window:
            return
        checks: list[tuple[str, Divergence, Divergence, str]] = []
        if agent.reference.frozen:
            tools = counts([w[0] for w in agent.window])
            trans = counts([w[1] for w in agent.window if w[1] is not None])
            checks.append(
                (
                    "agent",
                    divergence(tools, agent.reference.tools),
                    divergence(trans, agent.reference.transitions),
                    "reference",
                )
            )
        current = agent.model_digest
        others = [(d, c) for d, c in agent.digests.items() if d != current and c["n"] >= st.window]
        mine = [w for w in agent.window if w[2] == current]
        if others and len(mine) >= st.window // 2:
            prev_digest, prev = max(others, key=lambda x: x[1]["n"])
            checks.append(
                (
                    "model",
                    divergence(counts([w[0] for w in mine]), prev["tools"]),
                    divergence(
                        counts([w[1] for w in mine if w[1] is not None]), prev["transitions"]
                    ),
                    prev_digest,
                )
            )
        for kind, dt, dtr, compared in checks:
            kl = max(dt.kl, dtr.kl)
            opened = kind in agent.drift_open
            if kl >= st.drift_threshold and not opened:
                agent.drift_open[kind] = kl
                severity = "high" if kl >= 3 * st.drift_threshold else "medium"
                self.notices.append(
                    DriftNotice(
                        agent.agent,
                        kind,
                        kl,
                        dt.kl,
                        dtr.kl,
                        st.drift_threshold,
                        len(agent.window),
                        current,
                        compared,
                        severity,
                        dt.top + dtr.top,
                        ts,
                    )
                )
            elif opened and kl < 0.8 * st.drift_threshold:
                del agent.drift_open[kind]
                self.notices.append(
                    DriftNotice(
                        agent.agent,
                        kind,
                        kl,
                        dt.kl,
                        dtr.kl,
                        st.drift_threshold,
                        len(agent.window),
                        current,
                        compared,
                        "info",
                        (),
                        ts,
                        resolved=True,
                    )
                )

    def drift_now(self, agent_id: str) -> dict[str, Any]:
        """The current divergences of one agent (for ``tessera behavior drift``)."""
        with self._lock:
            agent = self.agents.get(agent_id)
            if agent is None or not agent.window:
                return {}
            tools = counts([w[0] for w in agent.window])
            trans = counts([w[1] for w in agent.window if w[1] is not None])
            dt = divergence(tools, agent.reference.tools)
            dtr = divergence(trans, agent.reference.transitions)
            return {
                "window": len(agent.window),
                "reference_frozen": agent.reference.frozen,
                "kl_tools": dt.kl,
                "kl_transitions": dtr.kl,
                "top": [list(t) for t in dt.top + dtr.top],
            }

    def rebaseline(self, agent_id: str, ts: float) -> bool:
        """Accept the agent's current behaviour: its recent window becomes the reference
        and open drift findings close (an operator's decision, recorded by the service)."""
        with self._lock:
            agent = self.agents.get(agent_id)
            if agent is None:
                return False
            ref = Reference(frozen=True, frozen_at=ts)
            for tool, trans, _ in agent.window:
                ref.tools[tool] = ref.tools.get(tool, 0) + 1
                ref.n += 1
                if trans is not None:
                    ref.transitions[trans] = ref.transitions.get(trans, 0) + 1
            agent.reference = ref
            agent.drift_open.clear()
            agent.generation += 1
            self.dirty_agents.add(agent_id)
            return True

    def adopt(self, data: dict[str, Any]) -> dict[str, Any]:
        """Take a newer stored re-baseline (reference, open drift, generation) made by
        another process, keep everything this node learned, and return the merged state."""
        stored = agent_state_from(data, self.settings.window)
        with self._lock:
            agent = self.agents.get(stored.agent)
            if agent is None:
                self.agents[stored.agent] = agent = stored
            else:
                agent.reference = stored.reference
                agent.drift_open = dict(stored.drift_open)
                agent.generation = stored.generation
            return agent_state_dict(agent)

    # -- housekeeping --------------------------------------------------------------------

    def _expire_sessions(self, now: float, *, force: bool = False) -> None:
        idle = self.settings.session_idle / (4 if force else 1)
        for sid in [k for k, s in self.sessions.items() if now - s.last_ts > idle]:
            del self.sessions[sid]

    def take_notices(self) -> list[Notice]:
        with self._lock:
            out, self.notices = self.notices, []
            return out

    def take_dirty(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """Snapshots of changed agent and peer states (to persist), clearing the marks."""
        with self._lock:
            agents = {a: agent_state_dict(self.agents[a]) for a in self.dirty_agents}
            peers = {p: self.peers[p].to_dict() for p in self.dirty_peers}
            self.dirty_agents.clear()
            self.dirty_peers.clear()
            return agents, peers

    def load_agent(self, data: dict[str, Any]) -> None:
        state = agent_state_from(data, self.settings.window)
        with self._lock:
            self.agents[state.agent] = state

    def load_peer(self, key: str, data: dict[str, Any]) -> None:
        with self._lock:
            self.peers[key] = Baseline.from_dict(data)

    def iter_agents(self) -> Iterator[AgentState]:
        with self._lock:
            items = list(self.agents.values())
        yield from items
