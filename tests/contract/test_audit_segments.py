"""Linked segments on SQLite and PostgreSQL: archive, verify across the link, purge, and
tampering with an archive or a link."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from tessera.app import Tessera
from tessera.audit import ActorLayers, AuditEntry, AuditQuery
from tessera.errors import Conflict, InvalidInput


def _entry(i: int) -> AuditEntry:
    return AuditEntry(
        event_type="pdp.decision",
        actor=ActorLayers("agent:agt_a", agent="agt_a", session="ses_1"),
        action="docs/read",
        resource=f"doc:{i}",
        outcome="allow",
        jti=f"jti-{i}",
    )


def _fill(t: Tessera, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        t.audit.record(_entry(i))


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM audit_ledger")).scalar_one())


def _drop_segment_guard(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_segments DISABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER audit_segments_no_update"))


def test_an_archived_segment_and_the_live_one_verify_together(
    tessera: Tessera, tmp_path: Path
) -> None:
    _fill(tessera, 12)
    archive = tmp_path / "archive"
    manifest = tessera.audit.archive(archive)
    assert manifest.segment == 1
    assert manifest.first_seq == 1
    last = manifest.last_seq
    assert last == tessera.audit.head().size - 1  # + the segment_started record
    _fill(tessera, 5, start=100)
    # the new segment's first record links to the archived head
    first_new = tessera.audit.query(AuditQuery(after=last, limit=1))[0]
    assert first_new["prev_hash"] == manifest.head_hash
    assert first_new["event_type"] == "audit.segment_started"
    assert first_new["details"]["first_seq"] == last + 1
    assert first_new["details"]["archive_sha256"] == manifest.sha256
    lines = (archive / manifest.records_file).read_text().splitlines()
    assert len(lines) == last
    assert (archive / "checkpoints" / f"checkpoint-{last:012d}.jws").is_file()

    live = tessera.audit.verify()
    assert live.ok, live.problems
    assert live.segments == 2
    both = tessera.audit.verify(archive_dirs=[archive])
    assert both.ok, both.problems
    assert both.archived_records == last

    # a second archive continues from the first; both verify with the live segment
    second = tessera.audit.archive(archive)
    assert (second.segment, second.first_seq, second.prev_hash) == (2, last + 1, manifest.head_hash)
    _fill(tessera, 3, start=200)
    report = tessera.audit.verify(archive_dirs=[archive])
    assert report.ok, report.problems
    assert report.segments == 3
    assert report.archived_records == second.last_seq


def test_purge_removes_only_archived_records_and_is_recorded(
    tessera: Tessera, engine: Engine, tmp_path: Path
) -> None:
    _fill(tessera, 10)
    archive = tmp_path / "archive"
    manifest = tessera.audit.archive(archive)
    _fill(tessera, 4, start=50)
    total = _count(engine)
    # an ordinary DELETE, even of archived rows, is still refused
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_ledger WHERE seq = 1"))
    removed = tessera.audit.purge([archive])
    assert removed == manifest.last_seq
    assert _count(engine) == total - removed + 1  # + the audit.segment_purged record
    [mark] = tessera.audit.query(AuditQuery(event_type="audit.segment_purged"))
    assert mark["details"]["removed_before_seq"] == manifest.last_seq + 1
    live = tessera.audit.verify()
    assert live.ok, live.problems
    assert live.first_seq == manifest.last_seq + 1
    both = tessera.audit.verify(archive_dirs=[archive])
    assert both.ok, both.problems
    assert both.archived_records == manifest.last_seq
    assert tessera.audit.purge([archive]) == 0  # nothing left to remove
    # and still no way around the purge for live records
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_ledger"))
    assert tessera.audit.verify().ok


def test_purge_is_refused_without_a_good_archive(tessera: Tessera, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        tessera.audit.purge([tmp_path])
    _fill(tessera, 6)
    archive = tmp_path / "archive"
    manifest = tessera.audit.archive(archive)
    path = archive / manifest.records_file
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(Conflict):
        tessera.audit.purge([archive])
    with pytest.raises(Conflict):
        tessera.audit.purge([tmp_path / "elsewhere"])
    assert tessera.audit.verify().first_seq == 1


def test_an_altered_archive_record_is_named(tessera: Tessera, tmp_path: Path) -> None:
    _fill(tessera, 8)
    archive = tmp_path / "archive"
    manifest = tessera.audit.archive(archive)
    tessera.audit.purge([archive])
    path = archive / manifest.records_file
    lines = path.read_text().splitlines()
    target = 5
    record = json.loads(lines[target - 1])
    assert record["seq"] == target
    record["outcome"] = "deny"
    lines[target - 1] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")
    report = tessera.audit.verify(archive_dirs=[archive])
    assert not report.ok
    assert report.first_bad_seq == target
    kinds = {p.kind for p in report.problems}
    assert {"record_altered", "archive_altered"} <= kinds
    assert tessera.audit.verify().ok  # the live segment alone is intact


def test_a_rewritten_archive_does_not_link(tessera: Tessera, tmp_path: Path) -> None:
    """An archive rewritten consistently (hashes recomputed) no longer ends at the head
    the live segment links to, nor at its signed checkpoint."""
    from tessera.audit.chain import GENESIS_HASH, ChainHead, link
    from tessera.audit.export import export_line

    _fill(tessera, 6)
    archive = tmp_path / "archive"
    manifest = tessera.audit.archive(archive)
    path = archive / manifest.records_file
    bodies = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        for key in ("seq", "prev_hash", "hash"):
            record.pop(key)
        bodies.append(record)
    bodies[2]["outcome"] = "failure"
    forged = link(ChainHead(0, GENESIS_HASH), bodies)
    path.write_text("".join(export_line({**json.loads(r.body), "hash": r.hash}) for r in forged))
    report = tessera.audit.verify(archive_dirs=[archive])
    assert not report.ok
    kinds = {p.kind for p in report.problems}
    assert "checkpoint_mismatch" in kinds or "segment_link_broken" in kinds
    assert report.first_bad_seq is not None
    assert report.first_bad_seq <= manifest.last_seq + 1


def test_a_tampered_link_is_detected(tessera: Tessera, engine: Engine, tmp_path: Path) -> None:
    _fill(tessera, 7)
    archive = tmp_path / "archive"
    manifest = tessera.audit.archive(archive)
    _fill(tessera, 2, start=30)
    tessera.audit.purge([archive])
    _drop_segment_guard(engine)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_segments SET prev_hash = :h WHERE segment = 2"), {"h": "ab" * 32}
        )
    live = tessera.audit.verify()
    assert not live.ok
    assert live.first_bad_seq == manifest.last_seq + 1
    both = tessera.audit.verify(archive_dirs=[archive])
    assert not both.ok
    assert both.first_bad_seq == manifest.last_seq + 1
    assert "segment_link_broken" in {p.kind for p in both.problems}


def test_a_missing_archive_or_segment_is_detected(
    tessera: Tessera, engine: Engine, tmp_path: Path
) -> None:
    _fill(tessera, 5)
    first_dir, second_dir = tmp_path / "a1", tmp_path / "a2"
    first = tessera.audit.archive(first_dir)
    _fill(tessera, 3, start=10)
    tessera.audit.archive(second_dir)
    assert tessera.audit.verify(archive_dirs=[first_dir, second_dir]).ok
    tessera.audit.purge([first_dir, second_dir])
    only_second = tessera.audit.verify(archive_dirs=[second_dir])
    assert not only_second.ok
    assert only_second.first_bad_seq == 1
    assert "archive_missing" in {p.kind for p in only_second.problems}
    (first_dir / first.records_file).unlink()
    gone = tessera.audit.verify(archive_dirs=[first_dir, second_dir])
    assert not gone.ok
    assert gone.first_bad_seq == 1


def test_an_archive_never_overwrites_and_a_failed_one_starts_no_segment(
    tessera: Tessera, tmp_path: Path
) -> None:
    _fill(tessera, 3)
    archive = tmp_path / "a"
    tessera.audit.archive(archive)
    _fill(tessera, 2, start=10)
    (archive / "segment-000002.jsonl").write_text("something else\n")
    with pytest.raises(Conflict):
        tessera.audit.archive(archive)
    assert (archive / "segment-000002.jsonl").read_text() == "something else\n"
    assert tessera.audit.verify().segments == 2
    second = tessera.audit.archive(tmp_path / "b")
    assert second.segment == 2


@pytest.mark.parametrize(
    "engine", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_on_postgresql_only_the_owner_may_purge(
    tessera: Tessera, engine: Engine, tmp_path: Path
) -> None:
    """A role that was granted DELETE (a misconfiguration) and sets the purge flag still
    cannot remove archived records: the guard wants a member of the ledger's owner.
    (Roles are PostgreSQL's: the test runs on that backend only.)"""
    import secrets

    _fill(tessera, 4)
    archive = tmp_path / "archive"
    manifest = tessera.audit.archive(archive)
    role = "t_np_" + secrets.token_hex(4)
    with engine.begin() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        conn.execute(text(f'CREATE ROLE "{role}" NOLOGIN'))
        conn.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"'))
        conn.execute(text(f'GRANT SELECT, DELETE ON audit_ledger, audit_segments TO "{role}"'))
    try:
        with engine.begin() as conn:
            conn.execute(text(f'SET LOCAL ROLE "{role}"'))
            conn.execute(text("SET LOCAL tessera.audit_purge = 'on'"))
            with pytest.raises(DBAPIError, match="append-only"):
                conn.execute(text("DELETE FROM audit_ledger WHERE seq = 1"))
            conn.rollback()
        # the owner without the flag: refused too (a stray DELETE is never a purge)
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_ledger WHERE seq = 1"))
        assert _count(engine) >= manifest.last_seq
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
    assert tessera.audit.purge([archive]) == manifest.last_seq
