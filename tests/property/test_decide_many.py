"""``DecisionPoint.decide_many`` is a loop of ``decide``: the same verdicts, reasons and
traces, the same side effects in the same order (budget spent per allowed decision, taint
marks, what the observer learns), over varied batches: allow, deny, token errors, unmapped
actions, failing stages, a budget running out mid-batch, a scorer that learns. And
``decide_async`` (the event loop's ``decide``, decisions.md 91) is ``decide``: awaited in
turn it gives the same answers and side effects, and decisions interleaved on one loop
each hand the observer their own score."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.clock import ManualClock
from tessera.pdp.agents import AgentSubject, AgentTokenRejected, Caller
from tessera.pdp.model import Decision, EvaluationRequest, parse_evaluation
from tessera.pdp.pipeline import DecisionPoint, StaticBundle
from tessera.pdp.ports import EngineRelations, MemoryAttributes, MemoryRecorder, RiskScore
from tessera.policy.bundle import load_bundle, read_bundle_dir
from tessera.rebac import MemoryTupleIndex, RebacEngine, RelationTuple
from tessera.tokens.claims import SessionClaims
from tessera.tokens.grant import SessionGrant

BUNDLE = Path(__file__).resolve().parents[2] / "examples" / "policy-bundle"
CALLER = Caller("svc_1", "gw", "token")
TOOLS = ["docs/read", "docs/search", "docs/publish", "web/fetch", "mail/send", "docs/delete"]
DOCS = ["1", "2", "9", "404"]


def _claims(user: str | None, sid: str, exp: int = 10**10) -> SessionClaims:
    grant = SessionGrant(
        tools=frozenset(["docs/*", "web/fetch", "mail/send"]),
        deny=frozenset(),
        data_scope=frozenset({"doc:*"}),
        budgets={"tool_calls": 5},
        audience=frozenset({"gw"}),
        lifetime=900,
        model_digest="sha256:" + "a1" * 32,
        depth=0,
    )
    return SessionClaims(
        issuer="https://iss",
        subject=user or "agt_1",
        client_id="agt_1",
        jti="j",
        iat=1,
        exp=exp,
        sid=sid,
        operator="op_1",
        model_id="mdl_1",
        grant=grant,
        act={"sub": "agt_1"} if user else None,
    )


class Agents:
    """Token ``solo`` / ``alice`` verify (two sessions); anything else is rejected."""

    def __init__(self) -> None:
        self.calls = 0
        self.claims = {"solo": _claims(None, "ses_1"), "alice": _claims("alice", "ses_2")}

    def verify(self, props: Any, sid: str, ctx: Any, caller: Caller, now: float) -> AgentSubject:
        self.calls += 1
        token = props.get("token")
        if token not in self.claims:
            raise AgentTokenRejected("bad token")
        claims = self.claims[token]
        if sid and sid != claims.client_id:
            raise AgentTokenRejected("subject.id is not the token's client_id")
        if claims.exp <= now:
            raise AgentTokenRejected("token expired")
        return AgentSubject(claims, f"sha256:{token}")


class Ledger:
    def __init__(self, units: int) -> None:
        self.left = {"ses_1": units, "ses_2": units}
        self.log: list[str] = []

    def consume(self, sid: str, amounts: Any) -> bool:
        ok = self.left[sid] >= 1
        self.left[sid] -= ok
        self.log.append(f"{sid}:{ok}")
        return ok


class AsyncLedger(Ledger):
    """``Ledger`` with ``consume_async``, which lets other coroutines run before it spends."""

    async def consume_async(self, sid: str, amounts: Any) -> bool:
        await asyncio.sleep(0)
        return self.consume(sid, amounts)


class Learner:
    """Scores a session by how many of its calls were allowed so far (so the order of
    ``observe`` matters), and records what it observed."""

    def __init__(self) -> None:
        self.allowed: dict[str, int] = {}
        self.seen: list[tuple[str, str, str]] = []

    def score(self, req: EvaluationRequest, session: str | None, agent: Any = None) -> RiskScore:
        n = self.allowed.get(session or "", 0)
        return RiskScore(min(100, 20 * n), "low" if n < 3 else "high")

    def observe(
        self, req: EvaluationRequest, agent: Any, decision: Decision, risk: Any = None
    ) -> None:
        sid = agent.claims.sid if agent is not None else ""
        self.seen.append((sid, req.action.name, decision.verdict))
        if decision.allowed:
            self.allowed[sid] = self.allowed.get(sid, 0) + 1


class Flaky:
    """A relationship engine that fails on document 404."""

    def __init__(self, inner: EngineRelations) -> None:
        self.inner = inner

    def check(self, user: str, relation: str, obj: str, ctx: Any) -> bool:
        if obj.endswith(":404"):
            raise RuntimeError("index gone")
        return self.inner.check(user, relation, obj, ctx)


def _pdp(units: int) -> tuple[DecisionPoint, Ledger, Learner]:
    bundle = load_bundle(read_bundle_dir(BUNDLE))
    assert bundle.rebac_model is not None
    index = MemoryTupleIndex(
        [
            RelationTuple("document:1", "viewer", "agent:agt_1"),
            RelationTuple("document:1", "viewer", "user:alice"),
            RelationTuple("document:2", "viewer", "agent:agt_1"),
            RelationTuple("document:9", "viewer", "agent:agt_1"),
            RelationTuple("document:1", "editor", "agent:agt_1"),
        ]
    )
    clock = ManualClock()
    ledger, learner = Ledger(units), Learner()
    point = DecisionPoint(
        StaticBundle(bundle, 3),
        clock,
        relations=Flaky(EngineRelations(RebacEngine(bundle.rebac_model, index, clock))),
        attributes=MemoryAttributes(
            {"document": {"9": {"classification": "secret"}}, "user": {"alice": {"x": 1}}}
        ),
        agents=Agents(),  # type: ignore[arg-type]
        budgets=ledger,
        behaviour=learner,
        observer=learner,
        recorder=MemoryRecorder(),
    )
    return point, ledger, learner


def _request(subject: str, tool: str, doc: str, ctx: dict[str, Any]) -> EvaluationRequest:
    token, _, sid = subject.partition("@")
    subj: dict[str, Any] = (
        {"type": "user", "id": "alice", "properties": {"dept": "r"}}
        if subject == "user"
        else {"type": "agent", "id": sid or "agt_1", "properties": {"token": token}}
    )
    return parse_evaluation(
        {
            "subject": subj,
            "action": {"name": tool},
            "resource": {"type": "document", "id": doc},
            "context": ctx,
        }
    )


def _view(d: Decision) -> Any:
    """A decision without its (random) id: everything else must be equal."""
    return (
        d.verdict,
        d.reasons,
        d.policy_version,
        [(s.stage, s.outcome, s.reasons, dict(s.detail)) for s in d.trace],
    )


requests = st.builds(
    _request,
    st.sampled_from(["solo", "alice", "forged", "user", "solo@agt_2", "alice@"]),
    st.sampled_from(TOOLS),
    st.sampled_from(DOCS),
    st.sampled_from([{}, {"external_content": True}, {"sensitive": True}, {"tainted": True}]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(requests, min_size=1, max_size=25), st.integers(0, 6), st.booleans())
def test_decide_many_is_a_loop_of_decide(
    batch: list[EvaluationRequest], units: int, consume: bool
) -> None:
    one, ledger1, learner1 = _pdp(units)
    many, ledger2, learner2 = _pdp(units)
    looped = [one.decide(r, CALLER, consume=consume) for r in batch]
    batched = many.decide_many(batch, CALLER, consume=consume)
    assert [_view(d) for d in batched] == [_view(d) for d in looped]
    assert ledger2.log == ledger1.log
    assert learner2.seen == learner1.seen
    assert list(many.taint.marks()) == list(one.taint.marks())  # type: ignore[attr-defined]
    assert len({d.decision_id for d in batched}) == len(batched)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(requests, min_size=1, max_size=12),
    st.sampled_from(["execute_all", "deny_on_first_deny", "permit_on_first_permit"]),
)
def test_evaluate_many_records_the_same_pairs_as_a_loop(
    batch: list[EvaluationRequest], semantic: str
) -> None:
    one, _, _ = _pdp(3)
    many, _, _ = _pdp(3)
    looped: list[tuple[EvaluationRequest, Decision]] = []
    for r in batch:
        d = one.decide(r, CALLER, consume=True)
        looped.append((r, d))
        if (semantic == "deny_on_first_deny" and not d.allowed) or (
            semantic == "permit_on_first_permit" and d.allowed
        ):
            break
    out = many.evaluate_many(batch, semantic, CALLER, request_id="r1")
    record = many.recorder.records[-1]  # type: ignore[attr-defined]
    assert record.kind == "evaluations"
    assert record.request_id == "r1"
    assert [(r, _view(d)) for r, d in record.decisions] == [(r, _view(d)) for r, d in looped]
    assert [d.decision_id for _, d in record.decisions] == [d.decision_id for d in out]


def test_budget_runs_out_mid_batch_and_tokens_verify_once() -> None:
    point, ledger, _ = _pdp(2)
    batch = [_request("solo", "docs/search", "1", {}) for _ in range(4)]
    out = point.decide_many(batch, CALLER)
    assert [d.verdict for d in out] == ["allow", "allow", "deny", "deny"]
    assert [r.code for r in out[2].reasons] == ["budget_exhausted"]
    assert ledger.log == ["ses_1:True", "ses_1:True", "ses_1:False", "ses_1:False"]
    assert point.agents.calls == 1  # type: ignore[union-attr]


def test_a_learning_scorer_sees_the_batch_in_order() -> None:
    point, _, learner = _pdp(10)
    batch = [_request("solo", "docs/search", "1", {}) for _ in range(6)]
    out = point.decide_many(batch, CALLER)
    # 20 per allowed call: the fifth call scores 80 (deny_at) and is denied as high risk
    assert [d.verdict for d in out] == ["allow"] * 4 + ["deny", "deny"]
    assert [r.code for r in out[4].reasons] == ["high_risk"]
    assert [v for _, _, v in learner.seen] == ["allow"] * 4 + ["deny", "deny"]


def test_taint_from_an_earlier_item_applies_to_a_later_one() -> None:
    point, _, _ = _pdp(10)
    batch = [
        _request("solo", "mail/send", "1", {}),
        _request("solo", "web/fetch", "1", {}),
        _request("solo", "mail/send", "1", {}),
    ]
    out = point.decide_many(batch, CALLER)
    assert [d.verdict for d in out] == ["allow", "allow", "deny"]
    assert [r.code for r in out[2].reasons] == ["session_tainted"]


def test_no_bundle_and_empty_batches() -> None:
    point, _, _ = _pdp(1)
    assert point.decide_many([], CALLER) == []
    point.bundles = StaticBundle(None)
    out = point.decide_many([_request("solo", "docs/read", "1", {})] * 2, CALLER)
    assert [r.code for d in out for r in d.reasons] == ["no_policy", "no_policy"]


def test_a_token_expiring_mid_batch_is_rejected_from_then_on() -> None:
    point, _, _ = _pdp(10)
    clock = point.clock
    point.agents.claims["solo"] = _claims(None, "ses_1", exp=int(clock.timestamp()) + 5)  # type: ignore[union-attr]

    class Ticking:
        def score(self, req: Any, session: Any, agent: Any = None) -> RiskScore:
            clock.advance(2)  # type: ignore[attr-defined]
            return RiskScore()

    point.behaviour = Ticking()
    out = point.decide_many([_request("solo", "docs/search", "1", {})] * 4, CALLER)
    assert [d.verdict for d in out] == ["allow", "allow", "allow", "deny"]
    assert out[3].trace[0].detail["cause"] == "token expired"


@settings(max_examples=100, deadline=None)
@given(st.lists(requests, min_size=1, max_size=20), st.integers(0, 6), st.booleans())
def test_decide_async_is_decide(batch: list[EvaluationRequest], units: int, consume: bool) -> None:
    one, ledger1, learner1 = _pdp(units)
    looped = [one.decide(r, CALLER, consume=consume) for r in batch]
    for ledger_type in (Ledger, AsyncLedger):  # the budget ledger without and with async
        two, _, learner2 = _pdp(units)
        ledger2 = two.budgets = ledger_type(units)

        async def run(two: DecisionPoint = two) -> list[Decision]:
            return [await two.decide_async(r, CALLER, consume=consume) for r in batch]

        awaited = asyncio.run(run())
        assert [_view(d) for d in awaited] == [_view(d) for d in looped]
        assert ledger2.log == ledger1.log
        assert learner2.seen == learner1.seen
        assert list(two.taint.marks()) == list(one.taint.marks())  # type: ignore[attr-defined]
    for ledger_type in (Ledger, AsyncLedger):  # and decide_many_async is decide_many
        three, _, learner3 = _pdp(units)
        ledger3 = three.budgets = ledger_type(units)
        many = asyncio.run(three.decide_many_async(batch, CALLER, consume=consume))
        assert [_view(d) for d in many] == [_view(d) for d in looped]
        assert ledger3.log == ledger1.log
        assert learner3.seen == learner1.seen


@settings(max_examples=40, deadline=None)
@given(
    st.lists(requests, min_size=1, max_size=12),
    st.sampled_from(["deny_on_first_deny", "permit_on_first_permit"]),
)
def test_decide_many_async_short_circuits_like_decide_many(
    batch: list[EvaluationRequest], semantic: str
) -> None:
    one, ledger1, _ = _pdp(3)
    two, _, _ = _pdp(3)
    ledger2 = two.budgets = AsyncLedger(3)
    looped = one.decide_many(batch, CALLER, semantic=semantic)
    awaited = asyncio.run(two.decide_many_async(batch, CALLER, semantic=semantic))
    assert [_view(d) for d in awaited] == [_view(d) for d in looped]
    assert ledger2.log == ledger1.log


def test_decide_async_offloads_the_stages_before_the_spend() -> None:
    point, ledger, _ = _pdp(1)
    point.budgets = ledger = AsyncLedger(1)
    offloaded: list[str] = []

    async def offload(fn: Any) -> Any:
        offloaded.append("stages")
        return await asyncio.to_thread(fn)

    async def run() -> list[Decision]:
        req = _request("solo", "docs/search", "1", {})
        return [await point.decide_async(req, CALLER, consume=True, offload=offload)] * 1 + [
            await point.decide_async(req, CALLER, consume=True, offload=offload)
        ]

    out = asyncio.run(run())
    assert [d.verdict for d in out] == ["allow", "deny"]
    assert [r.code for r in out[1].reasons] == ["budget_exhausted"]
    assert offloaded == ["stages", "stages"]
    assert ledger.log == ["ses_1:True", "ses_1:False"]


def test_interleaved_decisions_each_hand_the_observer_their_own_score() -> None:
    """Coroutines on one loop are scored, then wait for their budget unit while others
    are scored: each observation still carries the score its own decision used."""
    point, _, _ = _pdp(100)
    point.budgets = AsyncLedger(100)
    pairs: list[tuple[EvaluationRequest, Any]] = []

    class Noting:
        def score(self, req: EvaluationRequest, session: Any, agent: Any = None) -> RiskScore:
            return RiskScore(learn=req)

        def observe(self, req: EvaluationRequest, agent: Any, d: Decision, risk: Any) -> None:
            pairs.append((req, risk.learn if risk is not None else None))

    point.behaviour = point.observer = Noting()
    reqs = [_request(t, "docs/search", "1", {}) for t in ("solo", "alice") * 8]  # all allowed

    async def run() -> list[Decision]:
        return list(
            await asyncio.gather(*(point.decide_async(r, CALLER, consume=True) for r in reqs))
        )

    out = asyncio.run(run())
    assert len(pairs) == len(reqs)
    assert all(seen is req for req, seen in pairs)
    assert {d.verdict for d in out} == {"allow"}
