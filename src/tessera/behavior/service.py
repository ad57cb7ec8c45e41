"""The behaviour service: the engine, its persistence and its events.

Writes are batched off the hot path: decisions only mutate memory; a background flusher
(started on first use) writes changed baselines, drift findings and the events
``risk.level_changed`` / ``behavior.drift_detected`` (COORDINATION.md contract) in one
transaction every ``flush_interval`` seconds, and once more on ``close``. A failed flush
keeps its work queued for the next one. The stored baselines are loaded on first use
(before the first score, flush or CLI read), so a restart resumes where the last flush left
off.

Several nodes: each node learns from the decisions it makes and its flush overwrites the
stored state of the agents it saw (last writer wins). Findings and events are never lost;
counts learned on another node since its last flush may be.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tessera.behavior.engine import (
    BehaviourEngine,
    BehaviourSettings,
    DriftNotice,
    LevelChange,
    Notice,
    agent_state_from,
)
from tessera.behavior.ports import BehaviourRepo, SessionRevoker, StoredFinding
from tessera.clock import Clock
from tessera.errors import NotFound

log = logging.getLogger("tessera.behavior")
ACTOR = "behaviour"


def remediation(agent: str, kind: str) -> str:
    what = "its previous model version" if kind == "model" else "its frozen reference window"
    return (
        f"Agent {agent}'s tool use has drifted from {what}. Review the evidence against the "
        "agent's purpose. If the change is expected (a new task, an accepted model upgrade), "
        f"accept it with `tessera behavior rebaseline {agent}`; otherwise narrow its ceiling "
        f"or suspend it (`tessera agent suspend {agent}`)."
    )


@dataclass
class BehaviourService:
    store: Any  # SqlStore: write() / read() transactions with ``.connection`` and ``.events``
    clock: Clock
    repo: Callable[[Any], BehaviourRepo]
    settings: BehaviourSettings = field(default_factory=BehaviourSettings)
    revoker: SessionRevoker | None = None
    flush_interval: float = 2.0

    def __post_init__(self) -> None:
        self.engine = BehaviourEngine(self.settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flush_lock = threading.Lock()
        self._pending: list[Notice] = []
        self._loaded = False
        self._load_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._loaded

    def ensure_loaded(self) -> None:
        """Load the stored baselines once, before this process scores, learns or flushes
        anything (so a node never overwrites stored state with a fresh, empty one)."""
        if not self._loaded:
            with self._load_lock:
                if not self._loaded:
                    self.load()

    def load(self) -> int:
        """Load the stored baselines into memory; returns the agent count. State this
        process already holds is newer (learned here) and is kept. Without a store (tests,
        the simulator) the engine is memory-only."""
        if self.store is None:
            self._loaded = True
            return 0
        with self.store.read() as tx:
            repo = self.repo(tx.connection)
            agents = repo.load_states("agent")
            peers = repo.load_states("peer")
        for key, data in agents:
            if key not in self.engine.agents:
                self.engine.load_agent(data)
        for key, data in peers:
            if key not in self.engine.peers:
                self.engine.load_peer(key, data)
        self._loaded = True
        return len(agents)

    def ensure_started(self) -> None:
        if self._thread is None and self.flush_interval > 0:
            with self._flush_lock:
                if self._thread is None:
                    self._stop.clear()
                    self._thread = threading.Thread(
                        target=self._run, name="tessera-behaviour-flush", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except Exception:  # keep flushing later; the work stays queued
                log.exception("behaviour flush failed")

    def close(self) -> None:
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join(timeout=10)
        try:
            self.flush()
        except Exception:
            log.exception("behaviour flush at shutdown failed")

    # -- persistence ---------------------------------------------------------------------

    def flush(self) -> int:
        """Write changed state, findings and events in one transaction; returns the number
        of events written. On failure everything stays queued for the next flush."""
        if self.store is None:
            return 0
        self.ensure_loaded()
        with self._flush_lock:
            self.engine.check_drift_due()
            notices = self._pending + self.engine.take_notices()
            self._pending = []
            agents, peers = self.engine.take_dirty()
            if not notices and not agents and not peers:
                return 0
            try:
                return self._write(notices, agents, peers)
            except Exception:
                self._pending = notices
                self.engine.dirty_agents.update(agents)
                self.engine.dirty_peers.update(peers)
                raise

    def _write(
        self,
        notices: list[Notice],
        agents: dict[str, dict[str, Any]],
        peers: dict[str, dict[str, Any]],
    ) -> int:
        now = self.clock.now()
        written = 0
        with self.store.write() as tx:
            repo = self.repo(tx.connection)
            stored = repo.generations(sorted(agents)) if agents else {}
            for key in list(agents):
                if stored.get(key, 0) > int(agents[key].get("generation", 0)):
                    # re-baselined elsewhere (the CLI) since we loaded it: adopt, not overwrite
                    theirs = repo.get_state("agent", key)
                    if theirs is not None:
                        agents[key] = self.engine.adopt(theirs)
            for key, data in agents.items():
                repo.save_state(
                    "agent",
                    key,
                    operator=str(data.get("operator", "")),
                    model_digest=str(data.get("model_digest", "")),
                    calls=int(data["baseline"]["n"]),
                    level=str(data.get("level", "low")),
                    state=data,
                    now=now,
                )
            for key, data in peers.items():
                operator, _, digest = key.partition("\t")
                repo.save_state(
                    "peer",
                    key,
                    operator=operator,
                    model_digest=digest,
                    calls=int(data["n"]),
                    level="low",
                    state=data,
                    now=now,
                )
            for n in notices:
                if isinstance(n, LevelChange):
                    tx.events.append(
                        "risk.level_changed",
                        n.agent,
                        {
                            "agent": n.agent,
                            "session": n.session,
                            "level": n.level,
                            "previous": n.previous,
                            "score": n.score,
                            "reasons": list(n.reasons),
                            "model_digest": n.model_digest,
                        },
                        ACTOR,
                    )
                elif n.resolved:
                    repo.resolve_findings(n.agent, n.kind, now)
                    continue
                else:
                    self._open(repo, n, now)
                    tx.events.append(
                        "behavior.drift_detected",
                        n.agent,
                        {
                            "agent": n.agent,
                            "kl": n.kl,
                            "threshold": n.threshold,
                            "window": n.window,
                            "model_digest": n.model_digest,
                        },
                        ACTOR,
                    )
                written += 1
        return written

    @staticmethod
    def _open(repo: BehaviourRepo, n: DriftNotice, now: Any) -> str:
        evidence = {
            "kl_tools": n.kl_tools,
            "kl_transitions": n.kl_transitions,
            "compared_to": n.compared_to,
            "top_changes": [
                {"category": c.replace("\t", " -> "), "recent": p, "baseline": q}
                for c, p, q in n.top
            ],
        }
        return repo.open_finding(
            agent=n.agent,
            kind=n.kind,
            severity=n.severity,
            kl=n.kl,
            threshold=n.threshold,
            window=n.window,
            model_digest=n.model_digest,
            compared_to=n.compared_to,
            evidence=evidence,
            remediation=remediation(n.agent, n.kind),
            now=now,
        )

    # -- enforcement ---------------------------------------------------------------------

    def revoke(self, sid: str, reasons: tuple[str, ...]) -> list[str]:
        """High risk (DESIGN 5): revoke the session through the token service, so the
        revocation is stored, evented and reaches every node."""
        if self.revoker is None:
            return []
        reason = "behaviour: high risk (" + ", ".join(reasons[:5]) + ")"
        return self.revoker.revoke_session(sid, reason[:200], actor=ACTOR)

    # -- reading (CLI) -------------------------------------------------------------------

    def summary(self, agent: str) -> dict[str, Any]:
        """An agent's stored baseline, summarised; ``NotFound`` when it has none."""
        with self.store.read() as tx:
            data = self.repo(tx.connection).get_state("agent", agent)
        if data is None:
            raise NotFound(f"no behaviour baseline for agent {agent!r}")
        state = agent_state_from(data, self.settings.window)
        b = state.baseline
        vol = {t: round(float(2.718281828459045**m.mean)) for t, m in b.volume.items()}
        hours = b.hours
        active = [h for h in range(24) if b.n and hours[h] / b.n >= 0.02]
        return {
            "agent": state.agent,
            "operator": state.operator,
            "model_digest": state.model_digest,
            "learned_calls": b.n,
            "observed_calls": state.observed,
            "warm": b.n >= self.settings.warmup_calls,
            "warmup_calls": self.settings.warmup_calls,
            "reference_frozen": state.reference.frozen,
            "reference_calls": state.reference.n,
            "level": state.level,
            "open_drift": sorted(state.drift_open),
            "top_tools": [[t, round(s, 4)] for t, s in b.top_tools()],
            "top_transitions": [[t, round(s, 4)] for t, s in b.top_transitions(5)],
            "median_volume_bytes": vol,
            "active_hours_utc": active,
            "models": {d: c["n"] for d, c in state.digests.items()},
        }

    def agents(self) -> list[dict[str, Any]]:
        with self.store.read() as tx:
            return self.repo(tx.connection).summaries()

    def findings(
        self, *, agent: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[StoredFinding]:
        with self.store.read() as tx:
            return self.repo(tx.connection).findings(agent=agent, status=status, limit=limit)

    def rebaseline(self, agent: str) -> bool:
        """Accept an agent's current behaviour: the stored recent window becomes its frozen
        reference and its open drift findings are resolved. The generation goes up, so a
        running node adopts the new reference at its next flush instead of overwriting it."""
        with self.store.read() as tx:
            data = self.repo(tx.connection).get_state("agent", agent)
        if data is None:
            raise NotFound(f"no behaviour baseline for agent {agent!r}")
        self.engine.load_agent(data)
        self.engine.rebaseline(agent, self.clock.timestamp())
        agents, _ = self.engine.take_dirty()
        with self.store.write() as tx:
            repo = self.repo(tx.connection)
            st = agents[agent]
            repo.save_state(
                "agent",
                agent,
                operator=str(st["operator"]),
                model_digest=str(st["model_digest"]),
                calls=int(st["baseline"]["n"]),
                level=str(st["level"]),
                state=st,
                now=self.clock.now(),
            )
            repo.resolve_findings(agent, None, self.clock.now())
        return True
