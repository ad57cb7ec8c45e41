"""The engine's state records: per-session and per-agent state, the notices the flusher
turns into events and findings, and the JSON form of an agent's state (persisted)."""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from tessera.behavior.baseline import SEP, Baseline, Reference

SPAN_CALLS: Final = 10


@dataclass(frozen=True, slots=True)
class LevelChange:
    """``risk.level_changed`` (COORDINATION.md): session None = the agent's level."""

    agent: str
    session: str | None
    level: str
    previous: str
    score: int
    reasons: tuple[str, ...]
    model_digest: str
    ts: float


@dataclass(frozen=True, slots=True)
class DriftNotice:
    """A drift finding opened (``resolved`` False) or closed for one agent."""

    agent: str
    kind: str  # agent (recent vs frozen reference) | model (new model vs previous model)
    kl: float
    kl_tools: float
    kl_transitions: float
    threshold: float
    window: int
    model_digest: str
    compared_to: str
    severity: str
    top: tuple[tuple[str, float, float], ...]
    ts: float
    resolved: bool = False


Notice = LevelChange | DriftNotice


@dataclass(slots=True)
class SessionState:
    agent: str
    prev: str | None = None
    times: deque[float] = field(default_factory=lambda: deque(maxlen=SPAN_CALLS - 1))
    since_external: int = 1_000_000
    score: float = 0.0
    level: str = "low"
    last_ts: float = 0.0


@dataclass
class AgentState:
    agent: str
    operator: str
    model_digest: str
    baseline: Baseline = field(default_factory=Baseline)
    reference: Reference = field(default_factory=Reference)
    window: deque[tuple[str, str | None, str]] = field(default_factory=deque)
    digests: dict[str, dict[str, Any]] = field(default_factory=dict)
    since_check: int = 0
    drift_open: dict[str, float] = field(default_factory=dict)  # kind → kl when opened
    level: str = "low"
    last_high: float = 0.0
    last_medium: float = 0.0
    observed: int = 0
    generation: int = 0  # re-baselines so far (stored; a newer stored one is adopted)

    def digest_counts(self, digest: str) -> dict[str, Any]:
        d = self.digests.get(digest)
        if d is None:
            d = self.digests[digest] = {"n": 0, "tools": {}, "transitions": {}}
        return d


def peer_key(operator: str, digest: str) -> str:
    return operator + SEP + digest


def agent_state_dict(a: AgentState) -> dict[str, Any]:
    return {
        "agent": a.agent,
        "operator": a.operator,
        "model_digest": a.model_digest,
        "baseline": a.baseline.to_dict(),
        "reference": a.reference.to_dict(),
        "window": [list(w) for w in a.window],
        "digests": a.digests,
        "drift_open": a.drift_open,
        "level": a.level,
        "last_high": a.last_high,
        "last_medium": a.last_medium,
        "observed": a.observed,
        "generation": a.generation,
    }


def agent_state_from(d: dict[str, Any], window: int) -> AgentState:
    a = AgentState(str(d["agent"]), str(d.get("operator", "")), str(d.get("model_digest", "")))
    a.baseline = Baseline.from_dict(d.get("baseline", {}))
    a.reference = Reference.from_dict(d.get("reference", {}))
    a.window = deque(
        (
            (
                sys.intern(str(w[0])),
                None if w[1] is None else sys.intern(str(w[1])),
                sys.intern(str(w[2])),
            )
            for w in d.get("window", [])
        ),
        maxlen=None,
    )
    while len(a.window) > window:
        a.window.popleft()
    a.digests = {
        str(k): {
            "n": int(v.get("n", 0)),
            "tools": {str(t): int(c) for t, c in v.get("tools", {}).items()},
            "transitions": {str(t): int(c) for t, c in v.get("transitions", {}).items()},
        }
        for k, v in d.get("digests", {}).items()
    }
    a.drift_open = {str(k): float(v) for k, v in d.get("drift_open", {}).items()}
    a.level = str(d.get("level", "low"))
    a.last_high = float(d.get("last_high", 0.0))
    a.last_medium = float(d.get("last_medium", 0.0))
    a.observed = int(d.get("observed", 0))
    a.generation = int(d.get("generation", 0))
    return a
