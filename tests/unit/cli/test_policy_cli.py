"""``tessera policy validate|test|apply|versions|activate`` and ``tessera pdp explain``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.cli_harness import Run, cli_run

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    run = cli_run(tmp_path, monkeypatch)
    return run


def test_validate_test_apply_and_explain(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle = str(EXAMPLES / "policy-bundle")
    assert "ok: bundle 'docs', 4 policies" in run("policy", "validate", bundle)
    assert "17 passed, 0 failed" in run("policy", "test", bundle)
    run("init")
    # decisions.md 85: the bundle pins a ReBAC model and none is active yet
    err = run("policy", "apply", bundle, code=2)
    assert "pins ReBAC model sha256:" in err
    assert "the active model is none" in err
    assert "--with-model" in err
    assert json.loads(run("policy", "versions", "--json")) == []  # nothing was written
    applied = json.loads(run("policy", "apply", bundle, "--with-model", "--json"))
    assert applied["version"] == 1
    assert applied["active"] is True
    run("policy", "apply", str(EXAMPLES / "authzen-search"))
    versions = json.loads(run("policy", "versions", "--json"))
    assert [(v["version"], v["active"]) for v in versions] == [(2, True), (1, False)]
    request = tmp_path / "req.json"
    request.write_text(
        json.dumps(
            {
                "subject": {"type": "user", "id": "ann", "properties": {"id": "ann"}},
                "action": {"name": "delete"},
                "resource": {
                    "type": "record",
                    "id": "1",
                    "properties": {"id": "1", "owner": "ann", "department": "x"},
                },
            }
        )
    )
    out = json.loads(run("pdp", "explain", str(request)))
    assert out["decision"] is True
    assert out["context"]["policy_version"] == 2
    assert [s["stage"] for s in out["context"]["trace"]] == ["rebac", "behaviour", "policy", "risk"]
    run("policy", "activate", "1")
    out = json.loads(run("pdp", "explain", str(request)))
    assert out["decision"] is False
    assert out["context"]["reasons"][0]["code"] == "unmapped_action"


def test_invalid_bundles_and_failing_tests_exit_non_zero(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "b"
    broken.mkdir()
    (broken / "bundle.yaml").write_text("name: b\nactions: {a: {relation: r}}\n")
    (broken / "p.cedar").write_text("permit (principal, action, resource")
    err = run("policy", "validate", str(broken), code=2)
    assert "problem(s) in the bundle" in err
    failing = tmp_path / "f"
    failing.mkdir()
    for f in (EXAMPLES / "authzen-search").iterdir():
        if f.is_file():
            (failing / f.name).write_text(f.read_text())
    (failing / "tests").mkdir()
    (failing / "tests" / "t.yaml").write_text(
        "cases:\n  - name: wrong\n    request: {subject: {type: user, id: a}, "
        "action: {name: view}, resource: {type: record, id: '1'}}\n    expect: allow\n"
    )
    assert "0 passed, 1 failed" in run("policy", "test", str(failing), code=1)


def test_a_rebac_model_the_bundle_does_not_pin_is_refused_unless_forced(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr_of = cli_run(tmp_path, monkeypatch, stdout_codes=())  # returns stderr
    bundle = EXAMPLES / "policy-bundle"
    run("init")
    run("policy", "apply", str(bundle), "--with-model")
    run("policy", "apply", str(bundle))  # the pinned model is the active one: no flag needed
    assert stderr_of("rebac", "model", "apply", str(bundle / "model.fga")) == ""
    before = json.loads(run("rebac", "model", "show", "--json"))
    other = tmp_path / "other.fga"
    other.write_text((bundle / "model.fga").read_text() + "\ntype project\n")
    # decisions.md 89: fail closed
    refused = run("rebac", "model", "apply", str(other), code=2)
    assert refused.startswith("error: the active policy bundle (version 2) pins ReBAC model")
    assert "would deny with model_mismatch" in refused
    assert "--force" in refused
    assert json.loads(run("rebac", "model", "show", "--json")) == before  # nothing written
    warned = stderr_of("rebac", "model", "apply", str(other), "--force")
    assert "warning: forced: the active policy bundle (version 2) pins another model" in warned
    assert "now DENIES (model_mismatch)" in warned
    assert json.loads(run("rebac", "model", "show", "--json")) != before
    request = tmp_path / "req.json"
    request.write_text(
        json.dumps(
            {
                "subject": {"type": "user", "id": "alice"},
                "action": {"name": "docs/read"},
                "resource": {"type": "document", "id": "1"},
            }
        )
    )
    out = json.loads(run("pdp", "explain", str(request)))
    assert [r["code"] for r in out["context"]["reasons"]] == ["model_mismatch"]
