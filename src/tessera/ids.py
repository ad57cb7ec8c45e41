"""Identifiers. Random, URL-safe, prefixed by kind so a log line says what it names."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import secrets

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case

PREFIXES = {
    "operator": "op",
    "user": "usr",
    "service": "svc",
    "agent": "agt",
    "model": "mdl",
    "credential": "cred",
    "key": "key",
    "session": "ses",
    "event": "evt",
}

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def new_id(kind: str) -> str:
    """A new id such as ``agt_3k9x...``: 16 random base32 characters (80 bits)."""
    prefix = PREFIXES[kind]
    body = "".join(secrets.choice(_ALPHABET) for _ in range(16))
    return f"{prefix}_{body}"


_IDS = {kind: re.compile(rf"^{prefix}_[{_ALPHABET}]{{16}}$") for kind, prefix in PREFIXES.items()}


def is_id(kind: str, value: str) -> bool:
    """``value`` has the shape of a ``new_id(kind)`` (it may still name nothing)."""
    return bool(_IDS[kind].fullmatch(value))


def is_valid_name(value: str) -> bool:
    """Names (operators, agents, services) are lower-case slugs, 1 to 63 characters."""
    return bool(_NAME.fullmatch(value))


# Correlation ids for hot paths (decision ids, request ids): unique, and not predictable
# from one another, without a system call per id.
#
# ``secrets.token_hex`` reads ``os.urandom`` once per id, and CPython releases the GIL
# around that system call: under load (40 decision threads and the event loop) every id
# was a GIL hand-off, 100 of them per batch of 100 decisions. These ids are not secrets
# (nothing is authorised by knowing one; they appear in answers and audit records), they
# need to be unique, and they should not reveal how many decisions the node made (a plain
# counter would). So an id is a keyed hash (BLAKE2b, a 256-bit key drawn from
# ``os.urandom`` per process, redrawn in a forked child) of a per-process counter: distinct
# counters give distinct inputs, and without the key the outputs look random. Collisions
# are those of random ids of the same length (80 bits for a decision id).


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
