"""The chain checked range by range joins into exactly what one pass finds, or refuses to
join (and then one pass decides)."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.audit.chain import GENESIS_HASH, ChainChecker, ChainHead, link
from tessera.audit.record import ActorLayers, AuditEntry
from tessera.audit.verify import RangeResult, check_range, join_ranges, split_ranges
from tessera.clock import ManualClock

CLOCK = ManualClock()


def _chain(n: int) -> list[tuple[int, bytes, str]]:
    bodies = [
        AuditEntry(
            event_type="pdp.decision",
            actor=ActorLayers("agent:agt_1", agent="agt_1", session=f"ses_{i}"),
            action="docs/read",
            resource=f"doc:{i}",
            outcome="allow",
        ).body(CLOCK.now())
        for i in range(n)
    ]
    return [(r.seq, r.body, r.hash) for r in link(ChainHead(0, GENESIS_HASH), bodies)]


def _check_range(
    rows: list[tuple[int, bytes, str]],
    after: int,
    upto: int,
    start: str | None,
    wanted: frozenset[int],
) -> RangeResult:
    """``check_range`` over rows in memory, read as the store reads them (by seq)."""

    def stored_hash(seq: int) -> str | None:
        return next((h for s, _, h in rows if s == seq), None)

    def scan(a: int, u: int) -> list[list[tuple[int, bytes, str]]]:
        return [[r for r in rows if a < r[0] <= u]]

    return check_range(after, upto, start, wanted, stored_hash=stored_hash, scan=scan)


def _in_ranges(
    rows: list[tuple[int, bytes, str]], upto: int, parts: int, wanted: frozenset[int]
) -> ChainChecker | None:
    origin = ChainHead(0, GENESIS_HASH)
    results = [
        _check_range(rows, a, b, origin.hash if a == 0 else None, wanted)
        for a, b in split_ranges(0, upto, parts)
    ]
    return join_ranges(origin, wanted, results)


def test_split_ranges_cover_every_record_once() -> None:
    assert split_ranges(0, 10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert split_ranges(100, 102, 8) == [(100, 101), (101, 102)]  # never an empty range
    assert split_ranges(5, 6, 1) == [(5, 6)]


def test_clean_ranges_join_into_the_single_pass() -> None:
    rows = _chain(30)
    wanted = frozenset({0, 7, 10, 30})
    one = ChainChecker(wanted=wanted)
    assert one.feed(rows)
    joined = _in_ranges(rows, 30, 4, wanted)
    assert joined is not None
    assert joined.problem is None
    assert (joined.size, joined.head, joined.hash_at) == (one.size, one.head, one.hash_at)


def test_ranges_that_do_not_join_are_refused() -> None:
    rows = _chain(12)
    origin = ChainHead(0, GENESIS_HASH)
    parts = [
        _check_range(rows, a, b, None if a else GENESIS_HASH, frozenset())
        for a, b in split_ranges(0, 12, 3)
    ]
    assert join_ranges(origin, frozenset(), parts) is not None
    cut = RangeResult(8, 12, parts[2].start_hash, 11, "ab" * 32, {}, None)  # stopped short
    assert join_ranges(origin, frozenset(), [parts[0], parts[1], cut]) is None
    assert join_ranges(origin, frozenset(), [parts[0], parts[2]]) is None  # a range missing
    other = RangeResult(4, 8, "cd" * 32, 8, parts[1].head, {}, None)  # another predecessor
    assert join_ranges(origin, frozenset(), [parts[0], other, parts[2]]) is None
    missing = RangeResult(4, 8, None, 4, GENESIS_HASH, {}, None)  # record 4 is gone
    assert join_ranges(origin, frozenset(), [parts[0], missing, parts[2]]) is None


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(2, 40),
    parts=st.integers(1, 6),
    where=st.integers(0, 39),
    how=st.sampled_from(["flip", "delete", "swap", "rehash"]),
)
def test_ranges_never_pass_what_one_pass_fails(n: int, parts: int, where: int, how: str) -> None:
    """Whatever was done to one record, the ranges join only if one pass finds nothing."""
    rows = _chain(n)
    i = where % n
    seq, body, digest = rows[i]
    if how == "flip":
        rows[i] = (seq, body.replace(b"allow", b"alloW"), digest)
    elif how == "delete":
        del rows[i]
    elif how == "swap" and i + 1 < n:
        # records trade places (the store reads in seq order, so seqs stay in order)
        rows[i], rows[i + 1] = (seq, *rows[i + 1][1:]), (seq + 1, body, digest)
    elif how == "rehash":  # a forged record with its own hash consistent, the rest untouched
        forged = body.replace(b"allow", b"alloW")
        prev = rows[i - 1][2] if i else GENESIS_HASH
        rows[i] = (seq, forged, hashlib.sha256(bytes.fromhex(prev) + forged).hexdigest())
    one = ChainChecker()
    one.feed(rows)
    complete = one.problem is None and one.size == n
    joined = _in_ranges(rows, n, parts, frozenset())
    if joined is not None:
        assert complete
        assert joined.head == one.head
