"""The audit service's checkpoint policy and chainer, the admin API and the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tessera.app import Tessera
from tessera.audit import (
    ActorLayers,
    AuditEntry,
    AuditQuery,
    AuditService,
    AuditSettings,
    DirectoryCheckpointSink,
)
from tessera.http.asgi import create_app
from tessera.store.sql_audit import SqlAuditLedger


def decision(i: int, outcome: str = "deny") -> AuditEntry:
    return AuditEntry(
        "pdp.decision",
        ActorLayers("agent:agt_q", agent="agt_q", user="usr_u", session="ses_s"),
        "docs/read",
        f"doc:{i}",
        outcome,
        reasons=("outside ceiling",),
    )


def service(t: Tessera, **settings: float) -> AuditService:
    return AuditService(
        SqlAuditLedger(t.store.engine),
        t.clock,
        t.keyring,
        t.audit.sink,
        AuditSettings(**settings),  # type: ignore[arg-type]
    )


def wait_for(cond, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_a_checkpoint_every_n_records(sqlite_tessera: Tessera) -> None:
    audit = service(sqlite_tessera, checkpoint_every=5)
    for i in range(12):
        audit.record(decision(i))
    sizes = [size for size, _ in SqlAuditLedger(sqlite_tessera.store.engine).checkpoint_jws()]
    assert len(sizes) == 2
    assert all(s % 5 in (0, 1, 2) for s in sizes)
    files = sorted(p.name for p in audit.sink.directory.iterdir())  # type: ignore[union-attr]
    assert len(files) == 2


def test_background_chainer_chains_and_checkpoints_on_time_and_at_shutdown(
    sqlite_tessera: Tessera,
) -> None:
    audit = service(sqlite_tessera, poll_interval=0.02, checkpoint_interval=30)
    audit.start()
    try:
        sqlite_tessera.identity.create_operator("acme", None, actor="cli")
        wait_for(lambda: audit.pending() == 0)
        assert audit.query(AuditQuery(event_type="operator.created"))
        sqlite_tessera.clock.advance(31)
        wait_for(lambda: bool(SqlAuditLedger(sqlite_tessera.store.engine).checkpoint_jws()))
        sqlite_tessera.identity.create_user("alice", actor="cli")
    finally:
        audit.stop()
    sizes = [s for s, _ in SqlAuditLedger(sqlite_tessera.store.engine).checkpoint_jws()]
    assert sizes[-1] == audit.head().size  # the shutdown checkpoint covers everything
    assert audit.pending() == 0
    assert audit.verify().ok


def test_a_failing_sink_never_loses_a_record(sqlite_tessera: Tessera, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    audit = AuditService(
        SqlAuditLedger(sqlite_tessera.store.engine),
        sqlite_tessera.clock,
        sqlite_tessera.keyring,
        DirectoryCheckpointSink(blocker / "cps"),
        AuditSettings(checkpoint_every=1),
    )
    seq = audit.record(decision(1))
    assert audit.query(AuditQuery(after=seq - 1))[0]["seq"] == seq


@pytest.fixture
def client(sqlite_tessera: Tessera) -> Iterator[TestClient]:
    _, token = sqlite_tessera.admin_tokens.create("audit-test", actor="test")
    with TestClient(create_app(sqlite_tessera), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


def test_admin_api_filters_pages_and_carries_request_ids(
    client: TestClient, sqlite_tessera: Tessera
) -> None:
    r = client.post("/admin/v1/operators", json={"name": "acme"}, headers={"X-Request-ID": "r-1"})
    assert r.status_code == 201
    for i in range(3):
        sqlite_tessera.audit.record(decision(i))
    sqlite_tessera.audit.chain_pending()
    page = client.get("/admin/v1/audit", params={"event_type": "operator.created"}).json()
    assert [rec["request_id"] for rec in page["records"]] == ["r-1"]
    assert page["records"][0]["actor"]["principal"].startswith("admin:")
    deny = client.get("/admin/v1/audit", params={"outcome": "deny", "limit": 2}).json()
    assert [rec["resource"] for rec in deny["records"]] == ["doc:0", "doc:1"]
    rest = client.get(
        "/admin/v1/audit", params={"outcome": "deny", "after": deny["next_after"]}
    ).json()
    assert [rec["resource"] for rec in rest["records"]] == ["doc:2"]
    assert rest["next_after"] is None
    assert rest["head"] >= 4
    by_layers = client.get("/admin/v1/audit", params={"agent": "agt_q", "user": "usr_u"})
    assert len(by_layers.json()["records"]) == 3
    since = client.get("/admin/v1/audit", params={"since": "2999-01-01T00:00:00Z"}).json()
    assert since["records"] == []
    assert client.get("/admin/v1/audit", params={"limit": 0}).status_code in (400, 422)
    assert client.get("/admin/v1/audit", params={"agent": "a\x00"}).status_code in (400, 422)
    assert client.get("/admin/v1/audit", headers={"Authorization": "Bearer x"}).status_code == 401


def test_cli_verify_search_tail_export(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("init")
    run("operator", "create", "acme")
    run("operator", "suspend", "acme", "--reason", "drill")
    report = json.loads(run("audit", "verify", "--json"))
    assert report["ok"]
    assert report["records"] == 4
    assert report["pending"] == 0
    assert report["processes"] == 1  # far below 50,000 records per range: one pass
    assert json.loads(run("audit", "verify", "--jobs", "1", "--json"))["ok"]
    run("audit", "verify", "--jobs", "-1", code=2)
    found = json.loads(run("audit", "search", "--event-type", "operator.suspended", "--json"))
    assert [r["details"]["reason"] for r in found] == ["drill"]
    tail = run("audit", "tail", "-n", "2", "--json").splitlines()
    assert [json.loads(line)["seq"] for line in tail] == [3, 4]
    out = tmp_path / "export.jsonl"
    run("audit", "export", "--format", "jsonl", "--output", str(out))
    assert len(out.read_text().splitlines()) == 4
    checkpoint = json.loads(run("audit", "checkpoint", "--json"))
    assert checkpoint["tree_size"] == 4
    cps = tmp_path / "data" / "checkpoints"
    assert json.loads(
        run("audit", "verify", "--file", str(out), "--checkpoints", str(cps), "--json")
    )["ok"]
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:3]) + "\n")  # the export lost its last record
    bad = json.loads(
        run("audit", "verify", "--file", str(out), "--checkpoints", str(cps), "--json", code=1)
    )
    assert bad["problems"][0]["kind"] == "truncated"
    assert bad["first_bad_seq"] == 4
    run("audit", "export", "--format", "csv", code=2)
    run("audit", "search", "--since", "yesterday", code=2)
