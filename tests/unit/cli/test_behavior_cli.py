"""``tessera behavior show|drift|rebaseline|simulate`` and the demo's seeded baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.cli_harness import Run, cli_run

import tessera.cli.demo  # noqa: F401 - registers `demo`


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    run = cli_run(tmp_path, monkeypatch)
    return run


def test_simulate_prints_the_detection_table_and_says_it_is_synthetic(run) -> None:  # type: ignore[no-untyped-def]
    out = json.loads(run("behavior", "simulate", "--scale", "0.2", "--seed", "3", "--json"))
    assert out["synthetic"] is True
    assert [r["attack"] for r in out["detection"]] == [
        "exfiltration",
        "new_tool",
        "burst",
        "creep",
        "model_shift",
    ]
    new_tool = out["detection"][1]
    assert new_tool["instances"] == 8  # round(40 x 0.2), spec §4
    # at this small scale the slowest agents are still warming up on day 7, so not every
    # instance is scored against a warm baseline (the full scale detects all of them)
    assert new_tool["detection_rate"] >= 0.8
    fp = out["false_positives"]
    assert fp["benign_calls"] > 500
    assert 0 <= fp["per_call"] < 0.05
    human = run("behavior", "simulate", "--scale", "0.2", "--seed", "3")
    assert "detection (seed 3" in human
    assert "not on real agents" in human
    assert "--scale must be" in run("behavior", "simulate", "--scale", "0", code=2)


def test_show_drift_and_rebaseline_after_the_demo(run) -> None:  # type: ignore[no-untyped-def]
    run("init")
    run("demo", "load")
    shown = json.loads(run("behavior", "show", "research-assistant", "--json"))
    assert shown["name"] == "research-assistant"
    assert shown["warm"] is True
    assert shown["reference_frozen"] is True
    assert [t for t, _ in shown["top_tools"]] == ["docs/read", "docs/search", "web/fetch"]
    human = run("behavior", "show", "research-assistant")
    assert "docs/read" in human
    assert "docs/search → docs/read" in human
    drift = json.loads(run("behavior", "drift", "--json"))
    assert drift["threshold"] == 0.1
    assert drift["findings"] == []
    assert {c["name"] for c in drift["current"]} == {"research-assistant", "summarizer"}
    assert all(c["kl_tools"] < 0.1 for c in drift["current"])
    assert "re-baselined research-assistant" in run("behavior", "rebaseline", "research-assistant")
    assert "no behaviour baseline" in run("behavior", "show", "nobody", code=2)


def test_drift_lists_a_finding_with_its_remediation(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tessera.app import build
    from tessera.config import load_config

    run("init")
    run("demo", "load")
    t = build(load_config({"TESSERA_DATA_DIR": str(tmp_path / "data")}))
    assert t.behaviour is not None
    agent = t.identity.get_agent("summarizer")
    t.behaviour.ensure_loaded()  # stored baselines load on first use
    engine = t.behaviour.engine
    state = engine.agents[agent.id]
    ts = state.baseline.last_ts
    for i in range(450):  # the summarizer, which only ever read, starts searching and fetching
        ts += 30
        f = engine.features(
            agent=agent.id,
            operator=state.operator,
            model_digest=state.model_digest,
            session=f"s{i // 10}",
            tool=("docs/search", "web/fetch", "docs/read")[i % 3],
            rtype="document",
            resource_id="d1",
            volume=16_000,
            external=False,
            ts=ts,
        )
        engine.observe(f, engine.score(f), allowed=True)
    t.behaviour.flush()
    t.close()
    out = json.loads(run("behavior", "drift", "summarizer", "--json"))
    (finding,) = out["findings"]
    assert finding["agent"] == agent.id
    assert finding["kind"] == "agent"
    assert finding["severity"] == "high"
    assert "tessera behavior rebaseline" in finding["remediation"]
    human = run("behavior", "drift")
    assert finding["id"] in human
    assert "summarizer" in human
    run("behavior", "rebaseline", "summarizer")
    assert json.loads(run("behavior", "drift", "--json"))["findings"] == []
    assert [
        f["status"] for f in json.loads(run("behavior", "drift", "--all", "--json"))["findings"]
    ] == ["resolved"]
