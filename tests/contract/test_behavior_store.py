"""Behaviour over the real store on SQLite and PostgreSQL: baselines survive a restart,
drift becomes a finding and an event, risk level changes are events, and a high-risk
decision over HTTP revokes the session through the token service (stored and evented)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from tests.contract.test_pdp_agents import Pdp
from tests.contract.test_token_service import DIGEST, World, world  # noqa: F401

from tessera.audit.ports import AuditQuery
from tessera.behavior.engine import BehaviourEngine, BehaviourSettings, LevelChange
from tessera.behavior.service import BehaviourService
from tessera.clock import ManualClock
from tessera.errors import NotFound
from tessera.pdp.audit import AuditDecisionRecorder
from tessera.pdp.ports import EngineRelations
from tessera.rebac import MemoryTupleIndex, RebacEngine, RelationTuple
from tessera.store.sql_behavior import SqlBehaviourRepo
from tessera.store.sql_store import SqlStore

SETTINGS = BehaviourSettings(warmup_calls=50, reference_calls=100, window=100, drift_every=20)
MIX = ("docs/read", "docs/read", "docs/search")


def feed(
    engine: BehaviourEngine,
    agent: str,
    operator: str,
    n: int,
    *,
    start: float,
    tools: tuple[str, ...] = MIX,
    digest: str = DIGEST,
) -> float:
    ts = start
    for i in range(n):
        ts += 45.0
        f = engine.features(
            agent=agent,
            operator=operator,
            model_digest=digest,
            session=f"seed_{i // 12}",
            tool=tools[i % len(tools)],
            rtype="document",
            resource_id=str(i % 5),
            volume=2000 + 37 * (i % 11),
            external=False,
            ts=ts,
        )
        engine.observe(f, engine.score(f), allowed=True)
        engine.check_drift_due()
    return ts


def _events(store: SqlStore, kind: str) -> list[Any]:
    return [e for e in store.read_events_after(0, 10_000) if e.type == kind]


def test_baselines_findings_and_events_survive_a_restart(store: SqlStore) -> None:
    clock = ManualClock()
    svc = BehaviourService(store, clock, SqlBehaviourRepo, SETTINGS, flush_interval=0)
    t0 = clock.timestamp()
    ts = feed(svc.engine, "agt_x", "op_1", 200, start=t0)
    feed(svc.engine, "agt_x", "op_1", 120, start=ts, tools=("docs/publish", "docs/read"))
    assert svc.flush() >= 1
    findings = svc.findings(agent="agt_x")
    assert [(f.kind, f.status) for f in findings] == [("agent", "open")]
    f = findings[0]
    assert f.kl >= 0.1
    assert f.severity in ("medium", "high")
    assert "rebaseline agt_x" in f.remediation
    assert any("docs/publish" in c["category"] for c in f.evidence["top_changes"])
    (drift,) = _events(store, "behavior.drift_detected")
    assert drift.subject == "agt_x"
    assert set(drift.payload) == {"agent", "kl", "threshold", "window", "model_digest"}
    assert drift.payload["threshold"] == 0.1
    changes = _events(store, "risk.level_changed")
    agent_level = [e.payload for e in changes if e.payload["session"] is None]
    assert agent_level[-1]["level"] == "medium"
    first = next(e.payload for e in changes if e.payload["session"] is not None)
    assert (first["previous"], first["level"], first["reasons"]) == ("low", "medium", ["new_tool"])
    assert set(agent_level[-1]) == {
        "agent",
        "session",
        "level",
        "previous",
        "score",
        "reasons",
        "model_digest",
    }

    # a restarted node loads the stored baseline and scores exactly as before
    probe = svc.engine.features(
        agent="agt_x",
        operator="op_1",
        model_digest=DIGEST,
        session=None,
        tool="secrets/read",
        rtype="secret",
        resource_id="1",
        volume=10,
        external=False,
        ts=ts + 10_000,
    )
    again = BehaviourService(store, clock, SqlBehaviourRepo, SETTINGS, flush_interval=0)
    assert again.load() == 1
    assert again.engine.score(probe) == svc.engine.score(probe)
    summary = again.summary("agt_x")
    assert summary["learned_calls"] >= 200
    assert summary["reference_frozen"] is True
    assert summary["open_drift"] == ["agent"]
    assert summary["top_tools"][0][0] == "docs/read"

    # accepting the new behaviour resolves the finding
    assert again.rebaseline("agt_x")
    assert [f.status for f in again.findings(agent="agt_x")] == ["resolved"]
    assert again.summary("agt_x")["open_drift"] == []
    with pytest.raises(NotFound):
        again.summary("agt_nobody")


def test_a_failed_flush_keeps_its_work_for_the_next_one(store: SqlStore) -> None:
    clock = ManualClock()
    svc = BehaviourService(store, clock, SqlBehaviourRepo, SETTINGS, flush_interval=0)
    feed(svc.engine, "agt_y", "op_1", 60, start=clock.timestamp())
    svc.engine.notices.append(
        LevelChange("agt_y", "ses_1", "medium", "low", 55, ("new_tool",), DIGEST, 0.0)
    )
    real = svc.repo

    class Broken(SqlBehaviourRepo):
        def open_finding(self, **kw: Any) -> str:
            raise RuntimeError("store down")

        def save_state(self, kind: str, key: str, **kw: Any) -> None:
            super().save_state(kind, key, **kw)
            raise RuntimeError("store down")  # after a row is written: must roll back

    svc.repo = Broken
    with pytest.raises(RuntimeError):
        svc.flush()
    svc.repo = real
    assert svc.agents() == []  # nothing partial was written
    assert not _events(store, "risk.level_changed")
    assert svc.flush() == 1
    assert [a["key"] for a in svc.agents()] == ["agt_y"]
    assert len(_events(store, "risk.level_changed")) == 1


def test_high_risk_over_http_denies_and_revokes_the_session(world: World) -> None:  # noqa: F811
    pdp = Pdp(world)
    t = world.t
    assert t.behaviour is not None
    agent = t.identity.get_agent("planner")
    bundle = t.pdp.policies.active()
    assert bundle is not None
    assert bundle.bundle.rebac_model is not None
    tuples = [RelationTuple("document:1", rel, f"agent:{agent.id}") for rel in ("viewer", "editor")]
    t.pdp.point.relations = EngineRelations(
        RebacEngine(bundle.bundle.rebac_model, MemoryTupleIndex(tuples), t.clock)
    )
    feed(t.behaviour.engine, agent.id, agent.operator_id, 300, start=time.time() - 300 * 45 - 60)
    token = pdp.session()
    assert pdp.ask(token, "docs/read")["decision"] is True
    body = pdp.ask(token, "docs/publish", options={"explain": True})  # never used, sensitive
    assert body["context"]["verdict"] == "approval_required", body
    assert [r["code"] for r in body["context"]["reasons"]] == ["risk_approval"]
    behaviour = next(s for s in body["context"]["trace"] if s["stage"] == "behaviour")
    assert behaviour["detail"]["level"] == "medium"
    assert behaviour["detail"]["reasons"] == ["new_tool"]
    assert pdp.ask(token, "docs/search", context={"external_content": True})["decision"]
    body = pdp.ask(token, "docs/read", context={"volume": 500_000_000})
    assert body["context"]["verdict"] == "deny"
    assert [r["code"] for r in body["context"]["reasons"]] == ["high_risk"]
    # the decision's evidence in the audit ledger carries the engine's part
    AuditDecisionRecorder(t.audit).record(pdp.recorder.records[-1])
    (entry,) = t.audit.query(AuditQuery(event_type="pdp.evaluation", outcome="deny"))
    assert entry["details"]["decisions"][0]["behaviour"] == {"score": 100, "level": "high"}
    # revoked through the token service: stored (the next decision fails) and evented
    assert [r["code"] for r in pdp.ask(token, "docs/read")["context"]["reasons"]] == [
        "invalid_token"
    ]
    (revoked,) = _events(t.store, "session.revoked")
    assert revoked.actor == "behaviour"
    assert revoked.payload["reason"].startswith("behaviour: high risk (volume_spike")
    t.behaviour.flush()
    levels = [e.payload for e in _events(t.store, "risk.level_changed")]
    assert [p["level"] for p in levels if p["session"] is not None][-1] == "high"
    assert agent.id in {a["key"] for a in t.behaviour.agents()}


def test_a_running_node_adopts_a_rebaseline_made_elsewhere(store: SqlStore) -> None:
    clock = ManualClock()
    server = BehaviourService(store, clock, SqlBehaviourRepo, SETTINGS, flush_interval=0)
    ts = feed(server.engine, "agt_z", "op_1", 200, start=clock.timestamp())
    ts = feed(server.engine, "agt_z", "op_1", 120, start=ts, tools=("docs/publish",))
    server.flush()
    assert server.engine.agents["agt_z"].drift_open
    cli = BehaviourService(store, clock, SqlBehaviourRepo, SETTINGS, flush_interval=0)
    cli.rebaseline("agt_z")
    feed(server.engine, "agt_z", "op_1", 5, start=ts, tools=("docs/publish",))
    server.flush()  # must not overwrite the new reference with its old one
    state = server.engine.agents["agt_z"]
    assert state.generation == 1
    assert state.drift_open == {}
    assert state.reference.tools.get("docs/publish", 0) >= 90
    stored = BehaviourService(store, clock, SqlBehaviourRepo, SETTINGS, flush_interval=0)
    stored.load()
    assert stored.engine.agents["agt_z"].reference.tools == state.reference.tools
    assert stored.engine.agents["agt_z"].baseline.n == state.baseline.n
