"""Behaviour engine: scoring cost per decision (the PDP adapter's ``score``: features from
the AuthZEN request, deadline checks, breaker, engine score) on a warm baseline, the
observer's learning step, the engine score alone, memory per agent baseline, and the
simulator's throughput over the synthetic workload."""

from __future__ import annotations

import gc
import time
import tracemalloc
from typing import Any

from harness import Row, latency_row, time_each

from tessera.behavior.engine import BehaviourEngine, BehaviourSettings
from tessera.behavior.generator import generate
from tessera.behavior.pdp import PipelineBehaviour
from tessera.behavior.service import BehaviourService
from tessera.behavior.simulate import evaluate
from tessera.clock import SystemClock
from tessera.pdp.agents import AgentSubject
from tessera.pdp.model import Decision, parse_evaluation
from tessera.tokens.claims import SessionClaims
from tessera.tokens.grant import SessionGrant

TOOLS = ["docs/read", "docs/search", "web/fetch", "docs/write", "notes/append", "web/search"]


def _agent(i: int) -> AgentSubject:
    grant = SessionGrant(
        tools=frozenset({"docs/*", "web/*", "notes/*"}),
        deny=frozenset(),
        data_scope=frozenset({"doc:*"}),
        budgets={},
        audience=frozenset({"gw"}),
        lifetime=900,
        model_digest="sha256:" + "ab" * 32,
        depth=0,
    )
    claims = SessionClaims(
        issuer="https://iss",
        subject=f"agt_{i}",
        client_id=f"agt_{i}",
        jti="j",
        iat=1,
        exp=10**10,
        sid=f"ses_{i}",
        operator="op_1",
        model_id="mdl_1",
        grant=grant,
        act=None,
    )
    return AgentSubject(claims, "sha256:x")


def _warm(engine: BehaviourEngine, agent: str, n: int, t0: float) -> None:
    for i in range(n):
        f = engine.features(
            agent=agent,
            operator="op_1",
            model_digest="sha256:" + "ab" * 32,
            session=f"w{agent}{i // 15}",
            tool=TOOLS[(i * 7) % len(TOOLS)],
            rtype="document",
            resource_id=str(i % 40),
            volume=2000 + (i * 131) % 9000,
            external=False,
            ts=t0 + i * 25.0,
        )
        engine.observe(f, engine.score(f), allowed=True)


def run(quick: bool = False) -> list[Row]:
    n = 5_000 if quick else 50_000
    clock = SystemClock()  # what the server uses (ManualClock takes a lock per reading)
    service = BehaviourService(None, clock, lambda c: c, BehaviourSettings(), flush_interval=0)
    scorer = PipelineBehaviour(service, clock, revoke_on_high=False)
    _warm(service.engine, "agt_0", 1500, clock.timestamp() - 1500 * 25)
    agent = _agent(0)
    req = parse_evaluation(
        {
            "subject": {"type": "agent", "id": "agt_0", "properties": {"token": "t"}},
            "action": {"name": "docs/read"},
            "resource": {"type": "document", "id": "roadmap"},
            "context": {"volume": 5120, "external_content": False},
        }
    )
    rows = [
        latency_row(
            "score per decision (PDP adapter, warm baseline)",
            time_each(lambda: scorer.score(req, "ses_0", agent), n),
            "aim <= 20 µs p50",
        )
    ]
    f = service.engine.features(
        agent="agt_0",
        operator="op_1",
        model_digest="sha256:" + "ab" * 32,
        session="ses_0",
        tool="docs/read",
        rtype="document",
        resource_id="roadmap",
        volume=5120,
        external=False,
        ts=clock.timestamp(),
    )
    rows.append(
        latency_row(
            "engine score only (features given)", time_each(lambda: service.engine.score(f), n)
        )
    )
    decision = Decision("allow", (), "dec_1", 1, ())

    def score_and_observe() -> None:
        scorer.score(req, "ses_0", agent)
        scorer.observe(req, agent, decision)

    rows.append(
        latency_row(
            "score + observe (learning; drift checks run in the flusher)",
            time_each(score_and_observe, n // 5),
        )
    )
    # memory per agent baseline: warm 200 agents, divide the traced allocation
    agents = 50 if quick else 200
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    eng = BehaviourEngine(BehaviourSettings())
    for i in range(agents):
        _warm(eng, f"agt_{i}", 700, 1.7e9)
    eng.sessions.clear()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    size = sum(s.size_diff for s in after.compare_to(before, "filename"))
    rows.append(
        Row(
            "memory per agent (baseline, frozen reference, window)",
            "KiB",
            size / agents / 1024,
            None,
            agents,
            "700 learned calls each, 6 tools; peer groups included",
        )
    )
    w = generate(7, 0.3 if quick else 1.0)
    t0 = time.perf_counter()
    evaluate(w)
    elapsed = time.perf_counter() - t0
    rows.append(
        Row(
            "simulate: score + observe over the generator",
            "µs/op",
            elapsed / len(w.events) * 1e6,
            None,
            len(w.events),
            "whole run / calls",
        )
    )
    return rows


def _print(rows: Any) -> None:
    for r in rows:
        print(f"{r.name:<55} {r.median:10.2f} {r.p99 or 0:10.2f} {r.unit} n={r.n} {r.note}")


if __name__ == "__main__":
    _print(run())
