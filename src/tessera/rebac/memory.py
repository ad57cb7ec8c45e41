"""The in-memory tuple index: the engine's production read path.

Layout (all strings interned, so each distinct id is stored once):

    _users["object#relation"][user]       -> TupleMeta | None  concrete users, wildcards
    _usersets["object#relation"][userset] -> TupleMeta | None  ``type:id#rel`` users

(one flat dict keyed by the userset string ``object#relation`` costs far less memory than
nested per-object dicts; that key string is shared with userset users of the same name)
    _objects[type][object] -> number of tuples with that object
    _subjects[type][type:id] -> number of tuples with that user (or userset base)
    _reverse[user] -> "object#relation" keys of the tuples with that user (list-objects)

``write``/``delete`` are incremental so the index can follow the store's change sequence.
Writes are meant to come from one thread (the event-log tailer); readers on other threads
see each tuple appear or disappear atomically (a single dict assignment under the GIL).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime

from tessera.rebac.errors import InvalidTuple
from tessera.rebac.ports import EMPTY, RelationTuple, TupleMeta, TupleReader

_intern = sys.intern
_SMALL = 32
# A bucket holding one unconditional, non-expiring tuple (by far the most common case) is
# stored as the bare user string: a one-entry dict costs ~180 bytes more per tuple.
_Bucket = str | dict[str, TupleMeta | None]
_Flat = dict[str, _Bucket]


def split_object(obj: str) -> tuple[str, str]:
    t, sep, i = obj.partition(":")
    if not sep or not t or not i:
        raise InvalidTuple(f"malformed object {obj!r}")
    return t, i


def user_base(user: str) -> str:
    """``group:eng#member`` → ``group:eng``; plain users unchanged."""
    return user.partition("#")[0]


class MemoryTupleIndex:
    """Dict-of-dicts tuple index implementing ``TupleReader``."""

    def __init__(self, tuples: Iterable[RelationTuple] = ()) -> None:
        self._users: _Flat = {}
        self._usersets: _Flat = {}
        self._objects: dict[str, dict[str, int]] = {}
        self._subjects: dict[str, dict[str, int]] = {}
        # str for one key, list up to _SMALL keys, then a set (O(1) deletes).
        self._reverse: dict[str, str | list[str] | set[str]] = {}
        self._count = 0
        self._lock = threading.Lock()
        self.write(tuples)

    # -- TupleReader ----------------------------------------------------------------------

    def users(self, obj: str, relation: str) -> Mapping[str, TupleMeta | None]:
        b = self._users.get(obj + "#" + relation)
        if b is None:
            return EMPTY
        return {b: None} if type(b) is str else b  # type: ignore[return-value]

    def usersets(self, obj: str, relation: str) -> Mapping[str, TupleMeta | None]:
        b = self._usersets.get(obj + "#" + relation)
        if b is None:
            return EMPTY
        return {b: None} if type(b) is str else b  # type: ignore[return-value]

    def objects_of_type(self, object_type: str) -> Iterable[str]:
        return list(self._objects.get(object_type, ()))

    def users_of_type(self, user_type: str) -> Iterable[str]:
        return list(self._subjects.get(user_type, ()))

    def keys_of_user(self, user: str) -> Iterable[str]:
        r = self._reverse.get(user)
        if r is None:
            return ()
        return (r,) if isinstance(r, str) else list(r)

    # -- writes ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def write(self, tuples: Iterable[RelationTuple]) -> None:
        """Insert or replace tuples (idempotent per key)."""
        with self._lock:
            for t in tuples:
                self._write_one(t)

    def delete(self, tuples: Iterable[RelationTuple]) -> None:
        """Remove tuples by key; unknown keys are ignored."""
        with self._lock:
            for t in tuples:
                self._delete_one(t.object, t.relation, t.user)

    def _write_one(self, t: RelationTuple) -> None:
        otype, _ = split_object(t.object)
        base = user_base(t.user)
        utype, _ = split_object(base)
        obj, user = _intern(t.object), _intern(t.user)
        key = _intern(obj + "#" + t.relation)
        target = self._usersets if "#" in user else self._users
        bucket = target.get(key)
        meta = t.meta()
        if bucket is None:
            new = True
            target[key] = user if meta is None else {user: meta}
        elif type(bucket) is str:
            new = bucket != user
            if new or meta is not None:
                target[key] = {bucket: None, user: meta}
        else:
            assert isinstance(bucket, dict)  # noqa: S101 - narrowing for mypy
            new = user not in bucket
            bucket[user] = meta
        if new:
            self._count += 1
            objs = self._objects.setdefault(_intern(otype), {})
            objs[obj] = objs.get(obj, 0) + 1
            subs = self._subjects.setdefault(_intern(utype), {})
            b = _intern(base)
            subs[b] = subs.get(b, 0) + 1
            self._reverse_add(user, key)

    def _reverse_add(self, user: str, key: str) -> None:
        r = self._reverse.get(user)
        if r is None:
            self._reverse[user] = key
        elif isinstance(r, str):
            self._reverse[user] = [r, key]
        elif isinstance(r, list):
            r.append(key)
            if len(r) > _SMALL:
                self._reverse[user] = set(r)
        else:
            r.add(key)

    def _reverse_remove(self, user: str, key: str) -> None:
        r = self._reverse.get(user)
        if r is None:
            return
        if isinstance(r, str):
            if r == key:
                del self._reverse[user]
            return
        if key in r:
            r.remove(key)
        if len(r) == 1:
            self._reverse[user] = next(iter(r))

    def _delete_one(self, obj: str, rel: str, user: str) -> None:
        target = self._usersets if "#" in user else self._users
        key = obj + "#" + rel
        bucket = target.get(key)
        if bucket is None:
            return
        if type(bucket) is str:
            if bucket != user:
                return
            del target[key]
        else:
            assert isinstance(bucket, dict)  # noqa: S101 - narrowing for mypy
            if user not in bucket:
                return
            del bucket[user]
            if not bucket:
                del target[key]
        self._count -= 1
        otype, _ = split_object(obj)
        _decrement(self._objects, otype, obj)
        base = user_base(user)
        _decrement(self._subjects, split_object(base)[0], base)
        self._reverse_remove(user, key)

    def tuples(self) -> Iterator[RelationTuple]:
        """Every stored tuple (for tests and snapshots; expiry is not applied)."""
        for source in (self._users, self._usersets):
            for key, bucket in list(source.items()):
                obj, _, rel = key.rpartition("#")
                items: list[tuple[str, TupleMeta | None]] = (
                    [(bucket, None)] if isinstance(bucket, str) else list(bucket.items())
                )
                for user, meta in items:
                    yield _to_tuple(obj, rel, user, meta)


def _decrement(counts: dict[str, dict[str, int]], kind: str, key: str) -> None:
    inner = counts.get(kind)
    if inner is None:
        return
    left = inner.get(key, 0) - 1
    if left > 0:
        inner[key] = left
    else:
        inner.pop(key, None)
        if not inner:
            del counts[kind]


def _to_tuple(obj: str, rel: str, user: str, meta: TupleMeta | None) -> RelationTuple:
    if meta is None:
        return RelationTuple(obj, rel, user)
    exp = None if meta.expires_at is None else datetime.fromtimestamp(meta.expires_at, UTC)
    return RelationTuple(obj, rel, user, meta.condition, meta.context, exp)


class OverlayReader:
    """A base reader plus a small index of contextual tuples (a request's extra tuples,
    OpenFGA contextual_tuples). A contextual tuple wins over a stored one with the same
    key."""

    def __init__(self, base: TupleReader, extra: MemoryTupleIndex) -> None:
        self._base = base
        self._extra = extra

    def users(self, obj: str, relation: str) -> Mapping[str, TupleMeta | None]:
        return _merge(self._base.users(obj, relation), self._extra.users(obj, relation))

    def usersets(self, obj: str, relation: str) -> Mapping[str, TupleMeta | None]:
        return _merge(self._base.usersets(obj, relation), self._extra.usersets(obj, relation))

    def objects_of_type(self, object_type: str) -> Iterable[str]:
        return dict.fromkeys(
            [*self._base.objects_of_type(object_type), *self._extra.objects_of_type(object_type)]
        )

    def keys_of_user(self, user: str) -> Iterable[str]:
        return dict.fromkeys([*self._base.keys_of_user(user), *self._extra.keys_of_user(user)])

    def users_of_type(self, user_type: str) -> Iterable[str]:
        return dict.fromkeys(
            [*self._base.users_of_type(user_type), *self._extra.users_of_type(user_type)]
        )


def _merge(
    a: Mapping[str, TupleMeta | None], b: Mapping[str, TupleMeta | None]
) -> Mapping[str, TupleMeta | None]:
    if not b:
        return a
    if not a:
        return b
    merged = dict(a)
    merged.update(b)
    return merged
