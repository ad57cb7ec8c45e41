"""``tessera directory load|get|set|delete|list`` against a fresh SQLite data directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.cli_harness import Run, cli_run


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    run = cli_run(tmp_path, monkeypatch)
    run("init")
    return run


def test_load_get_set_delete_list(run: Run, tmp_path: Path) -> None:
    yaml_file = tmp_path / "dir.yaml"
    yaml_file.write_text(
        "user:\n  alice: {role: admin, tags: [a, b]}\nrecord:\n  101: {owner: alice}\n"
    )
    out = json.loads(run("directory", "load", str(yaml_file), "--json"))
    assert (out["set"], out["deleted"]) == (2, 0)
    assert out["consistency_token"].startswith("ct1.")
    got = json.loads(run("directory", "get", "record", "101", "--json"))
    assert got["attributes"] == {"owner": "alice"}
    assert got["updated_by"] == "cli"
    assert "role" in run("directory", "get", "user", "alice")
    run("directory", "set", "user", "bob", '{"role": "viewer"}')
    attrs_file = tmp_path / "carol.json"
    attrs_file.write_text('{"role": "contractor"}')
    run("directory", "set", "user", "carol", str(attrs_file))
    listed = json.loads(run("directory", "list", "user", "--json"))
    assert [e["id"] for e in listed["entries"]] == ["alice", "bob", "carol"]
    first = json.loads(run("directory", "list", "--limit", "1", "--json"))
    assert first["next_cursor"]
    assert "more: --cursor" in run("directory", "list", "--limit", "1")
    run("directory", "delete", "user", "bob")
    err = run("directory", "get", "user", "bob", code=2)
    assert "no directory entry user:bob" in err
    json_file = tmp_path / "dir.json"
    json_file.write_text(json.dumps({"user": {"alice": {}}}))
    out = json.loads(run("directory", "load", str(json_file), "--replace", "--json"))
    assert (out["set"], out["deleted"]) == (1, 2)
    events = run("events", "list")
    assert "directory.changed" in events


def test_bad_files_and_values_exit_2_and_write_nothing(run: Run, tmp_path: Path) -> None:
    txt = tmp_path / "dir.txt"
    txt.write_text("{}")
    assert ".json, .yaml or .yml" in run("directory", "load", str(txt), code=2)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert "not valid JSON" in run("directory", "load", str(broken), code=2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("user:\n  alice: {ok: 1}\n  bob: [not, an, object]\n")
    assert "attributes must be a JSON object" in run("directory", "load", str(bad), code=2)
    assert "invalid JSON" in run("directory", "set", "user", "x", "{nope", code=2)
    assert "entity type" in run("directory", "set", "bad type", "x", "{}", code=2)
    assert "cannot read" in run("directory", "load", str(tmp_path / "missing.yaml"), code=2)
    assert json.loads(run("directory", "list", "--json"))["entries"] == []
