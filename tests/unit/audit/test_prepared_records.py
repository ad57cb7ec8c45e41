"""A record encoded once in the caller (``prepare``) and spliced at its place in the chain
is byte for byte the RFC 8785 canonical JSON of the record, for any entry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.audit.chain import (
    GENESIS_HASH,
    ChainChecker,
    ChainHead,
    link,
    link_prepared,
    prepare,
    prepare_entry,
    utc_text,
)
from tessera.audit.record import ActorLayers, AuditEntry
from tessera.clock import iso
from tessera.crypto.canonical import canonical_json
from tessera.errors import InvalidInput
from tessera.store.fastsql import sqlite_timestamp

texts = st.text(max_size=10)
maybe = st.none() | texts
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
# keys chosen to collide with the holes' markers: a nested "prev_hash" or "seq" must not
# be mistaken for the top-level one
tricky_keys = st.sampled_from(["prev_hash", "seq", ',"seq":', '"prev_hash":"', "a", "zz"])


@settings(max_examples=300, deadline=None)
@given(
    actor=st.fixed_dictionaries(
        {
            "principal": texts,
            "operator": maybe,
            "agent": maybe,
            "session": maybe,
            "user": maybe,
            "act": st.lists(texts, max_size=3).map(tuple),
        }
    ),
    fields=st.tuples(texts, texts, texts, maybe, maybe, maybe),
    reasons=st.lists(texts, max_size=3),
    details=st.dictionaries(texts | tricky_keys, json_values, max_size=4),
    head_size=st.integers(0, 2**53 - 10),
    head_hash=st.binary(min_size=32, max_size=32).map(bytes.hex),
    micros=st.integers(0, 10**12),
)
def test_a_prepared_record_is_its_canonical_json(
    actor: dict[str, object],
    fields: tuple[str, str, str, str | None, str | None, str | None],
    reasons: list[str],
    details: dict[str, object],
    head_size: int,
    head_hash: str,
    micros: int,
) -> None:
    action, resource, outcome, jti, policy, request_id = fields
    entry = AuditEntry(
        "x.y",
        ActorLayers(**actor),  # type: ignore[arg-type]
        action,
        resource,
        outcome,
        reasons=tuple(reasons),
        policy_version=policy,
        request_id=request_id,
        jti=jti,
        details={k: v for k, v in details.items() if k.lower() not in {"token", "secret"}},
    )
    when = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    try:
        body = entry.body(when)
    except InvalidInput:
        return  # refused in the caller, before any encoding
    head = ChainHead(head_size, head_hash)
    [spliced] = link(head, [prepare(body, when)])
    [direct] = link(head, [prepare_entry(entry, when)])
    [plain] = link(head, [body])
    expected = canonical_json({**body, "seq": head_size + 1, "prev_hash": head_hash})
    assert spliced.body == expected
    assert direct.body == expected
    assert (direct.hash, direct.columns) == (plain.hash, plain.columns)
    assert (spliced.hash, spliced.columns, spliced.time) == (plain.hash, plain.columns, when)
    checker = ChainChecker(start=head)
    assert checker.feed([(spliced.seq, spliced.body, spliced.hash)])
    # group commit's loop: the same bytes, hash and columns, and the SQLite time text
    rows, new_head = link_prepared(
        head, [prepare(body, when), prepare_entry(entry, when)], lambda *r: r
    )
    (seq, raw, digest, prepared), (seq2, raw2, _, prepared2) = rows
    assert (seq, raw, digest, prepared.columns) == (
        head_size + 1,
        expected,
        plain.hash,
        plain.columns,
    )
    assert seq2 == head_size + 2
    assert raw2 == link(head, [body, body])[1].body
    assert new_head == ChainHead(head_size + 2, link(head, [body, body])[1].hash)
    assert prepared.utc_text == prepared2.utc_text == sqlite_timestamp(when)


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1000, 1, 1),  # noqa: DTZ001 (hypothesis wants naive bounds)
        max_value=datetime(9998, 12, 31),  # noqa: DTZ001
        timezones=st.none() | st.timezones(),
    )
)
def test_utc_text_is_the_sqlite_storage_form(when: datetime) -> None:
    # years below 1000: strftime's %Y does not pad there; records are not that old
    assert utc_text(iso(when)) == sqlite_timestamp(when)


def test_a_bad_entry_is_refused_by_prepare_entry_too() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    for details in ({"x": float("nan")}, {"x": 2**53}, {"password": "p"}, {"x": "\ud800"}):
        entry = AuditEntry("a.b", ActorLayers("cli"), "act", "r", "success", details=details)
        with pytest.raises(InvalidInput):
            prepare_entry(entry, when)
    with pytest.raises(InvalidInput):
        prepare_entry(AuditEntry("a.b", ActorLayers("\udfff"), "a", "r", "ok"), when)


def test_prepared_and_plain_bodies_chain_alike() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    bodies = [
        AuditEntry("a.b", ActorLayers("cli"), "act", f"r{i}", "success", details={"i": i}).body(
            when
        )
        for i in range(5)
    ]
    mixed = [prepare(b, when) if i % 2 else b for i, b in enumerate(bodies)]
    head = ChainHead(0, GENESIS_HASH)
    assert [r.hash for r in link(head, mixed)] == [r.hash for r in link(head, bodies)]


any_text = (
    st.text(max_size=6) | st.just("x" * 513) | st.sampled_from(["\ud800", "a\udfff", "\udc00b"])
)


@settings(max_examples=300, deadline=None)
@given(
    fields=st.lists(any_text | st.none(), min_size=12, max_size=12),
    act=st.lists(any_text, max_size=3),
    event_type=st.sampled_from(["a.b", "Bad Type", "x"]),
)
def test_the_one_pass_check_agrees_with_the_field_by_field_one(
    fields: list[str | None], act: list[str], event_type: str
) -> None:
    f = [v if v is not None else "" for v in fields[:4]] + fields[4:]
    entry = AuditEntry(
        event_type,
        ActorLayers(f[0], f[4], f[5], f[6], f[7], f[8], tuple(act)),  # type: ignore[arg-type]
        f[1],  # type: ignore[arg-type]
        f[2],  # type: ignore[arg-type]
        f[3],  # type: ignore[arg-type]
        reasons=tuple(v for v in fields[9:10] if v is not None),
        policy_version=f[10],
        jti=f[11],
    )
    try:
        entry._check_each()
    except InvalidInput:
        with pytest.raises(InvalidInput):
            entry.check()
        assert not entry._plainly_valid()
        return
    entry.check()
