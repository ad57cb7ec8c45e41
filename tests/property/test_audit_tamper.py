"""Property: any change to a checkpointed ledger is detected and the first bad record named.

A chain of records is built, checkpointed at its head (as at every clean shutdown), then
changed in one way: a byte flipped in a record or in a stored hash, a record deleted, two
records swapped, or a record inserted. ``verify_ledger`` must report it, naming the first
position that differs from the original.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.audit.chain import GENESIS_HASH, ChainHead, link
from tessera.audit.checkpoint import key_lookup, sign_checkpoint
from tessera.audit.record import ActorLayers, AuditEntry
from tessera.audit.verify import verify_ledger
from tessera.clock import ManualClock
from tessera.crypto.keys import generate_signing_key

CLOCK = ManualClock()
KEY = generate_signing_key()
KEYS = key_lookup([KEY.public_jwk()])
Row = tuple[int, bytes, str]


def build(n: int) -> list[Row]:
    bodies = [
        AuditEntry(
            "pdp.decision",
            ActorLayers("agent:agt_1", agent="agt_1", session=f"ses_{i % 3}"),
            "docs/read",
            f"doc:{i}",
            "allow" if i % 2 else "deny",
            reasons=("r",),
            details={"n": i, "note": "ü" * (i % 4)},
        ).body(CLOCK.now())
        for i in range(n)
    ]
    return [(r.seq, r.body, r.hash) for r in link(ChainHead(0, GENESIS_HASH), bodies)]


@st.composite
def tampered(draw: st.DrawFn) -> tuple[list[Row], list[Row], int]:
    """(original, tampered, expected first bad seq: where the two first differ)."""
    n = draw(st.integers(1, 12))
    rows = build(n)
    out = list(rows)
    kind = draw(st.sampled_from(["flip_body", "flip_hash", "delete", "swap", "insert"]))
    if kind == "flip_body":
        i = draw(st.integers(0, n - 1))
        seq, body, digest = out[i]
        pos = draw(st.integers(0, len(body) - 1))
        bit = 1 << draw(st.integers(0, 7))
        changed = bytearray(body)
        changed[pos] ^= bit
        out[i] = (seq, bytes(changed), digest)
        return rows, out, i + 1
    if kind == "flip_hash":
        i = draw(st.integers(0, n - 1))
        seq, body, digest = out[i]
        pos = draw(st.integers(0, 63))
        new = draw(st.sampled_from([c for c in "0123456789abcdef" if c != digest[pos]]))
        out[i] = (seq, body, digest[:pos] + new + digest[pos + 1 :])
        return rows, out, i + 1
    if kind == "delete":
        i = draw(st.integers(0, n - 1))
        del out[i]
        return rows, out, i + 1
    if kind == "swap" and n >= 2:
        i = draw(st.integers(0, n - 2))
        j = draw(st.integers(i + 1, n - 1))
        out[i], out[j] = out[j], out[i]
        return rows, out, i + 1
    # insert: a copy of any record, or a record with a forged seq, anywhere
    i = draw(st.integers(0, n))
    src = out[draw(st.integers(0, n - 1))]
    if draw(st.booleans()):
        src = (i + 1, src[1], src[2])  # claims the right position, but does not link
    out.insert(i, src)
    return rows, out, first_difference(rows, out)


def first_difference(a: list[Row], b: list[Row]) -> int:
    """1-based position of the first row that differs (an inserted copy of the record
    already at that place changes nothing there)."""
    for k, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return k + 1
    return min(len(a), len(b)) + 1


@settings(max_examples=200, deadline=None)
@given(tampered(), st.integers(1, 1000))
def test_any_change_is_detected_and_located(
    case: tuple[list[Row], list[Row], int], batch: int
) -> None:
    original, changed, first_bad = case
    now = CLOCK.timestamp()
    cp = sign_checkpoint(ChainHead(len(original), original[-1][2]), KEY, issuer="t", now=now)
    batches = [changed[k : k + batch] for k in range(0, len(changed), batch)]
    report = verify_ledger(batches, [("cp", cp.jws)], KEYS, now=now)
    assert not report.ok
    assert report.first_bad_seq == first_bad


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 30), st.integers(1, 7))
def test_an_untouched_ledger_verifies(n: int, batch: int) -> None:
    rows = build(n)
    now = CLOCK.timestamp()
    cps = [
        (str(k), sign_checkpoint(ChainHead(k, rows[k - 1][2]), KEY, issuer="t", now=now).jws)
        for k in range(1, n + 1, 3)
    ]
    batches = [rows[k : k + batch] for k in range(0, n, batch)]
    report = verify_ledger(batches, cps, KEYS, now=now)
    assert report.ok, report.problems
    assert report.records == n
