"""MCP messages as AuthZEN requests (COAZ-style mapping; COORDINATION context contract)."""

from __future__ import annotations

from pathlib import Path

from tests.unit.tokens.test_tokens_upstream import _claims

from tessera.clock import ManualClock
from tessera.gateway.authorize import CallGate, parse_call
from tessera.gateway.config import load_gateway_config
from tessera.pdp.agents import AgentSubject
from tessera.pdp.pipeline import DecisionPoint, StaticBundle

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "gateway" / "gateway.yaml"


def _gate() -> CallGate:
    return CallGate(DecisionPoint(StaticBundle(None), ManualClock()), None)


def test_a_tools_call_carries_arguments_marks_and_the_approval_token() -> None:
    up = load_gateway_config(EXAMPLE).upstreams["tools"]
    agent = AgentSubject(_claims(act=None), "hash")
    params = {
        "name": "send_email",
        "arguments": {"to": "bob@example.com", "body": "hi"},
        "_meta": {"tessera/approval": "one-shot"},
    }
    call = parse_call("tools", "tools/call", params)
    assert not isinstance(call, str)
    req = _gate().evaluation(up, call, agent, "tok", "jkt")
    assert req.action.name == "tools/send_email"
    assert (req.resource.type, req.resource.id) == ("mcp_server", "tools")
    assert req.subject.properties == {"token": "tok", "jkt": "jkt"}
    ctx = req.context
    assert ctx["arguments"] == {"to": "bob@example.com", "body": "hi"}
    assert ctx["approval_token"] == "one-shot"
    assert ctx["egress"] is True
    assert ctx["sensitive"] is True
    assert ctx["external_content"] is False
    assert ctx["volume"] == len('{"to":"bob@example.com","body":"hi"}')
    assert ctx["dpop_jkt"] == "jkt"


def test_resources_come_from_arguments_and_untrusted_tools_say_so() -> None:
    up = load_gateway_config(EXAMPLE).upstreams["tools"]
    agent = AgentSubject(_claims(act=None), "hash")
    gate = _gate()
    read = parse_call("tools", "tools/call", {"name": "read_file", "arguments": {"path": "/a"}})
    assert not isinstance(read, str)
    req = gate.evaluation(up, read, agent, "tok", None)
    assert (req.resource.type, req.resource.id) == ("file", "/a")
    assert "dpop_jkt" not in req.context
    no_path = parse_call("tools", "tools/call", {"name": "read_file", "arguments": {}})
    assert not isinstance(no_path, str)
    assert gate.evaluation(up, no_path, agent, "tok", None).resource.id == "-"
    fetch = parse_call("tools", "tools/call", {"name": "fetch_url", "arguments": {"url": "u"}})
    assert not isinstance(fetch, str)
    assert gate.evaluation(up, fetch, agent, "tok", None).context["external_content"] is True
    res = parse_call("tools", "resources/read", {"uri": "file:///x"})
    assert not isinstance(res, str)
    req = gate.evaluation(up, res, agent, "tok", None)
    assert (req.action.name, req.resource.type, req.resource.id) == (
        "tools/resources/read",
        "mcp_resource",
        "file:///x",
    )


def test_bad_params_are_named() -> None:
    assert parse_call("s", "tools/call", []) == "params must be an object"
    assert parse_call("s", "tools/call", {"name": 3}) == "params.name must be a string"
    assert parse_call("s", "tools/call", {"name": "t", "arguments": []}) == (
        "params.arguments must be an object"
    )
    assert parse_call("s", "resources/read", {}) == "params.uri must be a string"
    bad_meta = {"name": "t", "_meta": {"tessera/approval": 5}}
    assert parse_call("s", "tools/call", bad_meta) == "the approval token must be a string"
