"""The CLI runs the same operations as the API, in-process, with --json and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.cli_harness import Run, cli_run

from tessera.cli.demo import app as demo_registered_app
from tessera.crypto.keys import generate_signing_key

app = demo_registered_app  # the main app with `demo` and `dev` groups registered


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    run = cli_run(tmp_path, monkeypatch, stdout_codes=(0,))
    return run


def test_init_shows_admin_token_once_and_is_idempotent(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = json.loads(run("init", "--json"))
    assert first["admin_token"].startswith("tadm_")
    assert first["admin_token_file"] is None  # not development mode
    assert (tmp_path / "data" / "kek").stat().st_mode & 0o777 == 0o600
    second = json.loads(run("init", "--json"))
    assert second["admin_token"] is None
    assert second["signing_kid"] == first["signing_kid"]


def test_dev_mode_writes_a_private_admin_token_file(
    run,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TESSERA_DEV_MODE", "1")
    out = json.loads(run("init", "--json"))
    path = Path(out["admin_token_file"])
    assert path.read_text().strip() == out["admin_token"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_full_registry_flow(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("init")
    assert json.loads(run("operator", "create", "acme", "--json"))["name"] == "acme"
    run("user", "create", "alice", "--grants", '{"tools": ["fs/*"]}')
    digest = "sha256:" + "ef" * 32
    run("model", "register", "llm", "--operator", "acme", "--version", "1", "--digest", digest)
    jwk_file = tmp_path / "bot.jwk"
    jwk_file.write_text(json.dumps(generate_signing_key().public_jwk()))
    out = json.loads(
        run(
            "agent",
            "register",
            "bot",
            "--operator",
            "acme",
            "--owner",
            "alice",
            "--purpose",
            "tests",
            "--jwk",
            str(jwk_file),
            "--ceiling",
            json.dumps({"tools": ["fs/read"], "models": [digest]}),
            "--json",
        )
    )
    assert out["agent"]["status"] == "active"
    assert out["consistency_token"].startswith("ct1.")
    listed = json.loads(run("agent", "list", "--json"))
    assert [a["name"] for a in listed] == ["bot"]
    shown = json.loads(run("agent", "show", "bot", "--json"))
    assert shown["credentials"][0]["kind"] == "jwk"
    assert json.loads(run("agent", "suspend", "bot", "--json"))["status"] == "suspended"
    assert json.loads(run("agent", "resume", "bot", "--json"))["status"] == "active"
    assert json.loads(run("agent", "decommission", "bot", "--json"))["status"] == ("decommissioned")
    svc = json.loads(
        run("service", "register", "gw", "--scope", "pdp.evaluate", "--api-key", "--json")
    )
    assert svc["api_key"].startswith("tsk_")
    assert json.loads(run("model", "revoke", digest, "--json"))["status"] == "revoked"
    assert json.loads(run("operator", "suspend", "acme", "--json"))["status"] == "suspended"
    assert json.loads(run("operator", "resume", "acme", "--json"))["status"] == "active"
    assert json.loads(run("user", "disable", "alice", "--json"))["status"] == "disabled"
    rotated = json.loads(run("keys", "rotate", "--alg", "EdDSA", "--json"))
    keys = json.loads(run("keys", "list", "--json"))
    assert [k["status"] for k in keys] == ["retired", "active"]
    assert keys[1]["kid"] == (rotated["kid"])
    events = json.loads(run("events", "list", "--limit", "1000", "--json"))
    assert "agent.decommissioned" in {e["type"] for e in events}
    assert "operator" in run("operator", "list")
    assert "gw" in run("service", "list")
    assert "alice" in run("user", "list")
    assert "llm" in run("model", "list")


@pytest.mark.parametrize(
    "args",
    [
        ("agent", "show", "nobody"),
        ("operator", "create", "Not A Name"),
        ("user", "create", "bob", "--grants", "{broken"),
        ("user", "create", "bob", "--grants", "/no/such/file.json"),
        (
            "agent",
            "register",
            "x",
            "--operator",
            "nope",
            "--owner",
            "nope",
            "--purpose",
            "p",
            "--jwk",
            '{"kty": "EC"}',
        ),
        ("keys", "rotate", "--alg", "HS256"),
    ],
)
def test_errors_are_one_line_and_exit_2(run, args: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    run("init")
    err = run(*args, code=2)
    assert err.startswith("error: ")
    assert err.count("\n") == 1


def test_uninitialised_store_is_a_clear_error(run) -> None:  # type: ignore[no-untyped-def]
    err = run("agent", "list", code=2)
    assert "tessera init" in err


def test_invalid_config_names_the_variable(run, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TESSERA_PORT", "nope")
    assert "TESSERA_PORT" in run("init", code=2)


def test_a_demo_load_that_stopped_part_way_is_refused_not_reused(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tessera.cli import demo

    run("init")

    def broken(*_: object) -> str:
        raise OSError("disk full")

    with monkeypatch.context() as patched:
        patched.setattr(demo, "_load_demo_signals", broken)
        assert "disk full" in run("demo", "load", code=2)
    out = run("demo", "load", code=2)  # the operator exists, the last step never ran
    assert "incomplete" in out
    assert str(tmp_path / "data") in out
    assert "demo_incomplete" not in out  # one plain line, no traceback or code dump


def test_demo_load_is_idempotent(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("init")
    first = json.loads(run("demo", "load", "--json"))
    assert first["loaded"]
    assert len(first["agents"]) == 3
    key = Path(first["key_dir"]) / "research-assistant.jwk"
    assert key.stat().st_mode & 0o777 == 0o600
    assert "d" in json.loads(key.read_text())
    assert json.loads(run("demo", "load", "--json"))["loaded"] is False
    agents = json.loads(run("agent", "list", "--json"))
    assert sorted(a["name"] for a in agents) == [
        "legacy-reporter",  # the posture example
        "mcp-client",
        "research-assistant",
        "summarizer",
    ]
