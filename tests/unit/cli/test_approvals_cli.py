"""``tessera approvals`` in-process (issue 8): list, show, admin approve refused where a
passkey is required, admin deny recorded as admin, enrollment links, CIBA client modes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.cli_harness import Run, cli_run

import tessera.cli.policy  # noqa: F401 - registers `policy`
from tessera.app import build
from tessera.approvals.ports import CallToApprove
from tessera.config import load_config
from tessera.crypto.canonical import argument_hash

BUNDLE = Path(__file__).resolve().parents[3] / "examples" / "approvals-bundle"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    run = cli_run(
        tmp_path,
        monkeypatch,
        env={"TESSERA_DEV_MODE": "1", "TESSERA_ISSUER": "http://localhost:8080"},
        stdout_codes=(0,),
    )
    run("init")
    run("demo", "load")
    run("policy", "apply", str(BUNDLE))
    return run


def _request(action: str, args: dict[str, object]) -> str:
    t = build(load_config())
    agent = t.identity.get_agent("research-assistant")
    server, tool = action.split("/")
    ticket = t.approvals.request_for_call(
        CallToApprove(
            session_id="ses_cli",
            agent_id=agent.id,
            user_id=None,
            act_chain=(),
            action=action,
            resource={"type": "document", "id": "roadmap"},
            arguments=args,
            argument_hash=argument_hash(server, tool, args),
            dpop_jkt=None,
            decision_id="dec_cli",
            reasons=({"stage": "approval", "code": "approval_rule"},),
            risk=None,
        )
    )
    t.close()
    return ticket.auth_req_id


def test_list_show_and_admin_decisions(run) -> None:  # type: ignore[no-untyped-def]
    rid = _request("docs/publish", {"title": "t", "password": "p"})
    listed = json.loads(run("approvals", "list", "--json"))
    assert [r["auth_req_id"] for r in listed] == [rid]
    shown = json.loads(run("approvals", "show", rid, "--json"))
    assert shown["arguments"] == {"title": "t", "password": "[redacted]"}
    assert shown["passkey_required"] is True
    err = run("approvals", "approve", rid, code=2)
    assert "needs a passkey approval" in err
    denied = json.loads(run("approvals", "deny", rid, "--note", "no", "--json"))
    assert denied["status"] == "denied"
    assert denied["votes"] == [
        {"approver": "admin:cli", "decision": "deny", "method": "admin", "note": "no"}
    ]
    assert json.loads(run("approvals", "list", "--json")) == []
    assert len(json.loads(run("approvals", "list", "--all", "--json"))) == 1
    events = run("events", "list", "--json")
    assert '"approval.denied"' in events
    assert "admin:cli" in events
    assert "no such approval request" in run("approvals", "show", "areq_missing", code=2)


def test_enroll_link_and_client_modes(run) -> None:  # type: ignore[no-untyped-def]
    link = json.loads(run("approvals", "enroll-link", "alice", "--json"))
    assert link["url"].startswith("http://localhost:8080/console/enroll/tenr_")
    assert "no active user" in run("approvals", "enroll-link", "nobody", code=2)
    assert "notification endpoint" in run(
        "approvals", "client", "research-assistant", "--mode", "ping", code=2
    )
    out = run(
        "approvals",
        "client",
        "research-assistant",
        "--mode",
        "ping",
        "--endpoint",
        "https://agent.example/cb",
    )
    assert "ping" in out
    assert "delivery mode" in run(
        "approvals", "client", "research-assistant", "--mode", "x", code=2
    )
