"""``tessera audit archive``, ``verify --archive`` and ``purge`` from the command line."""

from __future__ import annotations

import json
from pathlib import Path


def test_cli_archive_verify_across_the_link_and_purge(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("init")
    run("operator", "create", "acme")
    archive = tmp_path / "archive"
    manifest = json.loads(run("audit", "archive", "--output", str(archive), "--json"))
    assert manifest["segment"] == 1
    assert manifest["first_seq"] == 1
    last = manifest["last_seq"]
    run("operator", "suspend", "acme", "--reason", "drill")
    report = json.loads(run("audit", "verify", "--archive", str(archive), "--json"))
    assert report["ok"], report["problems"]
    assert report["segments"] == 2
    assert report["archived_records"] == last
    # tamper with the archive: verify names the first bad record and exits 1, and the
    # purge is refused (exit 2) while the archive does not verify
    path = archive / manifest["records_file"]
    original = path.read_text()
    lines = original.splitlines()
    record = json.loads(lines[1])
    record["resource"] = "forged"
    lines[1] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")
    bad = json.loads(run("audit", "verify", "--archive", str(archive), "--json", code=1))
    assert bad["first_bad_seq"] == 2
    run("audit", "purge", "--archive", str(archive), "--yes", code=2)
    path.write_text(original)
    assert json.loads(run("audit", "purge", "--archive", str(archive), "--yes", "--json")) == {
        "removed": last
    }
    live = json.loads(run("audit", "verify", "--json"))
    assert live["ok"]
    assert live["first_seq"] == last + 1
    assert json.loads(run("audit", "verify", "--archive", str(archive), "--json"))["ok"]
