"""Records, canonical bytes, chain linking and checking, checkpoints and the file sink."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.audit.chain import GENESIS_HASH, ChainChecker, ChainHead, link, record_hash
from tessera.audit.checkpoint import (
    DirectoryCheckpointSink,
    key_lookup,
    sign_checkpoint,
    verify_checkpoint,
)
from tessera.audit.encoding import record_bytes
from tessera.audit.export import export_line, rows_from_export
from tessera.audit.record import ActorLayers, AuditEntry, current_request_id, entry_from_event
from tessera.audit.verify import verify_ledger
from tessera.clock import ManualClock
from tessera.crypto.canonical import canonical_json
from tessera.crypto.errors import TokenInvalid
from tessera.crypto.keys import generate_signing_key
from tessera.errors import InvalidInput, Unavailable

CLOCK = ManualClock()
KEY = generate_signing_key()
KEYS = key_lookup([KEY.public_jwk()])


def entry(i: int, **extra: object) -> AuditEntry:
    return AuditEntry(
        event_type="token.issued",
        actor=ActorLayers("agent:agt_1", operator="op_1", agent="agt_1", act=("agt_0",)),
        action="token.exchange",
        resource=f"ses_{i}",
        outcome="success",
        jti=f"j{i}",
        details=dict(extra),
    )


def chain(n: int) -> list[tuple[int, bytes, str]]:
    linked = link(ChainHead(0, GENESIS_HASH), [entry(i).body(CLOCK.now()) for i in range(n)])
    return [(r.seq, r.body, r.hash) for r in linked]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_record_bytes_are_rfc8785_canonical_json(value: object) -> None:
    try:
        expected = canonical_json({"details": value})
    except Exception:
        with pytest.raises(InvalidInput):
            record_bytes({"details": value})
        return
    assert record_bytes({"details": value}) == expected


texts = st.text(max_size=12)  # any Unicode but lone surrogates, control characters too
maybe = st.none() | texts


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "principal": texts,
            "agent": maybe,
            "model_digest": maybe,
            "session": maybe,
            "user": maybe,
            "act": st.lists(texts, max_size=3).map(tuple),
        }
    ),
    st.tuples(texts, texts, texts, maybe, maybe),
    st.lists(texts, max_size=3),
    st.dictionaries(texts, json_values, max_size=3),
    st.integers(1, 2**53 - 1),
)
def test_the_record_template_is_rfc8785(
    actor: dict[str, object],
    fields: tuple[str, str, str, str | None, str | None],
    reasons: list[str],
    details: dict[str, object],
    seq: int,
) -> None:
    action, resource, outcome, jti, policy = fields
    secretless = {k: v for k, v in details.items() if k.lower() not in {"token", "secret"}}
    e = AuditEntry(
        "x.y",
        ActorLayers(**actor),  # type: ignore[arg-type]
        action[:500],
        resource[:500],
        outcome[:500],
        reasons=tuple(r[:500] for r in reasons),
        policy_version=policy,
        jti=jti,
        details=secretless,
    )
    try:
        body = e.body(CLOCK.now())
    except InvalidInput:
        return  # a secret-named key somewhere in details
    record = {**body, "seq": seq, "prev_hash": "ab" * 32}
    try:
        expected = canonical_json(record)
    except Exception:  # e.g. an integer outside ±2^53 in details
        with pytest.raises(InvalidInput):
            record_bytes(record)
        return
    assert record_bytes(record) == expected


def test_the_record_holds_every_layer_and_the_request_id() -> None:
    token = current_request_id.set("req-42")
    try:
        body = entry(1).body(CLOCK.now())
    finally:
        current_request_id.reset(token)
    assert body["request_id"] == "req-42"
    assert body["actor"] == {
        "principal": "agent:agt_1",
        "operator": "op_1",
        "agent": "agt_1",
        "model_digest": None,
        "session": None,
        "user": None,
        "act": ["agt_0"],
    }
    assert body["time"] == "2026-01-01T00:00:00Z"


@pytest.mark.parametrize("key", ["token", "client_secret", "Password", "access_token"])
def test_a_secret_never_enters_a_record(key: str) -> None:
    with pytest.raises(InvalidInput, match="never a secret"):
        entry(1, nested={key: "x"}).body(CLOCK.now())


def test_malformed_entries_are_refused() -> None:
    with pytest.raises(InvalidInput):
        AuditEntry("Bad Type", ActorLayers("cli"), "a", "r", "success").body(CLOCK.now())
    with pytest.raises(InvalidInput):
        AuditEntry("x.y", ActorLayers("cli"), "a" * 600, "r", "success").body(CLOCK.now())
    with pytest.raises(InvalidInput):
        entry(1, value=object()).body(CLOCK.now())
    # what could not be encoded is refused in the caller, never inside a group commit
    for bad in (float("nan"), 2**53, "\ud800"):
        with pytest.raises(InvalidInput):
            entry(1, value=bad).body(CLOCK.now())
    with pytest.raises(InvalidInput):
        AuditEntry("x.y", ActorLayers("cli", agent="\udfff"), "a", "r", "ok").body(CLOCK.now())


def test_event_payloads_are_redacted_not_refused() -> None:
    e = entry_from_event(
        "session.issued",
        "ses_1",
        {"jti": "j1", "nested": {"access_token": "eyJ...", "n": 2**60}, "x": float("inf")},
        "agent:agt_1",
    )
    body = e.body(CLOCK.now())
    assert body["details"] == {
        "jti": "j1",
        "nested": {"access_token": "[redacted]", "n": str(2**60)},
        "x": "inf",
    }
    assert body["actor"]["principal"] == "agent:agt_1"
    assert record_bytes({**body, "seq": 1, "prev_hash": "0" * 64}) == canonical_json(
        {**body, "seq": 1, "prev_hash": "0" * 64}
    )


def test_link_chains_each_record_to_the_previous_hash() -> None:
    rows = chain(3)
    assert [s for s, _, _ in rows] == [1, 2, 3]
    prev = GENESIS_HASH
    for _, body, digest in rows:
        record = json.loads(body)
        assert record["prev_hash"] == prev
        assert digest == record_hash(prev, body)
        prev = digest
    more = link(ChainHead(3, prev), [entry(9).body(CLOCK.now())])
    assert more[0].seq == 4
    assert json.loads(more[0].body)["prev_hash"] == prev


def test_checker_stops_at_the_first_bad_record() -> None:
    rows = chain(5)
    seq, body, digest = rows[2]
    rows[2] = (seq, body.replace(b"ses_2", b"ses_X"), digest)
    checker = ChainChecker()
    assert not checker.feed(rows)
    assert checker.problem is not None
    assert checker.problem.seq == 3
    assert checker.size == 2


def test_checker_refuses_a_record_that_names_another_place() -> None:
    # Correctly hashed, but the record claims another predecessor: a spliced-in record.
    rows = chain(2)
    other = link(ChainHead(1, "1" * 64), [entry(7).body(CLOCK.now())])[0]
    rows[1] = (2, other.body, record_hash(rows[0][2], other.body))
    checker = ChainChecker()
    assert not checker.feed(rows)
    assert checker.problem is not None
    assert checker.problem.kind == "link_broken"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b',"prev_hash":"',
        b',"prev_hash":"' + b"0" * 64,
        b',"prev_hash":"' + b"0" * 64 + b'"',
    ],
)
def test_checker_survives_any_truncated_record(body: bytes) -> None:
    checker = ChainChecker()
    assert not checker.feed([(1, body, "00" * 32)])
    assert checker.problem is not None
    assert checker.problem.seq == 1


def test_checkpoint_signs_the_head_and_verifies() -> None:
    cp = sign_checkpoint(ChainHead(7, "ab" * 32), KEY, issuer="https://t", now=CLOCK.timestamp())
    back = verify_checkpoint(cp.jws, KEYS, now=CLOCK.timestamp())
    assert (back.tree_size, back.head_hash, back.kid) == (7, "ab" * 32, KEY.kid)
    other = key_lookup([generate_signing_key().public_jwk()])
    with pytest.raises(TokenInvalid):
        verify_checkpoint(cp.jws, other, now=CLOCK.timestamp())
    head, payload, sig = cp.jws.split(".")
    with pytest.raises(TokenInvalid):
        verify_checkpoint(f"{head}.{payload}.{sig[:-4]}AAAA", KEYS, now=CLOCK.timestamp())


def test_verify_ledger_reports_truncation_mismatch_and_bad_signatures() -> None:
    rows = chain(6)
    now = CLOCK.timestamp()
    cp4 = sign_checkpoint(ChainHead(4, rows[3][2]), KEY, issuer="t", now=now)
    cp6 = sign_checkpoint(ChainHead(6, rows[5][2]), KEY, issuer="t", now=now)
    good = verify_ledger([rows], [("a", cp4.jws), ("b", cp6.jws)], KEYS, now=now)
    assert good.ok
    assert good.records == 6
    assert good.checkpoints_checked == 2
    cut = verify_ledger([rows[:5]], [("a", cp4.jws), ("b", cp6.jws)], KEYS, now=now)
    assert [p.kind for p in cut.problems] == ["truncated"]
    assert cut.first_bad_seq == 6
    wrong = sign_checkpoint(ChainHead(4, "00" * 32), KEY, issuer="t", now=now)
    mismatch = verify_ledger([rows], [("a", wrong.jws)], KEYS, now=now)
    assert [p.kind for p in mismatch.problems] == ["checkpoint_mismatch"]
    forged = verify_ledger([rows], [("x", "not.a.jws")], KEYS, now=now)
    assert [p.kind for p in forged.problems] == ["checkpoint_invalid"]


def test_directory_sink_writes_each_checkpoint_once(tmp_path: Path) -> None:
    sink = DirectoryCheckpointSink(tmp_path / "cps")
    cp = sign_checkpoint(ChainHead(3, "cd" * 32), KEY, issuer="t", now=CLOCK.timestamp())
    path = sink.write(cp)
    assert path.name == "checkpoint-000000000003.jws"
    later = sign_checkpoint(ChainHead(3, "ef" * 32), KEY, issuer="t", now=CLOCK.timestamp())
    sink.write(later)  # the first one stays
    assert sink.read_all() == [(path.name, cp.jws + "\n")]
    (tmp_path / "cps" / "notes.txt").write_text("ignored")
    assert len(sink.read_all()) == 1
    blocked = DirectoryCheckpointSink(path / "sub")  # a file where a directory should be
    with pytest.raises(Unavailable):
        blocked.write(cp)


def test_an_export_verifies_without_the_database() -> None:
    rows = chain(4)
    lines = []
    for _, body, digest in rows:
        lines.append(export_line({**json.loads(body), "hash": digest}))
    cp = sign_checkpoint(ChainHead(4, rows[-1][2]), KEY, issuer="t", now=CLOCK.timestamp())
    report = verify_ledger(rows_from_export(lines), [("f", cp.jws)], KEYS, now=CLOCK.timestamp())
    assert report.ok
    assert report.records == 4
    lines[1] = lines[1].replace("ses_1", "ses_9")
    bad = verify_ledger(rows_from_export(lines), [("f", cp.jws)], KEYS, now=CLOCK.timestamp())
    assert bad.first_bad_seq == 2
    garbage = verify_ledger(rows_from_export(["{oops\n"]), [], KEYS, now=CLOCK.timestamp())
    assert not garbage.ok
