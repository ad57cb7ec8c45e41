"""Who an agent acts for, from the claims the token service issues (RFC 8693 §4.1 as
``tokens.delegation`` nests them): an autonomous sub-agent acts for no user (decisions.md
87), an on-behalf-of chain keeps its user at every depth."""

from __future__ import annotations

from typing import Any

from tessera.pdp.agents import AgentSubject
from tessera.tokens.claims import build_session_claims, parse_session_claims
from tessera.tokens.delegation import nest_act
from tessera.tokens.grant import SessionGrant

DIGEST = "sha256:" + "cd" * 32


def _subject(sub: str, client: str, act: Any, depth: int) -> AgentSubject:
    grant = SessionGrant(
        tools=frozenset({"docs/read"}),
        deny=frozenset(),
        data_scope=frozenset({"doc:*"}),
        budgets={},
        audience=frozenset({"gw"}),
        lifetime=600,
        model_digest=DIGEST,
        depth=depth,
        max_depth=5,
    )
    claims = build_session_claims(
        grant,
        issuer="https://iss",
        subject=sub,
        client_id=client,
        jti="j",
        iat=1_000,
        sid="ses_1",
        operator="op",
        model_id="mdl",
        jkt=None,
        act=act,
        parent="h" if depth else None,
    )
    return AgentSubject(parse_session_claims(claims), "h")


def test_autonomous_chains_act_for_no_user() -> None:
    root = _subject("agt_root", "agt_root", None, 0)
    child = _subject("agt_root", "agt_child", nest_act(None, "agt_child"), 1)
    grandchild_act = nest_act(nest_act(None, "agt_child"), "agt_grand")
    grandchild = _subject("agt_root", "agt_grand", grandchild_act, 2)
    for s in (root, child, grandchild):
        assert s.user is None
        assert s.attributes()["on_behalf_of"] is False
        assert s.attributes()["user"] == ""


def test_on_behalf_of_chains_keep_their_user() -> None:
    root_act = {"sub": "agt_root"}
    root = _subject("usr_alice", "agt_root", root_act, 0)
    child = _subject("usr_alice", "agt_child", nest_act(root_act, "agt_child"), 1)
    for s in (root, child):
        assert s.user == "usr_alice"
        assert s.attributes()["on_behalf_of"] is True
    assert child.attributes()["act"] == ["agt_child", "agt_root"]
