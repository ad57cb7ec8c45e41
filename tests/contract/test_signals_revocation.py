"""Revocation everywhere (issue 7 item 2) through the event tailer: a change written by
*another node* (its own store object, so this node learns it only from the log) makes this
node's PDP deny; a stale node denies with ``stale_state`` and introspection answers
inactive. The PDP's liveness cache keeps answers for up to a minute, so only the event
path can make these denials appear within the tests' deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from tests.contract.test_pdp_agents import Pdp, _codes
from tests.contract.test_token_service import DIGEST, World, world  # noqa: F401

from tessera.app import Tessera, build
from tessera.signals.events import encode_consistency_token
from tessera.signals.tailer import TailerSettings
from tessera.tokens.peek import unverified_claim


@pytest.fixture
def pdp(world: World) -> Pdp:  # noqa: F811
    return Pdp(world)


@pytest.fixture
def other_node(world: World) -> Any:  # noqa: F811
    node = build(world.t.config, engine=world.t.store.engine)  # its own store and tailer
    yield node
    node.close()  # behaviour flusher, push worker, tailer: none outlives the schema


def _session(pdp: Pdp, on_behalf: bool = False) -> str:
    details: dict[str, Any] = {"type": "tessera_session", "tools": ["docs/*"]}
    details["data_scope"] = ["doc:*"]
    kw: dict[str, Any] = {"subject_token": pdp.w.user_token()} if on_behalf else {}
    r = pdp.w.parent.session(
        details=details, resource="gw", attestation=pdp.w.attest(pdp.w.parent), **kw
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _denied_by_revocation(pdp: Pdp, token: str, deadline: float = 20.0) -> dict[str, Any]:
    # Every allowed decision spends one of the session's ten tool_calls, so the polls back
    # off (about 2 s in nine asks; the bound is 1 s) instead of spinning.
    end = time.monotonic() + deadline
    body: dict[str, Any] = {}
    pause = 0.01
    while time.monotonic() < end:
        body = pdp.ask(token, "docs/read")
        if body["decision"] is False:
            return body
        time.sleep(pause)
        pause = min(0.5, pause * 2)
    raise AssertionError(f"this node still allows after the revocation: {body}")


REVOCATIONS: dict[str, Callable[[Tessera, str], Any]] = {
    "session": lambda o, sid: o.sessions.revoke_session(sid, "test", actor="test"),
    "agent suspended": lambda o, _sid: o.identity.suspend_agent("planner", actor="test"),
    "user disabled": lambda o, _sid: o.identity.disable_user("alice", actor="test"),
    "model revoked": lambda o, _sid: o.identity.revoke_model(DIGEST, actor="test"),
    "operator suspended": lambda o, _sid: o.identity.suspend_operator("acme", None, actor="test"),
}


@pytest.mark.parametrize("kind", list(REVOCATIONS))
def test_a_revocation_on_another_node_reaches_this_nodes_pdp(
    pdp: Pdp, other_node: Tessera, kind: str
) -> None:
    on_behalf = kind == "user disabled"
    token = _session(pdp, on_behalf)
    sid = unverified_claim(token, "sid")
    assert sid is not None
    assert pdp.ask(token, "docs/read")["decision"] is True  # the liveness cache holds "live"
    REVOCATIONS[kind](other_node, sid)
    body = _denied_by_revocation(pdp, token)
    assert _codes(body) == ["invalid_token"]  # revoked, not stale


def test_a_stale_node_denies_with_stale_state_and_introspection_is_inactive(
    pdp: Pdp,
    world: World,  # noqa: F811
) -> None:
    token = _session(pdp)
    assert pdp.ask(token, "docs/read")["decision"] is True
    assert world.introspect(token)["active"] is True
    tailer = world.t.tailer
    normal = tailer.settings
    tailer.settings = TailerSettings(enabled=False)  # this node no longer reads the log
    tailer.stop()
    end = time.monotonic() + 20
    while tailer.is_fresh() and time.monotonic() < end:  # the bound (1 s) passes
        time.sleep(0.05)
    try:
        body = pdp.ask(token, "docs/read")
        assert body["decision"] is False
        assert "stale_state" in _codes(body)
        assert world.introspect(token) == {"active": False}
    finally:
        tailer.settings = normal
    tailer.start()
    assert pdp.ask(token, "docs/read")["decision"] is True


def test_suspend_then_resume_on_another_node_restores_access(pdp: Pdp, other_node: Tessera) -> None:
    token = _session(pdp)
    assert pdp.ask(token, "docs/read")["decision"] is True
    other_node.identity.suspend_operator("acme", None, actor="test")
    _denied_by_revocation(pdp, token)
    other_node.identity.resume_operator("acme", actor="test")
    # sessions were revoked by the cascade: a new one works again on this node
    fresh = _session(pdp)
    assert pdp.ask(fresh, "docs/read")["decision"] is True


def test_a_consistency_token_makes_this_node_answer_at_least_that_fresh(
    pdp: Pdp, other_node: Tessera
) -> None:
    token = _session(pdp)
    sid = unverified_claim(token, "sid")
    assert sid is not None
    assert pdp.ask(token, "docs/read")["decision"] is True
    other_node.sessions.revoke_session(sid, "test", actor="test")
    ct = encode_consistency_token(other_node.store.last_written_seq)
    # no polling: the first decision that presents the write's token already sees it
    body = pdp.ask(token, "docs/read", context={"consistency_token": ct})
    assert body["decision"] is False
    assert _codes(body) == ["invalid_token"]
    ahead = encode_consistency_token(other_node.store.last_written_seq + 1000)
    r = pdp.w.http.post(
        "/access/v1/evaluation",
        json={
            "subject": {
                "type": "agent",
                "id": pdp.t.identity.get_agent("planner").id,
                "properties": {"token": token},
            },
            "action": {"name": "docs/read"},
            "resource": {"type": "document", "id": "1"},
            "context": {"consistency_token": ahead},
        },
        headers={"Authorization": f"Bearer {pdp.service_token}"},
    )
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_consistency_token"
