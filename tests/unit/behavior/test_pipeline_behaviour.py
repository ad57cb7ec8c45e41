"""The engine as the PDP's second opinion: computed before Cedar, can only tighten,
deadline and circuit breaker, and what the trace and the audit record say."""

from __future__ import annotations

from typing import Any

from tests.unit.pdp.test_pipeline import BUNDLE, CALLER, DIGEST, Scorer, _pdp, _req

from tessera.behavior.engine import BehaviourSettings
from tessera.behavior.guard import CircuitBreaker
from tessera.behavior.pdp import PipelineBehaviour, request_volume
from tessera.behavior.service import BehaviourService
from tessera.clock import ManualClock
from tessera.pdp.audit import behaviour_note
from tessera.pdp.pipeline import DecisionPoint, StaticBundle
from tessera.policy.bundle import load_bundle, read_bundle_dir

SETTINGS = BehaviourSettings(warmup_calls=50, reference_calls=100, window=100)


class Ticks:
    """A timer that moves ``step`` seconds per reading (forces the cooperative deadline)."""

    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def _engine(timer: Any = None, breaker: CircuitBreaker | None = None) -> PipelineBehaviour:
    clock = ManualClock()
    service = BehaviourService(None, clock, lambda c: c, SETTINGS, flush_interval=0)
    kw: dict[str, Any] = {"timer": timer} if timer is not None else {}
    return PipelineBehaviour(service, clock, breaker=breaker, revoke_on_high=False, **kw)


def _warm(pdp: DecisionPoint, beh: PipelineBehaviour, n: int = 80) -> None:
    clock = beh.clock
    assert isinstance(clock, ManualClock)
    for i in range(n):
        clock.advance(40)
        pdp.decide(
            _req("docs/read" if i % 3 else "docs/search", volume=3000 + i), CALLER, consume=True
        )


def test_the_observer_learns_from_real_decisions_only() -> None:
    beh = _engine()
    pdp = _pdp(behaviour=beh, observer=beh)
    pdp.decide(_req("docs/read"), CALLER)  # consume=False: explain/search path
    assert "agt_1" not in beh.engine.agents
    _warm(pdp, beh, 10)
    state = beh.engine.agents["agt_1"]
    assert state.baseline.n == 10
    assert state.model_digest == DIGEST
    assert state.operator == "op_1"


def test_medium_risk_on_a_sensitive_action_needs_approval_and_high_denies() -> None:
    beh = _engine()
    pdp = _pdp(behaviour=beh, observer=beh)
    _warm(pdp, beh)
    beh.clock.advance(40)  # type: ignore[attr-defined]
    d = pdp.decide(_req("docs/publish"), CALLER, consume=True)  # never used: new_tool (60)
    assert d.verdict == "approval_required"
    assert [r.code for r in d.reasons] == ["risk_approval"]
    assert "new_tool" in d.reasons[0].message
    trace = {s.stage: s for s in d.trace}
    assert trace["behaviour"].detail["reasons"][0] == "new_tool"
    # a non-sensitive never-used tool at the same score stays allowed (bundle rule)
    beh.clock.advance(40)  # type: ignore[attr-defined]
    web = pdp.decide(_req("web/fetch", external_content=True), CALLER, consume=True)
    assert web.verdict == "allow"
    beh.clock.advance(40)  # type: ignore[attr-defined]
    # a huge read right after untrusted content: volume spike + external content = high
    d = pdp.decide(_req("docs/read", volume=900_000_000), CALLER, consume=True)
    assert d.verdict == "deny"
    assert [r.code for r in d.reasons] == ["high_risk"]
    assert "after_external_content" in d.reasons[0].message


def test_a_late_engine_is_ignored_and_the_record_says_so() -> None:
    beh = _engine(timer=Ticks(0.01))  # every step overruns the 2 ms deadline
    pdp = _pdp(behaviour=beh, observer=beh)
    d = pdp.decide(_req("docs/read"), CALLER, consume=True)
    assert d.verdict == "allow"
    stage = next(s for s in d.trace if s.stage == "behaviour")
    assert [r.code for r in stage.reasons] == ["behaviour_unavailable"]
    assert stage.reasons[0].message == "behaviour_timeout"
    assert behaviour_note(d) == {"behaviour": {"available": False, "cause": "behaviour_timeout"}}
    assert "agt_1" not in beh.engine.agents  # nothing learned from an unscored call


def test_the_circuit_breaker_opens_after_repeated_failures_and_recovers() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=3, cooldown=30.0, timer=lambda: now[0])
    ticks = Ticks(0.01)
    beh = _engine(timer=ticks, breaker=breaker)
    pdp = _pdp(behaviour=beh, observer=beh)
    for _ in range(3):
        pdp.decide(_req("docs/read"), CALLER)
    assert breaker.state == "open"
    d = pdp.decide(_req("docs/read"), CALLER)
    stage = next(s for s in d.trace if s.stage == "behaviour")
    assert stage.reasons[0].message == "behaviour_circuit_open"
    assert d.verdict == "allow"
    now[0] = 31.0
    assert breaker.state == "half_open"
    ticks.step = 0.0  # the engine is healthy again: the trial call closes the breaker
    d = pdp.decide(_req("docs/read"), CALLER)
    assert breaker.state == "closed"
    assert behaviour_note(d)["behaviour"]["level"] == "low"


def test_a_half_open_breaker_reopens_when_the_trial_fails() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=1, cooldown=5.0, timer=lambda: now[0])
    breaker.failure()
    now[0] = 6.0
    assert breaker.allow()
    assert not breaker.allow()
    breaker.failure()
    assert breaker.state == "open"


def test_cedar_policies_read_context_risk() -> None:
    files = read_bundle_dir(BUNDLE)
    files["risk.cedar"] = (
        '@id("no-search-when-risky")\n'
        'forbid (principal is agent, action == Action::"docs/search", resource)\n'
        'when { context.risk.score >= 30 || context.risk.level == "medium" };\n'
    )
    bundle = load_bundle(files)
    for score, verdict in ((10, "allow"), (30, "deny")):
        pdp = _pdp(behaviour=Scorer(score))
        pdp.bundles = StaticBundle(bundle, 9)
        d = pdp.decide(_req("docs/search"), CALLER)
        assert d.verdict == verdict
        if verdict == "deny":
            assert [(r.code, r.message) for r in d.reasons] == [("forbid", "no-search-when-risky")]


def test_volume_comes_from_the_context_or_the_arguments() -> None:
    assert request_volume({"volume": 123}) == 123
    assert request_volume({"volume": True, "arguments": {"q": "abc"}}) == len('{"q":"abc"}')
    assert request_volume({"volume": -1}) is None
    assert request_volume({}) is None
