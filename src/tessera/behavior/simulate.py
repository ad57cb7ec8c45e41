"""``tessera behavior simulate``: the generator's workload through the engine, measured as
``docs/behavior-generator.md`` §5 defines. Synthetic: the figures describe this workload."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tessera.behavior.engine import BehaviourEngine, BehaviourSettings, DriftNotice
from tessera.behavior.generator import ATTACK_TYPES, Workload, generate


@dataclass(frozen=True)
class Row:
    attack: str
    instances: int
    detected: int
    high: int  # instances that reached ``high`` (deny + revoke in the pipeline)

    @property
    def rate(self) -> float:
        return self.detected / self.instances if self.instances else 0.0


@dataclass
class SimulationResult:
    seed: int
    scale: float
    events: int
    rows: list[Row]
    benign_calls: int
    benign_flagged: int
    benign_sessions: int
    benign_sessions_flagged: int
    drift_agents: int
    drift_agents_flagged: int
    benign_high: int = 0  # benign calls scored high (a deny and a revocation in the PDP)
    drift_findings: list[DriftNotice] = field(default_factory=list)

    @property
    def call_fp(self) -> float:
        return self.benign_flagged / self.benign_calls if self.benign_calls else 0.0

    @property
    def session_fp(self) -> float:
        n = self.benign_sessions
        return self.benign_sessions_flagged / n if n else 0.0

    @property
    def drift_fp(self) -> float:
        return self.drift_agents_flagged / self.drift_agents if self.drift_agents else 0.0


def run(
    seed: int = 7, scale: float = 1.0, settings: BehaviourSettings | None = None
) -> SimulationResult:
    return evaluate(generate(seed, scale), settings)


def evaluate(w: Workload, settings: BehaviourSettings | None = None) -> SimulationResult:
    """Score every call before learning from it, in time order, as the pipeline does."""
    engine = BehaviourEngine(settings)
    medium = engine.settings.medium_at
    high = engine.settings.high_at
    scenario_agents = {s.agent for s in w.scenarios if s.kind in ("creep", "model_shift")}
    detected: dict[str, bool] = {}
    reached_high: dict[str, bool] = {}
    benign_calls = benign_flagged = benign_high = 0
    flagged_sessions: set[str] = set()
    clean_sessions: set[str] = set()
    drift: list[DriftNotice] = []
    for ev in w.events:
        f = engine.features(
            agent=ev.agent,
            operator=ev.operator,
            model_digest=ev.model_digest,
            session=ev.session,
            tool=ev.tool,
            rtype=ev.resource_type,
            resource_id=ev.resource_id,
            volume=ev.volume,
            external=ev.external_content,
            ts=ev.ts,
        )
        a = engine.score(f)
        if ev.attack_id is not None:
            detected[ev.attack_id] = detected.get(ev.attack_id, False) or a.score >= medium
            reached_high[ev.attack_id] = reached_high.get(ev.attack_id, False) or a.score >= high
        elif (
            ev.ts >= w.warmup_end
            and ev.session not in w.attacked_sessions
            and ev.agent not in scenario_agents
        ):
            benign_calls += 1
            clean_sessions.add(ev.session)
            if a.score >= medium:
                benign_flagged += 1
                flagged_sessions.add(ev.session)
            if a.score >= high:
                benign_high += 1
        # Simulated PDP: everything the generator emits is allowed by the deterministic
        # stages; risk only changes what is learned (scores ≥ learn_below are not).
        engine.observe(f, a, allowed=True)
        engine.check_drift_due()  # the service's flusher does this every few seconds
        for n in engine.take_notices():
            if isinstance(n, DriftNotice) and not n.resolved and n.ts >= w.warmup_end:
                drift.append(n)
    rows: list[Row] = []
    by_kind: dict[str, list[str]] = {}
    for inst in w.attacks:
        by_kind.setdefault(inst.kind, []).append(inst.attack_id)
    for kind in ATTACK_TYPES[:3]:
        ids = by_kind.get(kind, [])
        rows.append(
            Row(
                kind,
                len(ids),
                sum(detected.get(i, False) for i in ids),
                sum(reached_high.get(i, False) for i in ids),
            )
        )
    flagged_agents = {d.agent for d in drift}
    for kind in ATTACK_TYPES[3:]:
        agents = [s.agent for s in w.scenarios if s.kind == kind]
        hits = sum(
            any(d.agent == a and d.ts <= s.end for d in drift)
            for a, s in zip(agents, [s for s in w.scenarios if s.kind == kind], strict=True)
        )
        rows.append(Row(kind, len(agents), hits, 0))
    others = [a for a in w.agents if a not in scenario_agents]
    return SimulationResult(
        w.seed,
        w.scale,
        len(w.events),
        rows,
        benign_calls,
        benign_flagged,
        len(clean_sessions),
        len(flagged_sessions),
        len(others),
        sum(a in flagged_agents for a in others),
        benign_high,
        drift,
    )


def table(r: SimulationResult) -> list[Mapping[str, object]]:
    out: list[Mapping[str, object]] = [
        {
            "attack": row.attack,
            "instances": row.instances,
            "detected": row.detected,
            "detection_rate": round(row.rate, 4),
            "reached_high": row.high,
        }
        for row in r.rows
    ]
    return out
