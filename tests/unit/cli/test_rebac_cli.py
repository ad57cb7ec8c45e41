"""``tessera rebac``: model, tuples, queries and store test files, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.cli_harness import Run, cli_run

from tessera.cli.demo import DEMO_REBAC_MODEL
from tessera.rebac import model_to_json, parse_dsl

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "rebac"

MODEL = """model
  schema 1.1
type user
type team
  relations
    define member: [user]
type doc
  relations
    define viewer: [user, team#member, user with weekday]
condition weekday(day: string) {
  day != "sunday"
}
"""


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    run = cli_run(tmp_path, monkeypatch)
    return run


def test_model_tuples_and_queries(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("init")
    assert "no authorization model" in run("rebac", "model", "show", code=2)
    (tmp_path / "m.fga").write_text(MODEL)
    applied = json.loads(run("rebac", "model", "apply", str(tmp_path / "m.fga"), "--json"))
    assert applied["id"].startswith("rbm_")
    assert applied["consistency_token"].startswith("ct1.")
    assert "define member: [user]" in run("rebac", "model", "show")
    (tmp_path / "t.yaml").write_text(
        "- {user: 'user:anne', relation: member, object: 'team:eng'}\n"
        "- {user: 'team:eng#member', relation: viewer, object: 'doc:1'}\n"
        "- user: user:bob\n  relation: viewer\n  object: doc:2\n"
        "  condition: {name: weekday}\n"
    )
    out = json.loads(run("rebac", "tuples", "write", str(tmp_path / "t.yaml"), "--json"))
    assert out["written"] == 3
    assert "allowed: user:anne viewer doc:1" in run(
        "rebac", "check", "user:anne", "viewer", "doc:1"
    )
    assert "denied" in run("rebac", "check", "user:bob", "viewer", "doc:1")
    r = json.loads(
        run(
            "rebac",
            "check",
            "user:bob",
            "viewer",
            "doc:2",
            "--context",
            '{"day": "monday"}',
            "--json",
        )
    )
    assert r["allowed"] is True
    objs = json.loads(run("rebac", "list-objects", "user:anne", "viewer", "doc", "--json"))
    assert objs == {"objects": ["doc:1"], "complete": True}
    users = run("rebac", "list-users", "doc:1", "viewer", "--filter", "team#member")
    assert users.split() == ["team:eng#member"]
    rows = json.loads(run("rebac", "tuples", "read", "--object", "doc:", "--json"))["tuples"]
    assert [t["object"] for t in rows] == ["doc:1", "doc:2"]
    (tmp_path / "d.json").write_text(
        json.dumps([{"user": "user:anne", "relation": "member", "object": "team:eng"}])
    )
    out = json.loads(run("rebac", "tuples", "delete", str(tmp_path / "d.json"), "--json"))
    assert out["deleted"] == 1
    assert "denied" in run("rebac", "check", "user:anne", "viewer", "doc:1")


def test_errors_are_one_line_and_exit_2(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("init")
    (tmp_path / "bad.fga").write_text(
        "model\n  schema 1.1\ntype doc\n  relations\n    define a: b\n"
    )
    err = run("rebac", "model", "apply", str(tmp_path / "bad.fga"), code=2)
    assert err.startswith("error: invalid model")
    assert len(err.strip().splitlines()) == 1
    (tmp_path / "m.fga").write_text(MODEL)
    run("rebac", "model", "apply", str(tmp_path / "m.fga"))
    (tmp_path / "t.yaml").write_text("- {user: 'team:eng', relation: viewer, object: 'doc:1'}\n")
    assert "may not be assigned" in run(
        "rebac", "tuples", "write", str(tmp_path / "t.yaml"), code=2
    )
    (tmp_path / "junk.yaml").write_text("{not: [a list\n")
    assert "not valid YAML" in run("rebac", "tuples", "write", str(tmp_path / "junk.yaml"), code=2)
    (tmp_path / "item.yaml").write_text("- [1, 2]\n")
    assert "item 0" in run("rebac", "tuples", "write", str(tmp_path / "item.yaml"), code=2)
    assert "--context" in run(
        "rebac", "check", "user:a", "viewer", "doc:1", "--context", "[1]", code=2
    )
    assert "not defined" in run("rebac", "check", "user:a", "nope", "doc:1", code=2)


def test_store_test_files_pass_and_fail_with_exit_codes(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = run("rebac", "test", str(EXAMPLES / "docs.fga.yaml"))
    lines = out.strip().splitlines()
    assert all(line.startswith("PASS") for line in lines[:-1])
    assert lines[-1] == f"{len(lines) - 1}/{len(lines) - 1} assertions passed"
    failing = (EXAMPLES / "docs.fga.yaml").read_text().replace("viewer: false", "viewer: true")
    (tmp_path / "docs.fga").write_text((EXAMPLES / "docs.fga").read_text())
    (tmp_path / "f.fga.yaml").write_text(failing)
    out = run("rebac", "test", str(tmp_path / "f.fga.yaml"), code=1)
    assert (
        "FAIL  the team sees the folder's documents: check user:bob viewer document:roadmap" in out
    )
    assert "got false" in out
    report = json.loads(run("rebac", "test", str(tmp_path / "f.fga.yaml"), "--json", code=1))
    assert report["passed"] is False
    (tmp_path / "x.fga.yaml").write_text("name: x\nbogus: 1\n")
    assert "unexpected key 'bogus'" in run("rebac", "test", str(tmp_path / "x.fga.yaml"), code=2)


def test_demo_model_is_the_example_model() -> None:
    example = parse_dsl((EXAMPLES / "docs.fga").read_text())
    assert model_to_json(parse_dsl(DEMO_REBAC_MODEL)) == model_to_json(example)


def test_demo_loads_relationships(run) -> None:  # type: ignore[no-untyped-def]
    run("init")
    run("demo", "load")
    agents = {a["name"]: a["id"] for a in json.loads(run("agent", "list", "--json"))}
    ra, summ = agents["research-assistant"], agents["summarizer"]
    assert "allowed" in run("rebac", "check", f"agent:{ra}", "viewer", "document:roadmap")
    assert "allowed" in run("rebac", "check", "user:alice", "viewer", "document:roadmap")
    assert "denied" in run("rebac", "check", "user:bob", "viewer", "document:roadmap")
    assert "allowed" in run("rebac", "check", f"agent:{summ}", "viewer", "document:q3-budget")
    run("agent", "decommission", "summarizer")
    assert "denied" in run("rebac", "check", f"agent:{summ}", "viewer", "document:q3-budget")
    rows = json.loads(run("rebac", "tuples", "read", "--json"))["tuples"]
    assert len(rows) == 6
