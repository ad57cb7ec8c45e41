"""The decision pipeline, in-process over the demo bundle: agent token limits, taint,
ReBAC for agent and user, behaviour and risk rules that only tighten, fail closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tessera.clock import ManualClock
from tessera.errors import InvalidInput
from tessera.pdp.agents import AgentSubject, Caller
from tessera.pdp.model import EvaluationRequest, parse_evaluation, parse_evaluations
from tessera.pdp.pipeline import DecisionPoint, StaticBundle
from tessera.pdp.ports import EngineRelations, MemoryAttributes, RiskScore
from tessera.pdp.search import search
from tessera.policy.bundle import load_bundle, read_bundle_dir
from tessera.rebac import MemoryTupleIndex, RebacEngine, RelationTuple
from tessera.tokens.claims import SessionClaims
from tessera.tokens.grant import SessionGrant

BUNDLE = Path(__file__).resolve().parents[3] / "examples" / "policy-bundle"
CALLER = Caller("svc_1", "gw", "token")
DIGEST = "sha256:" + "a1" * 32


def _claims(
    user: str | None = None, depth: int = 0, tools: list[str] | None = None
) -> SessionClaims:
    grant = SessionGrant(
        tools=frozenset(tools or ["docs/*", "web/fetch", "mail/send"]),
        deny=frozenset({"docs/publish"} if depth else set()),
        data_scope=frozenset({"doc:*"}),
        budgets={"tool_calls": 5},
        audience=frozenset({"gw"}),
        lifetime=900,
        model_digest=DIGEST,
        depth=0,
    )
    return SessionClaims(
        issuer="https://iss",
        subject=user or "agt_1",
        client_id="agt_1",
        jti="j",
        iat=1,
        exp=10**10,
        sid="ses_1",
        operator="op_1",
        model_id="mdl_1",
        grant=grant,
        act={"sub": "agt_1"} if user else None,
    )


class FakeAgents:
    """Stands in for the verifier (token verification is covered by the contract tests)."""

    def __init__(self, claims: SessionClaims) -> None:
        self.claims = claims

    def verify(self, props: Any, sid: str, ctx: Any, caller: Caller, now: float) -> AgentSubject:
        return AgentSubject(self.claims, "sha256:x")


class Scorer:
    def __init__(self, score: int = 0, fail: bool = False) -> None:
        self.value, self.fail = score, fail

    def score(
        self, request: EvaluationRequest, session: str | None, agent: Any = None
    ) -> RiskScore:
        if self.fail:
            raise TimeoutError("scorer down")
        return RiskScore(self.value, "x")


def _pdp(claims: SessionClaims | None = None, **kw: Any) -> DecisionPoint:
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
    return DecisionPoint(
        StaticBundle(bundle, 7),
        clock,
        relations=EngineRelations(RebacEngine(bundle.rebac_model, index, clock)),
        attributes=MemoryAttributes({"document": {"9": {"classification": "secret"}}}),
        agents=FakeAgents(claims or _claims()),  # type: ignore[arg-type]
        **kw,
    )


def _req(tool: str, doc: str = "1", **ctx: Any) -> EvaluationRequest:
    return parse_evaluation(
        {
            "subject": {"type": "agent", "id": "agt_1", "properties": {"token": "t"}},
            "action": {"name": tool},
            "resource": {"type": "document", "id": doc},
            "context": ctx,
        }
    )


def _codes(d: Any) -> list[str]:
    return [r.code for r in d.reasons]


def test_allow_carries_the_policy_and_version() -> None:
    d = _pdp().decide(_req("docs/read"), CALLER)
    assert d.verdict == "allow"
    assert d.policy_version == 7
    assert [r.message for r in d.reasons] == ["agents-use-doc-tools"]
    body = d.to_authzen(explain=True)
    assert body["decision"] is True
    assert [s["stage"] for s in body["context"]["trace"]][:3] == ["token", "limits", "rebac"]


def test_reading_untrusted_content_taints_and_blocks_egress() -> None:
    pdp = _pdp()
    assert pdp.decide(_req("mail/send"), CALLER).allowed
    assert pdp.decide(_req("web/fetch"), CALLER).allowed  # allowed, and now tainted
    d = pdp.decide(_req("mail/send"), CALLER)
    assert d.verdict == "deny"
    assert _codes(d) == ["session_tainted"]
    assert pdp.decide(_req("docs/read"), CALLER).allowed  # non-egress tools still work


def test_taint_can_require_approval_instead_and_is_not_an_allow_on_the_wire() -> None:
    files = read_bundle_dir(BUNDLE)
    files["bundle.yaml"] = files["bundle.yaml"].replace("taint: deny", "taint: approval_required")
    pdp = _pdp()
    pdp.bundles = StaticBundle(load_bundle(files), 8)
    d = pdp.decide(_req("mail/send", tainted=True), CALLER)
    assert d.verdict == "approval_required"
    body = d.to_authzen()
    assert body["decision"] is False
    assert body["context"]["approval_required"] is True


def test_user_rights_bound_the_agent() -> None:
    pdp = _pdp(_claims(user="alice"))
    assert pdp.decide(_req("docs/read", "1"), CALLER).allowed
    d = pdp.decide(_req("docs/read", "2"), CALLER)
    assert _codes(d) == ["no_relation"]
    assert "user:alice" in d.reasons[0].message


def test_limits_deny_before_anything_else_runs() -> None:
    pdp = _pdp(_claims(tools=["docs/read"]))
    d = pdp.decide(_req("docs/search"), CALLER)
    assert _codes(d) == ["tool_not_granted"]
    assert [s.stage for s in d.trace] == ["token", "limits"]
    d = pdp.decide(
        _req("docs/read", doc="x")
        if False
        else parse_evaluation(
            {
                "subject": {"type": "agent", "id": "agt_1", "properties": {"token": "t"}},
                "action": {"name": "docs/read"},
                "resource": {"type": "folder", "id": "1"},
            }
        ),
        CALLER,
    )
    assert _codes(d) == ["data_scope"]


def test_forbid_and_unmapped_actions_deny() -> None:
    pdp = _pdp()
    d = pdp.decide(_req("docs/read", "9"), CALLER)
    assert _codes(d) == ["forbid"]
    assert d.reasons[0].message == "no-secret-docs-for-agents"
    assert _codes(pdp.decide(_req("docs/delete"), CALLER)) == ["unmapped_action"]
    user = parse_evaluation(
        {
            "subject": {"type": "user", "id": "alice"},
            "action": {"name": "docs/delete"},
            "resource": {"type": "document", "id": "1"},
        }
    )
    assert _codes(pdp.decide(user, CALLER)) == ["unmapped_action"]


def test_risk_only_tightens_and_a_failed_scorer_leaves_the_decision() -> None:
    assert _codes(_pdp(behaviour=Scorer(85)).decide(_req("docs/read"), CALLER)) == ["high_risk"]
    d = _pdp(behaviour=Scorer(60)).decide(_req("docs/publish"), CALLER)
    assert d.verdict == "approval_required"
    assert _codes(d) == ["risk_approval"]
    assert _pdp(behaviour=Scorer(60)).decide(_req("docs/read"), CALLER).allowed
    d = _pdp(behaviour=Scorer(fail=True)).decide(_req("docs/read"), CALLER)
    assert d.allowed
    assert [r.code for s in d.trace for r in s.reasons if s.stage == "behaviour"] == [
        "behaviour_unavailable"
    ]


class Broken:
    def check(self, *a: Any) -> bool:
        raise RuntimeError("index gone")


def test_errors_fail_closed() -> None:
    pdp = _pdp()
    pdp.relations = Broken()
    d = pdp.decide(_req("docs/read"), CALLER)
    assert d.verdict == "deny"
    assert d.reasons[0].stage == "rebac"
    assert (
        DecisionPoint(StaticBundle(None), ManualClock()).decide(_req("x/y"), CALLER).reasons[0].code
        == "no_policy"
    )


def test_evaluations_defaults_and_validation() -> None:
    reqs, semantic = parse_evaluations(
        {
            "subject": {"type": "user", "id": "a"},
            "action": {"name": "docs/read"},
            "context": {"x": 1},
            "evaluations": [
                {"resource": {"type": "document", "id": "1"}},
                {"resource": {"type": "document", "id": "2"}, "context": {"y": 2}},
            ],
        }
    )
    assert semantic == "execute_all"
    assert [r.resource.id for r in reqs] == ["1", "2"]
    assert reqs[0].context == {"x": 1}
    assert reqs[1].context == {"y": 2}
    with pytest.raises(InvalidInput):
        parse_evaluations({"evaluations": [{}], "options": {"evaluations_semantic": "maybe"}})
    with pytest.raises(InvalidInput):
        parse_evaluation({"subject": {"type": "user"}, "action": {"name": "a"}, "resource": {}})


def test_search_pages_through_results() -> None:
    pdp = _pdp()
    pdp.attributes = MemoryAttributes({"user": {f"u{i}": {} for i in range(5)}})
    body = {
        "subject": {"type": "user"},
        "action": {"name": "docs/search"},
        "resource": {"type": "document", "id": "1"},
        "page": {"limit": 2},
    }
    seen: list[str] = []
    while True:
        out = search(pdp, "subject", body, CALLER)
        seen += [r["id"] for r in out["results"]]
        if not out["page"]["next_token"]:
            break
        body["page"] = {"limit": 2, "token": out["page"]["next_token"]}
    assert seen == [f"u{i}" for i in range(5)]
    with pytest.raises(InvalidInput):
        search(pdp, "subject", {**body, "page": {"token": "!!"}}, CALLER)
