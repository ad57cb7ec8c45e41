"""DESIGN 1, 5: behaviour is a second opinion that can only tighten. For any score the
engine returns (any value, any level, unavailable, or an exception from a failed or
timed-out engine) and any request, the final decision is never more permissive than the
deterministic decision: the same pipeline with the engine unavailable (DESIGN 5: "when it
fails, the deterministic decision stands")."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.pdp.test_pipeline import BUNDLE, CALLER, _pdp, _req

from tessera.behavior.engine import BehaviourSettings
from tessera.behavior.pdp import PipelineBehaviour
from tessera.behavior.service import BehaviourService
from tessera.clock import ManualClock
from tessera.pdp.model import EvaluationRequest
from tessera.pdp.pipeline import StaticBundle
from tessera.pdp.ports import MemoryTaint, RiskScore
from tessera.policy.bundle import load_bundle, read_bundle_dir

RANK = {"deny": 0, "approval_required": 1, "allow": 2}
TOOLS = ["docs/read", "docs/search", "docs/publish", "web/fetch", "mail/send", "shell/exec"]


def _bundles() -> list[Any]:
    out = []
    for approval_at, deny_at in ((50, 80), (0, 101), (101, 0), (30, 31)):
        files = read_bundle_dir(BUNDLE)
        files["bundle.yaml"] = files["bundle.yaml"].replace(
            "risk: {approval_at: 50, deny_at: 80}",
            f"risk: {{approval_at: {approval_at}, deny_at: {deny_at}}}",
        )
        files["risk.cedar"] = (
            '@id("risky-search")\nforbid (principal is agent, action == Action::"docs/search",'
            " resource) when { context.risk.score >= 40 };\n"
        )
        out.append(load_bundle(files))
    return out


BUNDLES = _bundles()


class Anything:
    """A scorer that answers whatever the example says, or raises."""

    def __init__(self) -> None:
        self.answer: RiskScore | BaseException = RiskScore()

    def score(
        self, request: EvaluationRequest, session: str | None, agent: Any = None
    ) -> RiskScore:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


SCORER = Anything()
DOWN = Anything()
DOWN.answer = RuntimeError("no engine")
WITH = _pdp(behaviour=SCORER)
WITHOUT = _pdp(behaviour=DOWN)

answers = st.one_of(
    st.builds(
        RiskScore,
        st.integers(-50, 200),
        st.sampled_from(["low", "medium", "high", "none", "unavailable", ""]),
        st.booleans(),
        st.lists(st.sampled_from(["new_tool", "rate_spike", "x"]), max_size=3).map(tuple),
    ),
    st.sampled_from([TimeoutError("late"), RuntimeError("down"), ValueError("bad")]),
)


@settings(max_examples=400, deadline=None)
@given(
    answer=answers,
    tool=st.sampled_from(TOOLS),
    doc=st.sampled_from(["1", "2", "9", "404"]),
    tainted=st.booleans(),
    bundle=st.sampled_from(range(len(BUNDLES))),
)
def test_the_engine_never_loosens_a_decision(
    answer: Any, tool: str, doc: str, tainted: bool, bundle: int
) -> None:
    SCORER.answer = answer
    req = _req(tool, doc, tainted=tainted)
    verdicts = []
    for pdp in (WITH, WITHOUT):
        pdp.bundles = StaticBundle(BUNDLES[bundle], bundle)
        pdp.taint = MemoryTaint()
        verdicts.append(pdp.decide(req, CALLER, consume=True).verdict)
    with_engine, without = verdicts
    assert RANK[with_engine] <= RANK[without], (answer, tool, doc, with_engine, without)


class Ticks:
    def __init__(self) -> None:
        self.step = 0.0
        self.t = 0.0

    def __call__(self) -> float:
        self.t += self.step
        return self.t


@settings(max_examples=100, deadline=None)
@given(
    calls=st.lists(
        st.tuples(
            st.sampled_from(TOOLS),
            st.integers(0, 10**9),
            st.booleans(),
            st.sampled_from([0.0, 0.0, 0.01]),  # 0.01 s per step: over the 2 ms deadline
            st.floats(0, 600),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_the_real_engine_never_loosens_a_sequence_of_decisions(calls: list[Any]) -> None:
    """The real engine (learning, sessions, deadline overruns) over random call sequences."""
    clock = ManualClock()
    service = BehaviourService(
        None, clock, lambda c: c, BehaviourSettings(warmup_calls=10), flush_interval=0
    )
    ticks = Ticks()
    engine = PipelineBehaviour(service, clock, revoke_on_high=False, timer=ticks)
    real = _pdp(behaviour=engine, observer=engine)
    down = Anything()
    down.answer = RuntimeError("no engine")
    plain = _pdp(behaviour=down)
    for tool, volume, external, step, gap in calls:
        clock.advance(gap)
        ticks.step = step
        req = _req(tool, "1", volume=volume, external_content=external)
        # Both pipelines decide from the same session state: the taint marks as they were
        # before this call (a call that reads untrusted content taints only what follows).
        plain.taint = MemoryTaint()
        for sid, cause in real.taint.marks():  # type: ignore[attr-defined]
            plain.taint.taint(sid, cause)
        want = plain.decide(req, CALLER, consume=True).verdict
        got = real.decide(req, CALLER, consume=True).verdict
        assert RANK[got] <= RANK[want], (tool, volume, got, want)
