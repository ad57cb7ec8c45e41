"""The synthetic workload of ``tessera behavior simulate``, built exactly to
``docs/behavior-generator.md`` (which was written before the detector).

Deterministic: one ``numpy.random.Generator`` (PCG64) seeded once, iterated in a fixed
order; no wall clock. The output is synthetic and says nothing about real agents.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np

EPOCH: Final = 1_767_571_200.0  # 2026-01-05T00:00:00Z, a Monday (spec §1)
DAY: Final = 86_400.0
DAYS: Final = 14
WARMUP_DAYS: Final = 7
UPGRADE_DAY: Final = 9
AGENTS_PER_PROFILE: Final = 4
ATTACKS_PER_TYPE: Final = 40
SUCCESSOR_P: Final = 0.6
GAP_SIGMA: Final = 0.9
VOLUME_SIGMA: Final = 0.7
KIB: Final = 1024

# tool → (resource type, median volume in bytes)  (spec §3 "Volume", "Resources")
TOOLS: Final[Mapping[str, tuple[str, int]]] = {
    "web/search": ("url", 4 * KIB),
    "web/fetch": ("url", 40 * KIB),
    "web/post": ("url", 2 * KIB),
    "docs/read": ("document", 24 * KIB),
    "docs/write": ("document", 8 * KIB),
    "notes/append": ("document", 1 * KIB),
    "mail/list": ("message", 4 * KIB),
    "mail/read": ("message", 12 * KIB),
    "mail/reply": ("message", 3 * KIB),
    "calendar/read": ("event", 4 * KIB),
    "crm/lookup": ("account", 6 * KIB),
    "crm/export": ("account", 8 * KIB),
    "git/diff": ("repo", 16 * KIB),
    "git/read_file": ("repo", 20 * KIB),
    "git/push": ("repo", 8 * KIB),
    "ci/status": ("repo", 4 * KIB),
    "review/comment": ("repo", 2 * KIB),
    "issues/read": ("issue", 8 * KIB),
    "db/query": ("table", 64 * KIB),
    "db/describe": ("table", 4 * KIB),
    "db/sample": ("table", 32 * KIB),
    "db/export": ("table", 8 * KIB),
    "sheets/write": ("sheet", 8 * KIB),
    "report/publish": ("report", 8 * KIB),
    "tickets/read": ("ticket", 8 * KIB),
    "tickets/reply": ("ticket", 3 * KIB),
    "kb/search": ("article", 8 * KIB),
    "admin/grant_role": ("role", 1 * KIB),
    "secrets/read": ("secret", 1 * KIB),
    "shell/exec": ("host", 2 * KIB),
    "iam/create_key": ("key", 1 * KIB),
}
NEW_TOOLS: Final = ("admin/grant_role", "secrets/read", "shell/exec", "db/export", "iam/create_key")
ATTACK_TYPES: Final = ("exfiltration", "new_tool", "burst", "creep", "model_shift")


_ZIPF40: Final = np.cumsum(1.0 / np.arange(1, 41)) / np.sum(1.0 / np.arange(1, 41))


@dataclass(frozen=True)
class Profile:
    name: str
    mix: Mapping[str, float]
    external: tuple[str, ...]
    egress: str
    hours: tuple[int, int]  # [start, end) UTC
    sessions_per_day: float
    calls: tuple[int, int]
    median_gap: float
    successor: Mapping[str, str]
    busy_hours: tuple[int, int] | None = None  # twice as likely (support-bot)
    creep_tool: str | None = None


PROFILES: Final = (
    Profile(
        "research-assistant",
        {
            "web/search": 0.25,
            "web/fetch": 0.25,
            "docs/read": 0.25,
            "docs/write": 0.10,
            "notes/append": 0.14,
            "web/post": 0.01,
        },
        ("web/fetch",),
        "web/post",
        (8, 19),
        8,
        (8, 25),
        20.0,
        {
            "web/search": "web/fetch",
            "web/fetch": "docs/read",
            "docs/read": "docs/write",
            "docs/write": "notes/append",
            "notes/append": "web/search",
            "web/post": "web/search",
        },
        creep_tool="web/post",
    ),
    Profile(
        "email-triage",
        {
            "mail/list": 0.15,
            "mail/read": 0.35,
            "mail/reply": 0.20,
            "calendar/read": 0.15,
            "crm/lookup": 0.15,
        },
        ("mail/read",),
        "mail/reply",
        (7, 18),
        10,
        (6, 20),
        15.0,
        {
            "mail/list": "mail/read",
            "mail/read": "mail/reply",
            "mail/reply": "mail/list",
            "calendar/read": "mail/reply",
            "crm/lookup": "mail/reply",
        },
        creep_tool="crm/export",
    ),
    Profile(
        "code-reviewer",
        {
            "git/diff": 0.25,
            "git/read_file": 0.35,
            "ci/status": 0.15,
            "review/comment": 0.15,
            "issues/read": 0.10,
        },
        ("issues/read",),
        "review/comment",
        (9, 20),
        6,
        (10, 30),
        30.0,
        {
            "git/diff": "git/read_file",
            "git/read_file": "review/comment",
            "review/comment": "git/diff",
            "ci/status": "git/diff",
            "issues/read": "git/diff",
        },
        creep_tool="git/push",
    ),
    Profile(
        "data-analyst",
        {
            "db/query": 0.40,
            "db/describe": 0.15,
            "sheets/write": 0.25,
            "report/publish": 0.05,
            "db/sample": 0.15,
        },
        (),
        "report/publish",
        (1, 5),
        4,
        (15, 40),
        3.0,
        {
            "db/describe": "db/query",
            "db/query": "sheets/write",
            "sheets/write": "db/query",
            "db/sample": "db/query",
            "report/publish": "db/describe",
        },
        creep_tool="db/export",
    ),
    Profile(
        "support-bot",
        {"tickets/read": 0.35, "kb/search": 0.30, "tickets/reply": 0.20, "crm/lookup": 0.15},
        ("tickets/read",),
        "tickets/reply",
        (0, 24),
        12,
        (5, 15),
        10.0,
        {
            "tickets/read": "kb/search",
            "kb/search": "tickets/reply",
            "tickets/reply": "tickets/read",
            "crm/lookup": "tickets/reply",
        },
        busy_hours=(8, 18),
    ),
)

# Scenario assignments (spec §3 upgrades, §4.4 creep, §4.5 model shift): fixed, not drawn.
CREEP_AGENTS: Final = (
    "research-assistant-2",
    "email-triage-2",
    "code-reviewer-2",
    "data-analyst-2",
)
SHIFT_AGENTS: Final = ("support-bot-2", "research-assistant-3")
UPGRADE_AGENTS: Final = ("email-triage-3", "code-reviewer-4", "support-bot-4")


@dataclass(frozen=True, slots=True)
class SimEvent:
    ts: float
    agent: str
    operator: str
    model_digest: str
    session: str
    tool: str
    resource_type: str
    resource_id: str
    volume: int
    external_content: bool
    label: str | None = None
    attack_id: str | None = None


@dataclass(frozen=True)
class Scenario:
    """A §4.4/§4.5 scenario (detected by drift) or a benign upgrade (must not be)."""

    kind: str  # creep | model_shift | upgrade
    agent: str
    start: float
    end: float


@dataclass(frozen=True)
class AttackInstance:
    attack_id: str
    kind: str
    agent: str
    session: str


@dataclass
class Workload:
    events: list[SimEvent]
    agents: dict[str, str]  # agent → profile
    scenarios: list[Scenario]
    attacks: list[AttackInstance]
    warmup_end: float
    end: float
    seed: int
    scale: float
    attacked_sessions: set[str] = field(default_factory=set)


def model_digest(profile: str, version: int) -> str:
    return "sha256:" + hashlib.sha256(f"{profile}/v{version}".encode()).hexdigest()


def kl(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    return sum(v * math.log(v / max(q.get(k, 0.0), 1e-12)) for k, v in p.items() if v > 0)


@dataclass
class _Call:
    tool: str
    gap: float
    volume: int
    resource_id: str
    external: bool
    label: str | None = None
    attack_id: str | None = None


@dataclass
class _Session:
    sid: str
    agent: str
    operator: str
    digest: str
    start: float
    calls: list[_Call]
    mix: dict[str, float]


class _Gen:
    def __init__(self, seed: int, scale: float) -> None:
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.scale = scale
        self.n_sessions = 0

    def dirichlet(self, mix: Mapping[str, float], concentration: float) -> dict[str, float]:
        keys = list(mix)
        alpha = np.array([max(mix[k], 1e-6) * concentration for k in keys])
        draw = self.rng.dirichlet(alpha)
        return {k: float(v) for k, v in zip(keys, draw, strict=True)}

    def pick(self, mix: Mapping[str, float]) -> str:
        keys = list(mix)
        cum = np.cumsum([mix[k] for k in keys])
        i = int(np.searchsorted(cum, self.rng.random() * cum[-1], side="right"))
        return keys[min(i, len(keys) - 1)]

    def next_tool(self, prof: Profile, mix: Mapping[str, float], current: str | None) -> str:
        if current is not None and current in prof.successor and current in mix:
            succ = prof.successor[current]
            if succ in mix and self.rng.random() < SUCCESSOR_P:
                return succ
        return self.pick(mix)

    def gap(self, prof: Profile) -> float:
        return float(prof.median_gap * math.exp(self.rng.normal(0.0, GAP_SIGMA)))

    def volume(self, tool: str, factor: float = 1.0) -> int:
        median = TOOLS[tool][1]
        return max(1, int(median * factor * math.exp(self.rng.normal(0.0, VOLUME_SIGMA))))

    def resource(self) -> str:
        i = int(np.searchsorted(_ZIPF40, self.rng.random(), side="right"))
        return f"r{min(i, 39) + 1}"

    def call(self, prof: Profile, tool: str, gap: float | None = None) -> _Call:
        return _Call(
            tool,
            self.gap(prof) if gap is None else gap,
            self.volume(tool),
            self.resource(),
            tool in prof.external,
        )

    def start_time(self, prof: Profile, day: int) -> float:
        if prof.busy_hours is not None:
            weights = np.array(
                [2.0 if prof.busy_hours[0] <= h < prof.busy_hours[1] else 1.0 for h in range(24)]
            )
            hour = int(self.rng.choice(24, p=weights / weights.sum()))
            offset = hour * 3600 + float(self.rng.uniform(0, 3600))
        else:
            lo, hi = prof.hours
            offset = float(self.rng.uniform(lo * 3600, hi * 3600))
        return EPOCH + day * DAY + offset


def _creep_mix(base: Mapping[str, float], tool: str, share: float) -> dict[str, float]:
    s0 = base[tool]
    out = {k: v * (1 - share) / (1 - s0) for k, v in base.items() if k != tool}
    out[tool] = share
    return out


def generate(seed: int = 7, scale: float = 1.0) -> Workload:
    """The workload of ``docs/behavior-generator.md`` for one seed and scale."""
    if not 0 < scale <= 10:
        raise ValueError("scale must be in (0, 10]")
    g = _Gen(seed, scale)
    sessions: list[_Session] = []
    agents: dict[str, str] = {}
    profiles: dict[str, Profile] = {}
    scenarios: list[Scenario] = []
    eval_start, end = EPOCH + WARMUP_DAYS * DAY, EPOCH + DAYS * DAY
    upgrade_ts = EPOCH + UPGRADE_DAY * DAY
    for prof in PROFILES:
        operator = f"op-{prof.name}"
        for i in range(1, AGENTS_PER_PROFILE + 1):
            agent = f"{prof.name}-{i}"
            agents[agent], profiles[agent] = prof.name, prof
            mix = g.dirichlet(prof.mix, 60.0)
            creep = agent in CREEP_AGENTS and prof.creep_tool is not None
            if creep and prof.creep_tool not in mix:
                mix = {k: v * 0.995 for k, v in mix.items()}
                mix[str(prof.creep_tool)] = 0.005
            shifted: dict[str, float] | None = None
            if agent in SHIFT_AGENTS:
                while True:
                    shifted = g.dirichlet(prof.mix, 2.0)
                    if kl(shifted, mix) >= 0.3:
                        break
                scenarios.append(Scenario("model_shift", agent, upgrade_ts, end))
            elif creep:
                scenarios.append(Scenario("creep", agent, eval_start, end))
            elif agent in UPGRADE_AGENTS:
                scenarios.append(Scenario("upgrade", agent, upgrade_ts, end))
            for day in range(DAYS):
                new_model = day >= UPGRADE_DAY and (
                    agent in SHIFT_AGENTS or agent in UPGRADE_AGENTS
                )
                digest = model_digest(prof.name, 2 if new_model else 1)
                base = shifted if (shifted is not None and day >= UPGRADE_DAY) else mix
                day_mix = g.dirichlet(base, 300.0)
                count = int(g.rng.poisson(prof.sessions_per_day * scale))
                for _ in range(count):
                    start = g.start_time(prof, day)
                    smix = day_mix
                    if creep and start >= eval_start and prof.creep_tool is not None:
                        frac = min(1.0, (start - eval_start) / (end - eval_start))
                        s0 = day_mix[prof.creep_tool]
                        smix = _creep_mix(day_mix, prof.creep_tool, s0 + (0.35 - s0) * frac)
                    sessions.append(_session(g, prof, agent, operator, digest, start, smix))
    attacks = _inject(g, sessions, profiles, eval_start)
    events: list[tuple[float, int, int, SimEvent]] = []
    for si, s in enumerate(sessions):
        ts = s.start
        for ci, c in enumerate(s.calls):
            if ci:
                ts += c.gap
            rtype = TOOLS[c.tool][0]
            ev = SimEvent(
                round(ts, 3),
                s.agent,
                s.operator,
                s.digest,
                s.sid,
                c.tool,
                rtype,
                c.resource_id,
                c.volume,
                c.external,
                c.label,
                c.attack_id,
            )
            events.append((ev.ts, si, ci, ev))
    events.sort(key=lambda x: (x[0], x[1], x[2]))
    return Workload(
        [e[3] for e in events],
        agents,
        scenarios,
        attacks,
        eval_start,
        end,
        seed,
        scale,
        {a.session for a in attacks},
    )


def _session(
    g: _Gen,
    prof: Profile,
    agent: str,
    operator: str,
    digest: str,
    start: float,
    mix: dict[str, float],
) -> _Session:
    g.n_sessions += 1
    n = int(g.rng.integers(prof.calls[0], prof.calls[1] + 1))
    calls: list[_Call] = []
    tool: str | None = None
    for _ in range(n):
        tool = g.next_tool(prof, mix, tool)
        calls.append(g.call(prof, tool))
    return _Session(f"ses-{g.n_sessions:06d}", agent, operator, digest, start, calls, mix)


def _inject(
    g: _Gen, sessions: list[_Session], profiles: Mapping[str, Profile], eval_start: float
) -> list[AttackInstance]:
    """Spec §4.1-§4.3: each instance in its own benign evaluation session."""
    excluded = set(CREEP_AGENTS) | set(SHIFT_AGENTS)
    eligible = [
        i
        for i, s in enumerate(sessions)
        if s.start >= eval_start and s.agent not in excluded and len(s.calls) >= 2
    ]
    per_type = max(5, round(ATTACKS_PER_TYPE * g.scale))
    kinds = ["exfiltration", "new_tool", "burst"]
    chosen = g.rng.choice(len(eligible), size=min(len(eligible), per_type * 3), replace=False)
    out: list[AttackInstance] = []
    for n, idx in enumerate(chosen):
        kind = kinds[n % 3]
        s = sessions[eligible[int(idx)]]
        prof = profiles[s.agent]
        attack_id = f"{kind}-{n // 3 + 1:03d}"
        pos = int(g.rng.integers(2, len(s.calls) + 1))
        before, after = s.calls[:pos], s.calls[pos:]
        injected: list[_Call] = []
        current = before[-1].tool
        if kind == "exfiltration":
            ext = prof.external[0] if prof.external else "web/fetch"
            read = g.call(prof, ext)
            read.external = True
            injected.append(read)
            current = ext
            for _ in range(int(g.rng.integers(0, 3))):
                current = g.next_tool(prof, s.mix, current)
                injected.append(g.call(prof, current))
            factor = math.exp(g.rng.uniform(math.log(10), math.log(100)))
            send = g.call(prof, prof.egress)
            send.volume = g.volume(prof.egress, factor)
            send.external = False
            if g.rng.random() < 0.5:
                send.resource_id = "*"
            injected.append(send)
            read.label, send.label = kind, kind
            read.attack_id, send.attack_id = attack_id, attack_id
        elif kind == "new_tool":
            tool = NEW_TOOLS[int(g.rng.integers(0, len(NEW_TOOLS)))]
            for _ in range(int(g.rng.integers(1, 4))):
                c = g.call(prof, tool)
                c.label, c.attack_id = kind, attack_id
                injected.append(c)
        else:
            for _ in range(int(g.rng.integers(20, 61))):
                current = g.next_tool(prof, s.mix, current)
                c = g.call(prof, current, gap=float(g.rng.uniform(0.05, 0.5)))
                c.label, c.attack_id = kind, attack_id
                injected.append(c)
        s.calls = before + injected + after
        out.append(AttackInstance(attack_id, kind, s.agent, s.sid))
    return out
