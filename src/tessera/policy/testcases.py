"""Bundle test files (``tests/*.yaml``): requests and the decisions they must get.

File format::

    tuples:                      # optional ReBAC tuples (the bundle's .fga model)
      - {object: "doc:1", relation: viewer, user: "user:alice"}
    attributes:                  # optional directory: type -> id -> attributes
      user: {alice: {role: admin}}
    agents:                      # optional agent subjects, described by their verified layers
      researcher:
        agent: agt_research      # client_id (default: the name)
        operator: op_acme        # default op_test
        model: {id: mdl_acme, digest: "sha256:<64 hex>"}   # default a fixed test model
        user: alice              # acting on behalf of this user (omit: autonomous)
        act: [agt_planner]       # the agents that delegated, nearest first (depth = length)
        session:                 # what the session token grants (RAR tessera_session)
          tools: ["docs/*"]      # omitted: no tool (as in a real grant)
          deny: [docs/publish]
          data_scope: ["doc:*"]
          budgets: {tool_calls: 5}
        tainted: false           # the session already read untrusted content
        live: true               # false: the stored session was revoked (invalid_token)
    cases:
      - name: alice reads doc 1
        request: {subject: {...}, action: {...}, resource: {...}, context: {...}}
        expect: allow            # allow | deny | approval_required
        reasons: [policy-id]     # optional: each must be a reason code or policy id
      - name: the researcher reads doc 1
        request:
          subject: {type: agent, id: researcher}   # a name under agents:
          action: {name: docs/read}
          resource: {type: document, id: "1"}
        expect: allow

Cases run through the same pipeline as the server. An agent subject cannot carry a real
session token in a file, so a test names a described agent instead: the runner builds the
claims a token with those layers would carry (``tokens.claims.build_session_claims``, so the
same validation and delegation-chain rules apply), and the pipeline receives the verified
agent context it would get from ``SessionTokenVerifier`` (``DescribedAgents``). Every stage
after token verification (limits, taint, ReBAC for the agent and its user, Cedar over the
agent's attributes, approvals, risk) is the real one. Each case starts with clean taint
marks (only ``tainted: true`` sessions are tainted) and spends no budget.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import yaml

from tessera.clock import SystemClock
from tessera.errors import TesseraError
from tessera.identity.ceiling import DEFAULT_DELEGATION_DEPTH
from tessera.pdp.agents import AgentSubject, AgentTokenRejected, Caller, SessionTokenVerifier
from tessera.pdp.model import parse_evaluation
from tessera.pdp.pipeline import DecisionPoint, StaticBundle
from tessera.pdp.ports import EngineRelations, MemoryAttributes, MemoryTaint
from tessera.policy.bundle import PolicyBundle
from tessera.rebac import MemoryTupleIndex, RebacEngine, RelationTuple
from tessera.tokens.claims import build_session_claims, parse_session_claims
from tessera.tokens.delegation import act_from_chain
from tessera.tokens.grant import SessionGrant
from tessera.tokens.rar import parse_budgets

_TEST_CALLER = Caller("bundle-test", "bundle-test", "test")
_VERDICTS = ("allow", "deny", "approval_required")
_AGENT_KEYS = frozenset(
    {"agent", "operator", "model", "user", "act", "session", "tainted", "live", "sid"}
)
_SESSION_KEYS = frozenset({"tools", "deny", "data_scope", "budgets"})
TEST_MODEL_DIGEST: Final = "sha256:" + hashlib.sha256(b"tessera bundle test model").hexdigest()
_DESCRIBED_REF: Final = "bundle-test-agent:"  # stands for "the token of the described agent"


@dataclass(frozen=True)
class CaseResult:
    file: str
    name: str
    passed: bool
    expected: str
    actual: str
    reasons: tuple[str, ...]
    problem: str = ""


@dataclass(frozen=True)
class DescribedAgent:
    """A test file's agent: the verified context, and whether its session is still live."""

    subject: AgentSubject
    tainted: bool
    live: bool


def _tuples(raw: Any) -> list[RelationTuple]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError("tuples must be a list")
    return [RelationTuple(str(t["object"]), str(t["relation"]), str(t["user"])) for t in raw]


def _strings(raw: Any, what: str) -> frozenset[str]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ValueError(f"{what} must be a list of strings")
    return frozenset(raw)


def describe_agent(name: str, raw: Any, now: int) -> DescribedAgent:
    """The verified agent context a session token with these layers would give.

    The claims are built and read back by the token service's own functions, so a described
    agent can only be one a real token could describe (tool and scope syntax, model digest,
    the ``act`` chain against ``depth``, on-behalf-of versus autonomous)."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"agent {name!r} must be a mapping")
    unknown = set(raw) - _AGENT_KEYS
    if unknown:
        raise ValueError(f"agent {name!r}: unknown keys {sorted(unknown)}")
    client_id = str(raw.get("agent", name))
    session = raw.get("session") or {}
    if not isinstance(session, Mapping) or set(session) - _SESSION_KEYS:
        raise ValueError(f"agent {name!r}: session holds only {sorted(_SESSION_KEYS)}")
    model = raw.get("model") or {}
    if not isinstance(model, Mapping) or set(model) - {"id", "digest"}:
        raise ValueError(f"agent {name!r}: model is {{id, digest}}")
    act = raw.get("act") or []
    if not isinstance(act, list) or not all(isinstance(a, str) and a for a in act):
        raise ValueError(f"agent {name!r}: act must be a list of agent ids")
    user = raw.get("user")
    if user is not None and (not isinstance(user, str) or not user):
        raise ValueError(f"agent {name!r}: user must be a user id")
    try:
        budgets = parse_budgets(session.get("budgets") or {})
    except TesseraError as exc:
        raise ValueError(f"agent {name!r}: budgets: {exc.message}") from None
    depth = len(act)
    grant = SessionGrant(
        tools=_strings(session.get("tools"), "session.tools"),
        deny=_strings(session.get("deny"), "session.deny"),
        data_scope=_strings(session.get("data_scope"), "session.data_scope"),
        budgets=budgets,
        audience=frozenset({_TEST_CALLER.service_id}),
        lifetime=900,
        model_digest=str(model.get("digest", TEST_MODEL_DIGEST)),
        depth=depth,
        max_depth=max(depth, DEFAULT_DELEGATION_DEPTH),
    )
    # RFC 8693 §4.1 as the token service nests it: on behalf of a user the chain names every
    # agent; an autonomous chain's root agent is the token's subject instead.
    if user is not None:
        subject, chain = user, [client_id, *act]
    elif act:
        subject, chain = act[-1], [client_id, *act[:-1]]
    else:
        subject, chain = client_id, []
    try:
        claims = parse_session_claims(
            build_session_claims(
                grant,
                issuer="https://bundle-test.invalid",
                subject=subject,
                client_id=client_id,
                jti=f"jti_{name}"[:64],
                iat=now,
                sid=str(raw.get("sid", f"ses_{name}"))[:64],
                operator=str(raw.get("operator", "op_test")),
                model_id=str(model.get("id", "mdl_test")),
                jkt=None,
                act=act_from_chain(chain),
                parent="sha256:bundle-test-parent" if depth else None,
            )
        )
    except TesseraError as exc:
        raise ValueError(f"agent {name!r}: {exc.detail or exc.message}") from None
    tainted, live = raw.get("tainted", False), raw.get("live", True)
    if not isinstance(tainted, bool) or not isinstance(live, bool):
        raise ValueError(f"agent {name!r}: tainted and live are true or false")
    subject_ctx = AgentSubject(claims, f"{_DESCRIBED_REF}{name}")
    return DescribedAgent(subject_ctx, tainted, live)


def _no_keys(kid: str | None, alg: str) -> Mapping[str, Any] | None:
    return None  # no token is ever verified here: every agent is described


class DescribedAgents(SessionTokenVerifier):
    """The token stage's seam for bundle test files: the subject's ``token`` property names
    a described agent, whose verified context is returned as a real token's would be (or
    rejected as a revoked session's would be). Anything else is an invalid token."""

    def __init__(self, agents: Mapping[str, DescribedAgent]) -> None:
        super().__init__(_no_keys, "https://bundle-test.invalid", self._live)
        self._agents = dict(agents)

    def _live(self, token_hash: str, sid: str) -> tuple[bool, str]:
        found = self._agents.get(token_hash.removeprefix(_DESCRIBED_REF))
        return (found is not None and found.live), "described as revoked"

    def verify(
        self,
        properties: Mapping[str, Any],
        subject_id: str,
        context: Mapping[str, Any],
        caller: Caller,
        now: float,
    ) -> AgentSubject:
        ref = properties.get("token")
        found = (
            self._agents.get(ref.removeprefix(_DESCRIBED_REF))
            if isinstance(ref, str) and ref.startswith(_DESCRIBED_REF)
            else None
        )
        if found is None:
            raise AgentTokenRejected("not a described test agent")
        live, reason = self._live(found.subject.token_hash, found.subject.claims.sid)
        if not live:
            raise AgentTokenRejected(f"session not live: {reason}")
        return found.subject


def _agents(raw: Any, now: int) -> dict[str, DescribedAgent]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError("agents must map names to agent descriptions")
    return {str(name): describe_agent(str(name), spec, now) for name, spec in raw.items()}


def _agent_request(request: Any, agents: Mapping[str, DescribedAgent]) -> Any:
    """Replace ``subject: {type: agent, id: NAME}`` by the described agent's subject."""
    if not isinstance(request, Mapping):
        return request
    subject = request.get("subject")
    if not isinstance(subject, Mapping) or subject.get("type") != "agent":
        return request
    name = str(subject.get("id", ""))
    found = agents.get(name)
    if found is None:
        raise ValueError(f"agent subject {name!r} is not described under agents:")
    described = {
        "type": "agent",
        "id": found.subject.agent,
        "properties": {"token": found.subject.token_hash},
    }
    return {**request, "subject": described}


def run_test_file(bundle: PolicyBundle, name: str, text: str) -> list[CaseResult]:
    """Run one test file; malformed files give one failed result naming the problem."""
    clock = SystemClock()
    try:
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
            raise ValueError("a test file needs a list of cases")
        tuples = _tuples(data.get("tuples"))
        attrs = MemoryAttributes(data.get("attributes") or {})
        agents = _agents(data.get("agents"), int(clock.timestamp()))
    except (ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError) as exc:
        return [CaseResult(name, "(file)", False, "", "", (), f"invalid test file: {exc}"[:300])]
    relations = None
    if bundle.rebac_model is not None:
        relations = EngineRelations(
            RebacEngine(bundle.rebac_model, MemoryTupleIndex(tuples), clock)
        )
    pdp = DecisionPoint(
        StaticBundle(bundle),
        clock,
        relations=relations,
        attributes=attrs,
        agents=DescribedAgents(agents),
    )
    out = []
    for i, case in enumerate(data["cases"]):
        cname = (
            str(case.get("name", f"case {i + 1}")) if isinstance(case, dict) else f"case {i + 1}"
        )
        try:
            if not isinstance(case, dict) or case.get("expect") not in _VERDICTS:
                raise ValueError(f"expect must be one of {list(_VERDICTS)}")
            request = parse_evaluation(_agent_request(case.get("request"), agents))
            taint = MemoryTaint()  # every case starts from its own sessions' marks
            for described in agents.values():
                if described.tainted:
                    taint.taint(described.subject.claims.sid, "described as tainted")
            pdp.taint = taint
            decision = pdp.decide(request, _TEST_CALLER)
        except (ValueError, TesseraError) as exc:
            out.append(CaseResult(name, cname, False, "", "", (), str(exc)[:300]))
            continue
        got = tuple(
            r.message if r.code in ("permit", "forbid") else r.code for r in decision.reasons
        )
        wanted = [str(r) for r in case.get("reasons") or []]
        missing = [r for r in wanted if r not in got]
        passed = decision.verdict == case["expect"] and not missing
        problem = f"missing reasons {missing}" if missing else ""
        out.append(CaseResult(name, cname, passed, case["expect"], decision.verdict, got, problem))
    return out


def run_bundle_tests(bundle: PolicyBundle) -> list[CaseResult]:
    results: list[CaseResult] = []
    for name, text in sorted(bundle.test_files().items()):
        results.extend(run_test_file(bundle, name, text))
    return results
