"""The PDP over HTTP with real session tokens from the token service (DESIGN 2B, 5, 6b):
service authentication, agent subjects (aud, cnf.jkt, revocation), token limits, ReBAC
for the agent and its user, Cedar, taint, batches, explain, bundle versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.contract.test_token_service import DIGEST, World, world  # noqa: F401

from tessera.crypto.hashing import hash_token
from tessera.pdp.ports import EngineRelations, MemoryRecorder
from tessera.policy.bundle import read_bundle_dir
from tessera.rebac import MemoryTupleIndex, RebacEngine, RelationTuple
from tessera.sdk import client_assertion

BUNDLE = Path(__file__).resolve().parents[2] / "examples" / "policy-bundle"
DETAILS = {
    "type": "tessera_session",
    "tools": ["docs/*", "mail/send"],
    "data_scope": ["doc:*"],
    "budgets": {"tool_calls": 10},
}
TUPLES = [
    RelationTuple("document:1", "parent", "folder:eng"),
    RelationTuple("folder:eng", "viewer", "team:eng#member"),
    RelationTuple("team:eng", "member", "agent:AGENT"),
    RelationTuple("team:eng", "member", "user:ALICE"),
    RelationTuple("document:2", "viewer", "agent:AGENT"),
]


class Pdp:
    def __init__(self, w: World) -> None:
        self.w = w
        self.t = w.t
        stored = self.t.pdp.policies.apply(read_bundle_dir(BUNDLE), actor="test", with_model=True)
        self.version = stored.version
        bundle = self.t.pdp.policies.active()
        assert bundle is not None
        assert bundle.bundle.rebac_model is not None
        agent = self.t.identity.get_agent("planner").id
        alice = self.t.identity.get_user("alice").username  # users appear by username
        tuples = [
            RelationTuple(
                x.object, x.relation, x.user.replace("AGENT", agent).replace("ALICE", alice)
            )
            for x in TUPLES
        ]
        index = MemoryTupleIndex(tuples)
        self.t.pdp.point.relations = EngineRelations(
            RebacEngine(bundle.bundle.rebac_model, index, self.t.clock)
        )
        self.recorder = MemoryRecorder()
        self.t.pdp.point.recorder = self.recorder
        self.service_token = self._service_token()

    def _service_token(self) -> str:
        aud = f"{self.t.config.issuer}/oauth/token"
        r = self.w.http.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "scope": "pdp.evaluate",
                "client_assertion": client_assertion(self.w.svc_key, self.w.svc_id, aud),
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            },
        )
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def session(self, on_behalf: bool = False, resource: str = "gw") -> str:
        kw: dict[str, Any] = {}
        if on_behalf:
            kw["subject_token"] = self.w.user_token()
        details = dict(DETAILS, tools=["docs/*"]) if on_behalf else DETAILS
        r = self.w.parent.session(
            details=details, resource=resource, attestation=self.w.attest(self.w.parent), **kw
        )
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def ask(
        self, token: str, tool: str, doc: str = "1", *, jkt: str | None = "default", **extra: Any
    ) -> dict[str, Any]:
        props: dict[str, Any] = {"token": token}
        if jkt is not None:
            props["jkt"] = self.w.parent.dpop_jkt if jkt == "default" else jkt
        body = {
            "subject": {
                "type": "agent",
                "id": self.t.identity.get_agent("planner").id,
                "properties": props,
            },
            "action": {"name": tool},
            "resource": {"type": "document", "id": doc},
            **extra,
        }
        r = self.w.http.post(
            "/access/v1/evaluation",
            json=body,
            headers={"Authorization": f"Bearer {self.service_token}", "X-Request-ID": "req-1"},
        )
        assert r.status_code == 200, r.text
        assert r.headers["X-Request-ID"] == "req-1"
        return r.json()  # type: ignore[no-any-return]


@pytest.fixture
def pdp(world: World) -> Pdp:  # noqa: F811
    return Pdp(world)


def _codes(body: dict[str, Any]) -> list[str]:
    return [r["code"] for r in body["context"]["reasons"]]


def test_agent_session_is_allowed_through_every_stage(pdp: Pdp) -> None:
    body = pdp.ask(pdp.session(), "docs/read", options={"explain": True})
    assert body["decision"] is True, body
    ctx = body["context"]
    assert ctx["verdict"] == "allow"
    assert ctx["decision_id"].startswith("dec_")
    assert ctx["policy_version"] == pdp.version
    stages = [s["stage"] for s in ctx["trace"]]
    assert stages == ["token", "limits", "rebac", "behaviour", "policy", "risk", "budget"]
    assert "agents-use-doc-tools" in [r.get("message") for r in ctx["reasons"]]
    # one audit record per evaluation, with the request id
    assert pdp.recorder.records[-1].request_id == "req-1"


def test_on_behalf_of_checks_the_user_too(pdp: Pdp) -> None:
    token = pdp.session(on_behalf=True)
    assert pdp.ask(token, "docs/read", "1")["decision"] is True
    # doc:2: the agent may view it, alice may not: the user's rights bound the agent
    body = pdp.ask(token, "docs/read", "2")
    assert body["decision"] is False
    assert _codes(body) == ["no_relation"]
    # autonomous session: only the agent is checked
    assert pdp.ask(pdp.session(), "docs/read", "2")["decision"] is True


def test_token_limits_deny_tools_and_scopes_outside_the_session(pdp: Pdp) -> None:
    token = pdp.session()
    assert _codes(pdp.ask(token, "web/fetch")) == ["tool_not_granted"]
    body = pdp.w.http.post(
        "/access/v1/evaluation",
        json={
            "subject": {
                "type": "agent",
                "id": "",
                "properties": {"token": token, "jkt": pdp.w.parent.dpop_jkt},
            },
            "action": {"name": "docs/read"},
            "resource": {"type": "folder", "id": "eng"},
        },
        headers={"Authorization": f"Bearer {pdp.service_token}"},
    )
    assert body.status_code == 400  # subject.id must be a non-empty string


def test_token_must_name_the_caller_and_match_the_dpop_key(pdp: Pdp) -> None:
    other_aud = pdp.session(resource="https://tools.example/mcp")
    body = pdp.ask(other_aud, "docs/read")
    assert _codes(body) == ["invalid_token"]
    # one opaque reason; the cause is only in the trace (audit record, explain)
    assert body["context"]["reasons"][0]["message"] == "the agent token is not valid"
    traced = pdp.ask(other_aud, "docs/read", options={"explain": True})["context"]["trace"]
    assert traced[0]["detail"]["cause"] == "token audience does not name the calling service"
    token = pdp.session()
    assert _codes(pdp.ask(token, "docs/read", jkt=None)) == ["invalid_token"]
    assert _codes(pdp.ask(token, "docs/read", jkt="A" * 43)) == ["invalid_token"]
    assert _codes(pdp.ask("not-a-token", "docs/read")) == ["invalid_token"]


def test_revocation_applies_to_a_cached_token_at_once(pdp: Pdp) -> None:
    token = pdp.session()
    assert pdp.ask(token, "docs/read")["decision"] is True
    with pdp.t.store.read() as tx:
        rec = tx.sessions.find_by_token_hash(hash_token(token))
    assert rec is not None
    pdp.t.sessions.revoke_session(rec.sid, "drill", actor="test")
    body = pdp.ask(token, "docs/read")
    assert body["decision"] is False
    assert _codes(body) == ["invalid_token"]


def test_a_tainted_session_may_not_use_egress_tools(pdp: Pdp) -> None:
    token = pdp.session()
    assert pdp.ask(token, "mail/send")["decision"] is True
    # the PEP reports that this session read untrusted content (context.tainted)
    body = pdp.ask(token, "mail/send", context={"tainted": True})
    assert body["decision"] is False
    assert _codes(body) == ["session_tainted"]


def test_batch_is_one_audit_record_with_defaults_and_semantics(pdp: Pdp) -> None:
    token = pdp.session()
    subject = {
        "type": "agent",
        "id": pdp.t.identity.get_agent("planner").id,
        "properties": {"token": token, "jkt": pdp.w.parent.dpop_jkt},
    }
    body = {
        "subject": subject,
        "action": {"name": "docs/read"},
        "evaluations": [
            {"resource": {"type": "document", "id": "1"}},
            {"resource": {"type": "document", "id": "3"}},
            {"resource": {"type": "document", "id": "2"}},
        ],
    }
    headers = {"Authorization": f"Bearer {pdp.service_token}"}
    before = len(pdp.recorder.records)
    r = pdp.w.http.post("/access/v1/evaluations", json=body, headers=headers)
    assert [e["decision"] for e in r.json()["evaluations"]] == [True, False, True]
    assert len(pdp.recorder.records) == before + 1
    assert len(pdp.recorder.records[-1].decisions) == 3
    body["options"] = {"evaluations_semantic": "deny_on_first_deny"}
    r = pdp.w.http.post("/access/v1/evaluations", json=body, headers=headers)
    assert [e["decision"] for e in r.json()["evaluations"]] == [True, False]
    body["options"] = {"evaluations_semantic": "permit_on_first_permit"}
    r = pdp.w.http.post("/access/v1/evaluations", json=body, headers=headers)
    assert [e["decision"] for e in r.json()["evaluations"]] == [True]


def test_callers_must_be_services_with_the_pdp_scope(pdp: Pdp) -> None:
    req = {
        "subject": {"type": "user", "id": "u"},
        "action": {"name": "docs/read"},
        "resource": {"type": "document", "id": "1"},
    }
    r = pdp.w.http.post("/access/v1/evaluation", json=req)
    assert r.status_code == 401
    r = pdp.w.http.post(
        "/access/v1/evaluation", json=req, headers={"Authorization": "Bearer x.y.z"}
    )
    assert r.status_code == 401
    # a session token is not a service token
    r = pdp.w.http.post(
        "/access/v1/evaluation", json=req, headers={"Authorization": f"Bearer {pdp.session()}"}
    )
    assert r.status_code == 401
    reg = pdp.t.identity.register_service("nopdp", scopes=["introspect"], api_key=True, actor="t")
    assert reg.value.api_key is not None
    r = pdp.w.http.post(
        "/access/v1/evaluation",
        json=req,
        headers={"Authorization": f"Bearer {reg.value.api_key.secret}"},
    )
    assert r.status_code == 403
    assert (
        pdp.w.http.get("/.well-known/authzen-configuration")
        .json()["access_evaluation_endpoint"]
        .endswith("/access/v1/evaluation")
    )


def test_a_new_bundle_version_is_used_and_recorded(pdp: Pdp) -> None:
    token = pdp.session()
    files = read_bundle_dir(BUNDLE)
    files["agents.cedar"] += (
        '\n@id("freeze")\nforbid (principal is agent, action == Action::"docs/read", resource);\n'
    )
    stored = pdp.t.pdp.policies.apply(files, actor="test")
    body = pdp.ask(token, "docs/read")
    assert body["decision"] is False
    assert body["context"]["policy_version"] == stored.version == pdp.version + 1
    assert [r.get("message") for r in body["context"]["reasons"]] == ["freeze"]
    assert [b.version for b in pdp.t.pdp.policies.versions()][:2] == [stored.version, pdp.version]


def test_every_evaluation_is_durable_evidence_without_the_token(tmp_path: Path) -> None:
    """The wired application records each decision in the audit ledger before answering."""
    from tests.conftest import make_config

    from tessera.app import build, initialise
    from tessera.audit.ports import AuditQuery
    from tessera.pdp.model import Action, Entity, EvaluationRequest
    from tessera.store.engine import make_engine

    config = make_config(tmp_path)
    engine = make_engine(config.database_url)
    initialise(config, engine=engine)
    t = build(config, engine=engine)
    from tessera.pdp.agents import Caller

    caller = Caller(service_id="svc_test", service_name="pep", via="api_key")
    secret = "eyJ.not-a-real-token.sig"
    req = EvaluationRequest(
        Entity("agent", "agt_x", {"token": secret}),
        Action("docs/read"),
        Entity("document", "roadmap"),
    )
    decision = t.pdp.point.evaluate(req, caller, request_id="req-1")
    assert not decision.allowed
    records = t.audit.query(AuditQuery(event_type="pdp.evaluation"))
    assert len(records) == 1
    assert records[0]["outcome"] == decision.verdict
    assert records[0]["details"]["decisions"][0]["decision_id"] == decision.decision_id
    assert records[0]["request_id"] == "req-1"
    import json

    assert secret not in json.dumps(records)
    engine.dispose()


def test_allowed_decisions_spend_the_session_budget(pdp: Pdp) -> None:
    """DESIGN 5: an AuthZEN-only PEP has no "executed" callback, so each allowed evaluation
    spends one tool_calls unit; at zero the session is denied with budget_exhausted."""
    token = pdp.session()
    sid = pdp.t.sessions.list_sessions(agent="planner")[0].sid
    granted = pdp.t.sessions.get_session(sid)[1]["tool_calls"]
    for _ in range(granted):
        assert pdp.ask(token, "docs/read", "1")["decision"] is True
    assert pdp.t.sessions.get_session(sid)[1]["tool_calls"] == 0
    body = pdp.ask(token, "docs/read", "1")
    assert body["decision"] is False
    assert _codes(body) == ["budget_exhausted"]
    # a denied evaluation spends nothing (the counter stays at zero, never negative)
    assert pdp.t.sessions.get_session(sid)[1]["tool_calls"] == 0


def test_the_acting_for_user_has_the_directory_entry_of_its_username(pdp: Pdp) -> None:
    """decisions.md 90: ReBAC checks ``user:alice`` for an agent acting for alice, and the
    directory entry ``user:alice`` is the one Cedar gets for her (her token names her by
    id); ``user:<id>`` applies only when there is no username entry."""
    alice = pdp.t.identity.get_user("alice")
    files = read_bundle_dir(BUNDLE)
    files["schema.cedarschema"] = files["schema.cedarschema"].replace(
        "entity user;", "entity user { clearance?: Long };"
    )
    files["hr.cedar"] = (
        '@id("cleared-users-only")\n'
        "forbid (principal is agent, action, resource)\n"
        f'when {{ principal.user == "{alice.id}" && user::"{alice.id}" has clearance\n'
        f'       && user::"{alice.id}".clearance < 2 }};\n'
    )
    pdp.t.pdp.policies.apply(files, actor="test")
    token = pdp.session(on_behalf=True)
    assert pdp.ask(token, "docs/read")["decision"] is True  # no entry: no clearance
    ct = pdp.t.directory.load(
        {"user": {alice.id: {"clearance": 1}}}, actor="test"
    ).consistency_token
    body = pdp.ask(token, "docs/read", context={"consistency_token": ct})
    assert body["decision"] is False  # the id entry, as there is no username entry
    ct = pdp.t.directory.load({"user": {"alice": {"clearance": 3}}}, actor="test").consistency_token
    body = pdp.ask(token, "docs/read", context={"consistency_token": ct})
    assert body["decision"] is True, body  # the username entry wins
    ct = pdp.t.directory.set("user", "alice", {"clearance": 0}, actor="test").consistency_token
    body = pdp.ask(token, "docs/read", context={"consistency_token": ct})
    assert body["decision"] is False
    assert "cleared-users-only" in [r.get("message") for r in body["context"]["reasons"]]
