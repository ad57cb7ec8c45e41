"""A small registry over a real SQLite store for posture tests: agents, stored sessions,
ledger records written by the real writers (event outbox, PDP recorder, token endpoint's
failure record), and a scan."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import timedelta
from typing import Any

from tessera.app import Tessera
from tessera.clock import ManualClock
from tessera.crypto.keys import generate_signing_key
from tessera.pdp.audit import AuditDecisionRecorder
from tessera.pdp.model import Decision, Reason, StageResult, parse_evaluation
from tessera.pdp.ports import DecisionRecord
from tessera.posture.finding import Finding
from tessera.tokens.auth_failures import client_auth_failure
from tessera.tokens.sessions import SessionRecord

DIGEST = "sha256:" + "c3" * 32
ALICE_GRANTS = {
    "tools": ["docs/read", "docs/search", "mail/send"],
    "data_scopes": ["doc:*", "ledger:*"],
    "budgets": {"tool_calls": 100},
}


def base(t: Tessera) -> None:
    t.identity.create_operator("acme", None, actor="test")
    t.identity.create_user("alice", grants=ALICE_GRANTS, actor="test")
    t.identity.create_user("bob", grants={"tools": ["docs/read"]}, actor="test")
    t.identity.register_model("acme", "llm", "1", DIGEST, actor="test")


def agent(t: Tessera, name: str, **kw: Any) -> str:
    args: dict[str, Any] = {
        "operator": "acme",
        "owner": "alice",
        "purpose": "testing posture",
        "expires_in_days": 90,
        "ceiling": {
            "tools": ["docs/read"],
            "data_scopes": ["doc:*"],
            "models": [DIGEST],
            "budgets": {"tool_calls": 10},
        },
    }
    args.update(kw)
    if "jwk" not in args and not args.get("legacy_secret") and "spiffe_id" not in args:
        args["jwk"] = generate_signing_key().public_jwk()
    reg = t.identity.register_agent(name, actor="test", **args)
    return reg.value.agent.id


def session(
    t: Tessera,
    agent_id: str,
    *,
    lifetime: int = 900,
    depth: int = 0,
    digest: str | None = DIGEST,
    grant: dict[str, Any] | None = None,
    parent: str | None = None,
) -> str:
    """A stored session and its ``session.issued`` event, as the token service writes them."""
    now = t.clock.now()
    sid = "ses_" + secrets.token_hex(8)
    a = t.identity.get_agent(agent_id)
    rec = SessionRecord(
        sid=sid,
        jti="jti_" + sid[4:],
        token_hash="th_" + sid,
        agent_id=agent_id,
        user_id=None,
        operator_id=a.operator_id,
        model_id=None,
        model_digest=digest,
        parent_sid=parent,
        root_sid=parent or sid,
        depth=depth,
        audience=("gw",),
        grant=grant or {"type": "tessera_session", "tools": ["docs/read"], "data_scope": []},
        issued_at=now,
        expires_at=now + timedelta(seconds=lifetime),
        status="active",
    )
    with t.store.write() as tx:
        tx.sessions.add(rec, {})
        tx.events.append(
            "session.issued",
            sid,
            {"agent_id": agent_id, "actor_layers": {"agent": agent_id, "session": sid}},
            agent_id,
        )
    return sid


def decision(t: Tessera, agent_id: str | None, tool: str, resource: str, verdict: str) -> None:
    """A PDP evaluation record written by the PDP's own recorder."""
    rtype, _, rid = resource.partition(":")
    req = parse_evaluation(
        {
            "subject": {"type": "agent", "id": agent_id or "agt_unregistered00000"},
            "action": {"name": tool},
            "resource": {"type": rtype, "id": rid},
        }
    )
    trace: tuple[StageResult, ...] = ()
    reasons: tuple[Any, ...] = ()
    if agent_id is not None:
        trace = (StageResult("token", "allow", detail={"agent": agent_id, "session": "ses_x"}),)
    else:
        reasons = (Reason("token", "invalid_token", "the agent token is not valid"),)
        trace = (StageResult("token", "deny", reasons),)
    d = Decision(verdict, reasons, "dec_" + secrets.token_hex(4), None, trace)  # type: ignore[arg-type]
    AuditDecisionRecorder(t.audit).record(DecisionRecord("evaluation", "svc_gw", None, ((req, d),)))


def failed_auth(t: Tessera, client_id: str) -> None:
    """What the token endpoint records for a failed client authentication."""
    entry = client_auth_failure(
        {"grant_type": "client_credentials", "client_id": client_id},
        None,
        f"unknown agent {client_id}",
        endpoint="token",
    )
    t.audit.record(entry)


def scan(t: Tessera, rule: str | None = None, **settings: Any) -> list[Finding]:
    assert t.posture is not None
    t.audit.chain_pending()
    scanner = t.posture.scanner
    saved = scanner.settings
    if settings:
        scanner.settings = replace(saved, **settings)
    try:
        result = scanner.scan()
    finally:
        scanner.settings = saved
    assert not result.errors, result.errors
    return [f for f in result.findings if rule is None or f.rule == rule]


def advance(t: Tessera, days: float) -> None:
    clock = t.clock
    assert isinstance(clock, ManualClock)
    clock.advance(days=days)
