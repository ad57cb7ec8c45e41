"""``tessera signals``: streams list/create/delete and tail, in-process on SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.cli_harness import Run, cli_run

from tessera.signals.caep import SESSION_REVOKED


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    run = cli_run(tmp_path, monkeypatch, env={"TESSERA_SSF_PUSH_HOSTS": "receiver.example"})
    return run


def test_streams_create_list_delete(run) -> None:  # type: ignore[no-untyped-def]
    run("init")
    run("service", "register", "siem", "--scope", "ssf.manage", "--api-key")
    created = json.loads(
        run(
            "signals",
            "streams",
            "create",
            "--service",
            "siem",
            "--poll",
            "--event",
            "session-revoked",
            "--event",
            "account-disabled",
            "--json",
        )
    )
    assert created["delivery"]["method"] == "urn:ietf:rfc:8936"
    assert created["events_delivered"][0] == SESSION_REVOKED
    listed = json.loads(run("signals", "streams", "list", "--json"))
    assert [s["stream_id"] for s in listed] == [created["stream_id"]]
    assert listed[0]["status"] == "enabled"
    assert listed[0]["deliveries"] == {}
    assert "SSF streams" in run("signals", "streams", "list")
    # push URLs obey the outbound rules: https and a configured host only
    assert "not allowed" in run(
        "signals",
        "streams",
        "create",
        "--service",
        "siem",
        "--push",
        "https://elsewhere.example/ssf",
        code=2,
    )
    assert "unknown event" in run(
        "signals", "streams", "create", "--service", "siem", "--poll", "--event", "nope", code=2
    )
    assert "exactly one" in run("signals", "streams", "create", "--service", "siem", code=2)
    run("signals", "streams", "delete", created["stream_id"])
    assert json.loads(run("signals", "streams", "list", "--json")) == []
    assert "no such stream" in run("signals", "streams", "delete", created["stream_id"], code=2)


def test_tail_prints_events_from_a_position(run) -> None:  # type: ignore[no-untyped-def]
    run("init")
    run("operator", "create", "acme")
    run("operator", "suspend", "acme")
    every = json.loads(run("events", "list", "--json"))
    head = every[-1]["seq"]
    assert every[-1]["type"] == "operator.suspended"
    out = run("signals", "tail", "--after", "0", "--count", str(head), "--json")
    lines = [json.loads(x) for x in out.splitlines()]
    assert [x["seq"] for x in lines] == list(range(1, head + 1))
    assert [x["type"] for x in lines[-2:]] == ["operator.created", "operator.suspended"]
    text = run("signals", "tail", "--after", str(head - 1), "--count", "1")
    assert "operator.suspended" in text
    assert "operator.created" not in text
