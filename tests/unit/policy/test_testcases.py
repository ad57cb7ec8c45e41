"""Agent subjects in bundle test files: described by their verified layers, turned into the
agent context the pipeline gets from a verified session token (docs/pdp.md)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tessera.policy.bundle import load_bundle, read_bundle_dir
from tessera.policy.testcases import describe_agent, run_test_file

BUNDLE = load_bundle(
    read_bundle_dir(Path(__file__).resolve().parents[3] / "examples" / "policy-bundle")
)
DIGEST = "sha256:" + "ab" * 32


def _run(text: str) -> list[tuple[str, bool, str, tuple[str, ...], str]]:
    return [
        (r.name, r.passed, r.actual, r.reasons, r.problem)
        for r in run_test_file(BUNDLE, "tests/x.yaml", textwrap.dedent(text))
    ]


def test_a_described_agent_has_a_real_tokens_layers() -> None:
    obo = describe_agent(
        "child",
        {
            "agent": "agt_child",
            "operator": "op_acme",
            "model": {"id": "mdl_1", "digest": DIGEST},
            "user": "usr_alice",
            "act": ["agt_parent", "agt_root"],
            "session": {"tools": ["docs/*"], "data_scope": ["doc:*"], "budgets": {"tool_calls": 3}},
        },
        1_000_000,
    ).subject
    assert obo.attributes() == {
        "operator": "op_acme",
        "model": DIGEST,
        "model_id": "mdl_1",
        "session": "ses_child",
        "user": "usr_alice",
        "on_behalf_of": True,
        "act": ["agt_child", "agt_parent", "agt_root"],
        "depth": 2,
    }
    assert obo.claims.grant.budgets == {"tool_calls": 3}
    assert obo.claims.parent is not None
    auto = describe_agent("c", {"agent": "agt_c", "act": ["agt_root"]}, 1_000_000).subject
    assert (auto.user, auto.claims.subject, auto.claims.depth) == (None, "agt_root", 1)
    assert auto.attributes()["act"] == ["agt_c"]
    assert auto.claims.grant.tools == frozenset()  # omitted tools grant nothing
    root = describe_agent("r", {}, 1_000_000).subject
    assert (root.agent, root.user, root.claims.depth, root.claims.actors) == ("r", None, 0, ())


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("{colour: red}", "unknown keys ['colour']"),
        ("{session: {tools: [not-a-tool]}}", "tools has a malformed item"),
        ("{model: {digest: md5:1}}", "model must be"),
        ("{act: [1]}", "act must be a list of agent ids"),
        ("{session: {budgets: {tool_calls: -1}}}", "budgets"),
        ("{session: {scopes: [x]}}", "session holds only"),
        ("{live: maybe}", "tainted and live are true or false"),
    ],
)
def test_a_bad_description_fails_the_file(spec: str, problem: str) -> None:
    [(name, passed, _, _, why)] = _run(
        f"""
        agents:
          a: {spec}
        cases: []
        """
    )
    assert (name, passed) == ("(file)", False)
    assert problem in why


def test_an_agent_subject_must_be_described() -> None:
    results = _run(
        """
        cases:
          - name: unknown name
            request:
              subject: {type: agent, id: nobody}
              action: {name: docs/read}
              resource: {type: document, id: "1"}
            expect: deny
          - name: a token in a file is never verified
            request:
              subject: {type: agent, id: x, properties: {token: eyJhbGciOi.x.y}}
              action: {name: docs/read}
              resource: {type: document, id: "1"}
            expect: deny
        """
    )
    assert results[0][1] is False
    assert "agent subject 'nobody' is not described under agents:" in results[0][4]
    assert results[1][1] is False


def test_cases_are_independent_and_taint_is_described() -> None:
    results = _run(
        """
        agents:
          clean: {session: {tools: [web/fetch, mail/send], data_scope: ["doc:*"]}}
          dirty: {tainted: true, session: {tools: [web/fetch, mail/send], data_scope: ["doc:*"]}}
        cases:
          - name: fetch the web (taints this session)
            request: {subject: {type: agent, id: clean}, action: {name: web/fetch},
                      resource: {type: document, id: "1"}}
            expect: allow
          - name: the next case starts clean
            request: {subject: {type: agent, id: clean}, action: {name: mail/send},
                      resource: {type: document, id: "1"}}
            expect: allow
          - name: a session described as tainted
            request: {subject: {type: agent, id: dirty}, action: {name: mail/send},
                      resource: {type: document, id: "1"}}
            expect: deny
            reasons: [session_tainted]
        """
    )
    assert [(name, passed) for name, passed, *_ in results] == [
        ("fetch the web (taints this session)", True),
        ("the next case starts clean", True),
        ("a session described as tainted", True),
    ]


def test_the_example_bundle_passes() -> None:
    results = run_test_file(BUNDLE, "tests/agents.yaml", BUNDLE.files["tests/agents.yaml"])
    assert len(results) == 13
    assert all(r.passed for r in results), [r for r in results if not r.passed]
