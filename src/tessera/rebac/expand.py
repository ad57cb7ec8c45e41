"""Forward expansion of a relation into the set of users of one type (ListUsers).

A set of users is finite (``wild=False``: exactly ``members``) or co-finite
(``wild=True``: everyone of the type except ``members``), so union, intersection and
difference stay exact even with wildcards. ``explicit`` remembers concrete users named by
tuples, so ``[user, user:*]`` with ``user:jon`` lists both ``user:*`` and ``user:jon``,
as OpenFGA does.
"""

from __future__ import annotations

from dataclasses import dataclass

from tessera.rebac.errors import ResolutionLimitError
from tessera.rebac.model import (
    Computed,
    Difference,
    Intersection,
    Rewrite,
    This,
    TupleToUserset,
    Union,
)
from tessera.rebac.resolve import Resolution


@dataclass(frozen=True, slots=True)
class UserSet:
    wild: bool
    members: frozenset[str]
    explicit: frozenset[str] = frozenset()

    def contains(self, user: str) -> bool:
        return (user not in self.members) if self.wild else (user in self.members)

    def listing(self, user_type: str) -> list[str]:
        if not self.wild:
            return sorted(self.members)
        return [user_type + ":*", *sorted(u for u in self.explicit if self.contains(u))]


EMPTY_SET = UserSet(False, frozenset())


def union(a: UserSet, b: UserSet) -> UserSet:
    e = a.explicit | b.explicit
    if not a.wild and not b.wild:
        return UserSet(False, a.members | b.members, e)
    if a.wild and b.wild:
        return UserSet(True, a.members & b.members, e)
    w, f = (a, b) if a.wild else (b, a)
    return UserSet(True, w.members - f.members, e)


def intersection(a: UserSet, b: UserSet) -> UserSet:
    e = a.explicit | b.explicit
    if not a.wild and not b.wild:
        return UserSet(False, a.members & b.members, e)
    if a.wild and b.wild:
        return UserSet(True, a.members | b.members, e)
    w, f = (a, b) if a.wild else (b, a)
    return UserSet(False, f.members - w.members, e)


def difference(a: UserSet, b: UserSet) -> UserSet:
    res = intersection(a, UserSet(not b.wild, b.members))
    return UserSet(res.wild, res.members, a.explicit)


class Expander:
    """Expands (object, relation) into a ``UserSet`` of ``user_type`` for one request.
    Shares the request state (``run``: reader, conditions, clock, budgets) with check."""

    def __init__(self, run: Resolution, user_type: str) -> None:
        self.run = run
        self.user_type = user_type
        self.memo: dict[str, UserSet] = {}
        self.visiting: set[str] = set()
        self.cycle_hits = 0

    def expand(self, obj: str, relation: str, depth: int) -> UserSet:
        run = self.run
        key = obj + "#" + relation
        known = self.memo.get(key)
        if known is not None:
            return known
        if key in self.visiting:
            self.cycle_hits += 1
            return EMPTY_SET
        if depth > run.max_depth:
            raise ResolutionLimitError(
                f"resolution depth exceeded {run.max_depth}", code="rebac_depth_exceeded"
            )
        run.work += 1
        if run.work > run.max_work:
            raise ResolutionLimitError(
                f"resolution work budget of {run.max_work} exhausted", code="rebac_work_exceeded"
            )
        rel = run.rels.get((obj.partition(":")[0], relation))
        if rel is None:
            return EMPTY_SET
        self.visiting.add(key)
        hits = self.cycle_hits
        try:
            result = self._node(rel.rewrite, obj, relation, depth)
        finally:
            self.visiting.discard(key)
        if hits == self.cycle_hits:
            self.memo[key] = result
        return result

    def _node(self, node: Rewrite, obj: str, relation: str, depth: int) -> UserSet:
        if isinstance(node, This):
            return self._direct(obj, relation, depth)
        if isinstance(node, Computed):
            return self.expand(obj, node.relation, depth + 1)
        if isinstance(node, TupleToUserset):
            return self._ttu(obj, node, depth)
        if isinstance(node, Union | Intersection):
            parts = [self._node(c, obj, relation, depth) for c in node.children]
            acc = parts[0]
            op = union if isinstance(node, Union) else intersection
            for p in parts[1:]:
                acc = op(acc, p)
            return acc
        assert isinstance(node, Difference)  # noqa: S101 - exhaustive union, for mypy
        return difference(
            self._node(node.base, obj, relation, depth),
            self._node(node.subtract, obj, relation, depth),
        )

    def _direct(self, obj: str, relation: str, depth: int) -> UserSet:
        run = self.run
        rel = run.rels[(obj.partition(":")[0], relation)]
        ut = self.user_type
        members: set[str] = set()
        wild = False
        for user, meta in list(run.reader.users(obj, relation).items()):
            t, _, uid = user.partition(":")
            if t != ut:
                continue
            cond = meta.condition if meta is not None else None
            is_wild = uid == "*"
            if (t, cond) not in (rel.wild if is_wild else rel.direct):
                continue
            if meta is not None and not run.tuple_ok(meta):
                continue
            if is_wild:
                wild = True
            else:
                members.add(user)
        acc = UserSet(wild, frozenset() if wild else frozenset(members), frozenset(members))
        if rel.usersets:
            for userset, meta in list(run.reader.usersets(obj, relation).items()):
                base, _, urel = userset.partition("#")
                cond = meta.condition if meta is not None else None
                if (base.partition(":")[0], urel, cond) not in rel.usersets:
                    continue
                if meta is not None and not run.tuple_ok(meta):
                    continue
                acc = union(acc, self.expand(base, urel, depth + 1))
        return acc

    def _ttu(self, obj: str, node: TupleToUserset, depth: int) -> UserSet:
        run = self.run
        tupleset = run.rels.get((obj.partition(":")[0], node.tupleset))
        if tupleset is None:
            return EMPTY_SET
        acc = EMPTY_SET
        for parent, meta in list(run.reader.users(obj, node.tupleset).items()):
            ptype, _, pid = parent.partition(":")
            cond = meta.condition if meta is not None else None
            if pid == "*" or (ptype, cond) not in tupleset.direct:
                continue
            if (ptype, node.computed) not in run.rels:
                continue
            if meta is not None and not run.tuple_ok(meta):
                continue
            acc = union(acc, self.expand(parent, node.computed, depth + 1))
        return acc
