"""Correlation ids for the hot path (decision ids, request ids): unique, and not
predictable from one another, without a system call per id.

``secrets.token_hex`` reads ``os.urandom`` once per id, and CPython releases the GIL
around that system call: under load (40 decision threads and the event loop) every id
was a GIL hand-off, 100 of them per batch of 100 decisions. These ids are not secrets
(nothing is authorised by knowing one; they appear in answers and audit records), they
need to be unique, and they should not reveal how many decisions the node made (a plain
counter would). So an id is a keyed hash (BLAKE2b, a 256-bit key drawn from
``os.urandom`` per process, redrawn in a forked child) of a per-process counter: distinct
counters give distinct inputs, and without the key the outputs look random. Collisions
are those of random ids of the same length (80 bits for a decision id).
"""

from __future__ import annotations

import hashlib
import itertools
import os


class _State:
    key = os.urandom(32)
    counter = itertools.count()  # next() is atomic under the GIL


def _reseed() -> None:
    _State.key = os.urandom(32)
    _State.counter = itertools.count()


os.register_at_fork(after_in_child=_reseed)


def unique_hex(nbytes: int) -> str:
    """``2 * nbytes`` hex digits (``nbytes`` ≤ 64), like ``secrets.token_hex(nbytes)``."""
    n = next(_State.counter)
    return hashlib.blake2b(n.to_bytes(16, "big"), key=_State.key, digest_size=nbytes).hexdigest()
