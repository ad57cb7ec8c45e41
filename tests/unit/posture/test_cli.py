"""``tessera posture scan`` (table, json, self-contained escaped HTML, --apply) and
``tessera review`` against the demo data in a real SQLite data dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.cli_harness import Run, cli_run

from tessera.app import build
from tessera.cli.main import _register_extra_commands
from tessera.config import load_config
from tessera.tokens.auth_failures import client_auth_failure

_register_extra_commands()


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    run = cli_run(tmp_path, monkeypatch, stdout_codes=(0,))
    run("init")
    run("demo", "load")
    return run


def test_demo_scan_shows_findings_and_is_a_dry_run(run: Run) -> None:
    out = run("posture", "scan")
    assert "long_lived_credential" in out
    assert "agent_without_attestation" in out
    assert "ceiling_exceeds_owner" in out
    assert "dry run:" in out
    # nothing changed: the same findings again, none new
    body = json.loads(run("posture", "scan", "--format", "json"))
    assert body["dry_run"] is True
    assert body["counts"]["new"] == 0
    rules = sorted(f["rule"] for f in body["findings"])
    assert rules == ["agent_without_attestation", "ceiling_exceeds_owner", "long_lived_credential"]
    assert body["applied"] == []
    assert "ledger" in body["stats"]["seconds"]
    listed = json.loads(run("posture", "findings", "--json"))
    assert len(listed) == 3


def test_apply_narrows_the_ceiling_and_reports_each_change(run: Run) -> None:
    body = json.loads(run("posture", "scan", "--format", "json", "--apply", "--yes"))
    assert body["dry_run"] is False
    applied = {(a["action"], a["status"]) for a in body["applied"]}
    assert applied == {("narrow_ceiling", "applied")}
    agents = json.loads(run("agent", "list", "--json"))
    ra = next(a for a in agents if a["name"] == "research-assistant")
    assert ra["ceiling"]["tools"] == ["docs/read", "docs/search", "web/fetch"]
    after = json.loads(run("posture", "scan", "--format", "json"))
    assert "ceiling_exceeds_owner" not in {f["rule"] for f in after["findings"]}
    assert after["counts"]["resolved"] == 0  # already resolved when applied
    events = json.loads(run("events", "list", "--limit", "1000", "--json"))
    changed = [e for e in events if e["type"] == "agent.ceiling_changed"]
    assert [e["actor"] for e in changed] == ["cli"]
    assert changed[0]["payload"]["removed"]["tools"] == ["docs/*"]


def test_apply_without_yes_asks_and_can_be_refused(run: Run) -> None:
    err = run("posture", "scan", "--apply", code=1, answer="n\n")
    assert "nothing applied" in err
    agents = json.loads(run("agent", "list", "--json"))
    ra = next(a for a in agents if a["name"] == "research-assistant")
    assert ra["ceiling"]["tools"] == ["docs/*", "web/fetch"]


def test_html_report_is_self_contained_and_escaped(run: Run, tmp_path: Path) -> None:
    t = build(load_config())
    try:
        hostile = "<script>alert(1)</script>"
        for _ in range(2):
            t.audit.record(
                client_auth_failure(
                    {"client_id": "agt_shadowworkload01"}, None, hostile, endpoint="token"
                )
            )
    finally:
        t.close()
    report = tmp_path / "posture.html"
    run("posture", "scan", "--format", "html", "--output", str(report))
    html = report.read_text()
    assert html.startswith("<!doctype html>")
    assert "shadow_client" in html
    assert hostile not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html
    assert "http://" not in html
    assert "https://" not in html
    assert "<style>" in html


def test_bad_format_is_a_usage_error(run: Run) -> None:
    assert "--format" in run("posture", "scan", "--format", "xml", code=2)
    assert "--fail-on" in run("posture", "scan", "--fail-on", "severe", code=2)


def test_fail_on_gates_ci_by_severity(run: Run) -> None:
    run("posture", "scan", "--format", "json", "--fail-on", "critical")  # none critical: 0
    run("posture", "scan", "--format", "json", "--fail-on", "high", code=1)


def test_review_start_show_answer_close(run: Run) -> None:
    started = json.loads(run("review", "start", "--deadline", "7d", "--json"))
    cid = started["id"]
    assert started["on_expiry"] == "revoke"
    shown = json.loads(run("review", "show", cid, "--owner", "bob", "--json"))
    items = shown["item_list"]
    assert items
    assert {i["state"] for i in items} == {"pending"}
    web = next(
        i
        for i in json.loads(run("review", "show", cid, "--owner", "alice", "--json"))["item_list"]
        if i["item"] == "web/fetch"
    )
    out = run("review", "answer", cid, web["id"], "--revoke", "--note", "not needed")
    assert "revoked" in out
    assert "--confirm or --revoke" in run("review", "answer", cid, web["id"], code=2)
    assert "already answered" in run("review", "answer", cid, web["id"], "--confirm", code=2)
    assert "has not passed" in run("review", "close", cid, code=2)
    closed = json.loads(run("review", "close", cid, "--force", "--json"))
    assert closed[0]["status"] == "closed"
    assert closed[0]["items"]["revoked"] == 1
    agents = {a["name"]: a for a in json.loads(run("agent", "list", "--json"))}
    # unanswered items were revoked at close: nothing the owners did not confirm remains
    assert agents["research-assistant"]["ceiling"]["tools"] == []
    assert agents["summarizer"]["ceiling"]["models"] == []
    listed = json.loads(run("review", "list", "--json"))
    assert [c["status"] for c in listed] == ["closed"]
