"""Verification of a whole ledger: the chain record by record, then every checkpoint.

Pure: the caller supplies the rows (in batches, in order), the checkpoints with where they
came from, and the public keys. The report names the first bad record; ``ok`` is False on
any problem, including a checkpoint that covers more records than the ledger holds (the
tail was removed) or one whose signature does not verify.

The chain can also be checked in parallel, range by range (``split_ranges``,
``RangeResult``, ``join_ranges``): each record's hash depends only on its body and the
stored hash before it, so a range starting from the stored hash of the record before it
checks exactly what one pass would, and the ranges join when each one starts from the head
the range before it computed. Anything short of a clean join is redone in one pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from tessera.audit.chain import GENESIS_HASH, ChainChecker, ChainHead, Problem
from tessera.audit.checkpoint import Checkpoint, verify_checkpoint
from tessera.crypto.errors import TokenInvalid
from tessera.crypto.jws import KeyLookup


@dataclass(frozen=True)
class RangeResult:
    """One range's check: records ``after + 1 .. upto`` from ``start_hash`` (the stored
    hash of record ``after``, None when that record is missing)."""

    after: int
    upto: int
    start_hash: str | None
    size: int  # the last record checked
    head: str  # its hash
    hash_at: dict[int, str]  # the wanted tree sizes in this range
    problem: Problem | None


def split_ranges(after: int, upto: int, parts: int) -> list[tuple[int, int]]:
    """``(after, upto)`` of ``parts`` near-equal ranges covering ``after + 1 .. upto``."""
    total = upto - after
    parts = max(1, min(parts, total))
    bounds = [after + total * i // parts for i in range(parts + 1)]
    return list(pairwise(bounds))


def check_range(
    after: int,
    upto: int,
    start_hash: str | None,
    wanted: frozenset[int],
    *,
    stored_hash: Callable[[int], str | None],
    scan: Callable[[int, int], Iterable[Sequence[tuple[int, bytes, str]]]],
) -> RangeResult:
    """Check records ``after + 1 .. upto`` (``scan(after, upto)``'s batches) from
    ``start_hash``, or when it is None from ``stored_hash(after)``: what one worker of a
    parallel verify does."""
    if start_hash is None:
        start_hash = stored_hash(after)
        if start_hash is None:
            return RangeResult(after, upto, None, after, GENESIS_HASH, {}, None)
    checker = ChainChecker(start=ChainHead(after, start_hash), wanted=wanted)
    checker.feed_all(scan(after, upto))
    return RangeResult(
        after, upto, start_hash, checker.size, checker.head, checker.hash_at, checker.problem
    )


def join_ranges(
    start: ChainHead, wanted: frozenset[int], parts: Sequence[RangeResult]
) -> ChainChecker | None:
    """One checker equal to a single pass over ``parts`` from ``start``, or None when they
    do not join cleanly (a problem, a gap, a range cut short, a start that is not the head
    before it): the caller then checks in one pass, from one snapshot, so that what it
    reports is exactly what a single pass reports."""
    checker = ChainChecker(start=start, wanted=wanted)
    size, head = checker.size, checker.head
    for part in sorted(parts, key=lambda p: p.after):
        if (
            part.problem is not None
            or part.after != size
            or part.start_hash != head
            or part.size != part.upto
        ):
            return None
        size, head = part.size, part.head
        checker.hash_at.update(part.hash_at)
    checker.size, checker.head = size, head
    return checker


# ``(start, wanted) -> (checker, processes)``: the chain checked some other way (in
# parallel), or None to check it by feeding the batches.
ChainRun = Callable[[ChainHead, frozenset[int]], tuple[ChainChecker, int] | None]


@dataclass
class VerifyReport:
    records: int = 0
    head_hash: str = GENESIS_HASH
    checkpoints_checked: int = 0
    largest_checkpoint: int = 0
    pending: int = 0  # outbox entries not chained yet (not covered by this report)
    first_seq: int = 1  # the oldest record checked (after a purge, the live ledger's first)
    archived_records: int = 0  # records checked in archive files (``--archive``)
    segments: int = 1  # segments the ledger has (1 + rows of audit_segments)
    processes: int = 1  # processes that checked the live chain (``jobs``)
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_seq(self) -> int | None:
        seqs = [p.seq for p in self.problems if p.seq is not None]
        return min(seqs) if seqs else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "head_hash": self.head_hash,
            "checkpoints_checked": self.checkpoints_checked,
            "largest_checkpoint": self.largest_checkpoint,
            "pending": self.pending,
            "first_seq": self.first_seq,
            "archived_records": self.archived_records,
            "segments": self.segments,
            "processes": self.processes,
            "first_bad_seq": self.first_bad_seq,
            "problems": [p.to_dict() for p in self.problems],
            "seconds": round(self.seconds, 3),
        }


def verify_ledger(
    batches: Iterable[Sequence[tuple[int, bytes, str]]],
    checkpoints: Sequence[tuple[str, str]],
    keys: KeyLookup,
    *,
    now: float,
    start: ChainHead | None = None,
    end: int | None = None,
    links: Sequence[tuple[int, str, str]] = (),
    run: ChainRun | None = None,
) -> VerifyReport:
    """Check the chain and every checkpoint ``(source, jws)`` against it.

    A checkpoint must verify under ``keys``, must not cover more records than the ledger
    holds, and its head hash must equal the chain's hash at its tree size. The chain may
    begin after ``start`` (a segment's link) and, for an archive, end at ``end``:
    checkpoints outside ``start.size .. end`` belong to other segments and are left to
    their checks. ``links`` are ``(size, hash, what)``: the chain's hash at ``size`` must
    be ``hash`` (a segment's recorded ``prev_hash``). ``run``, when it returns a
    checker (and how many processes made it), replaces feeding ``batches`` (which are
    then never read).
    """
    t0 = time.perf_counter()
    report = VerifyReport()
    valid: list[tuple[str, Checkpoint]] = []
    for source, jws in checkpoints:
        try:
            valid.append((source, verify_checkpoint(jws, keys, now=now)))
        except TokenInvalid as exc:
            report.problems.append(
                Problem("checkpoint_invalid", f"checkpoint {source}: {exc.detail or exc.message}")
            )
    origin = start or ChainHead(0, GENESIS_HASH)
    valid = [
        (source, cp)
        for source, cp in valid
        if cp.tree_size >= origin.size and (end is None or cp.tree_size <= end)
    ]
    wanted = frozenset(cp.tree_size for _, cp in valid) | frozenset(
        size for size, _, _ in links if size >= origin.size
    )
    ran = run(origin, wanted) if run is not None else None
    if ran is not None:
        checker, report.processes = ran
    else:
        checker = ChainChecker(start=origin, wanted=wanted)
        checker.feed_all(batches)
    if checker.problem is not None:
        report.problems.insert(0, checker.problem)
    report.records, report.head_hash = checker.size, checker.head
    broken_at = checker.problem.seq if checker.problem is not None else None
    last_good = start.size if start else 0
    for source, cp in sorted(valid, key=lambda item: item[1].tree_size):
        report.checkpoints_checked += 1
        report.largest_checkpoint = max(report.largest_checkpoint, cp.tree_size)
        if broken_at is not None and cp.tree_size >= broken_at:
            continue  # the chain problem above already explains this checkpoint
        if cp.tree_size > checker.size:
            report.problems.append(
                Problem(
                    "truncated",
                    f"checkpoint {source} covers {cp.tree_size} records but the ledger has "
                    f"{checker.size}: records {checker.size + 1}..{cp.tree_size} are missing",
                    checker.size + 1,
                )
            )
        elif checker.hash_at.get(cp.tree_size) != cp.head_hash:
            report.problems.append(
                Problem(
                    "checkpoint_mismatch",
                    f"checkpoint {source} at {cp.tree_size} does not match the ledger: "
                    f"a record in {last_good + 1}..{cp.tree_size} was changed and the chain "
                    "rewritten after it",
                    last_good + 1,
                )
            )
        else:
            last_good = max(last_good, cp.tree_size)
    for size, expected, what in links:
        if size < origin.size or size > checker.size:
            continue  # not in this part of the chain
        if broken_at is not None and size >= broken_at:
            continue
        if checker.hash_at.get(size) != expected:
            report.problems.append(
                Problem(
                    "segment_link_broken",
                    f"{what} links to {expected[:16]}..., but record {size} hashes to "
                    f"{str(checker.hash_at.get(size))[:16]}...",
                    size + 1,
                )
            )
    report.first_seq = origin.size + 1
    report.seconds = time.perf_counter() - t0
    return report
