"""Resolution of one request: is the request's user in (object, relation)?

A depth-first walk of the rewrite tree (OpenFGA Check semantics) with:

* cycles: an (object, relation) already on the walk's stack answers *unknown*; unknowns
  combine by Kleene logic (``true or unknown`` is true, ``false and unknown`` is false)
  and an unknown final answer is "no", as OpenFGA answers cyclic queries;
* memo: every definite answer for the request's user is remembered for the request, and
  list-objects shares it across candidates;
* conditions: a condition that cannot be evaluated (missing parameter) is an error only
  when the answer depends on it (``a or b`` with ``b`` true is true);
* limits: every dispatch (computed relation, userset, tuple-to-userset hop) adds one to
  the depth, at most ``Limits.max_depth`` (25, as OpenFGA); every resolved
  (object, relation) costs one unit of ``Limits.max_work``. Running out raises
  ``ResolutionLimitError``: never a guess, never a silently short list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tessera.rebac.conditions import CompiledCondition
from tessera.rebac.errors import ConditionError, InvalidRequest, ResolutionLimitError
from tessera.rebac.model import (
    Computed,
    Difference,
    Intersection,
    Rewrite,
    This,
    TupleToUserset,
    TypeRestriction,
    Union,
)
from tessera.rebac.ports import TupleMeta, TupleReader

_MISSING: Any = object()
_NO_RELATIONS: dict[str, Any] = {}
_NO_NAMES: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Limits:
    max_depth: int = 25
    max_work: int = 200_000  # (object, relation) resolutions per request
    max_candidates: int = 1_000_000  # list requests: candidates examined


class CompiledRelation:
    """A relation compiled for resolution."""

    __slots__ = (
        "direct",
        "direct_plain",
        "is_this",
        "name",
        "rewrite",
        "usersets",
        "usersets_plain",
        "wild",
    )

    def __init__(
        self, name: str, rewrite: Rewrite, restrictions: Iterable[TypeRestriction]
    ) -> None:
        self.name = name
        self.rewrite = rewrite
        self.is_this = isinstance(rewrite, This)
        direct: set[tuple[str, str | None]] = set()
        wild: set[tuple[str, str | None]] = set()
        usersets: set[tuple[str, str, str | None]] = set()
        for r in restrictions:
            if r.relation is not None:
                usersets.add((r.type, r.relation, r.condition))
            elif r.wildcard:
                wild.add((r.type, r.condition))
            else:
                direct.add((r.type, r.condition))
        self.direct = frozenset(direct)
        self.wild = frozenset(wild)
        # Allowed (user type[, user relation], condition) of tuples: a stored tuple that
        # does not fit the current model is ignored, as OpenFGA ignores it.
        self.usersets = frozenset(usersets)
        # The same for unconditional tuples, shaped for lookups without building tuples.
        self.direct_plain = frozenset(t for t, c in direct if c is None)
        plain: dict[str, set[str]] = {}
        for utype, urel, cond in usersets:
            if cond is None:
                plain.setdefault(utype, set()).add(urel)
        self.usersets_plain: dict[str, frozenset[str]] = {
            t: frozenset(rs) for t, rs in plain.items()
        }


def split_user(user: str) -> tuple[str, str, str | None]:
    """``type:id`` / ``type:*`` / ``type:id#rel`` → (type, id, rel); raises InvalidRequest."""
    base, sep, rel = user.partition("#")
    t, colon, i = base.partition(":")
    if not t or not colon or not i or ":" in i or (sep and not rel) or "#" in rel:
        raise InvalidRequest(f"malformed user {user!r}")
    return t, i, (rel if sep else None)


class CompiledModel:
    """Per-model lookup tables, built once per engine."""

    __slots__ = ("by_type", "conditions", "rels")

    def __init__(
        self,
        rels: dict[tuple[str, str], CompiledRelation],
        conditions: dict[str, CompiledCondition],
    ) -> None:
        self.rels = rels
        self.conditions = conditions
        self.by_type: dict[str, dict[str, CompiledRelation]] = {}
        for (tname, rname), rel in rels.items():
            self.by_type.setdefault(tname, {})[rname] = rel


class Resolution:
    """State of one request: the user, context, memo and budgets."""

    __slots__ = (
        "by_type",
        "conditions",
        "context",
        "max_depth",
        "max_work",
        "memo",
        "now",
        "reader",
        "rels",
        "user",
        "user_is_userset",
        "user_type",
        "visiting",
        "wildcard_ok",
        "work",
    )

    def __init__(
        self,
        compiled: CompiledModel,
        reader: TupleReader,
        user: str,
        context: Mapping[str, Any] | None,
        now: float,
        limits: Limits,
    ) -> None:
        self.reader = reader
        self.rels = compiled.rels
        self.by_type = compiled.by_type
        self.conditions = compiled.conditions
        self.user = user
        self.user_type = user.partition(":")[0]
        self.user_is_userset = "#" in user
        self.context = context
        self.now = now
        self.max_depth = limits.max_depth
        self.max_work = limits.max_work
        self.work = 0
        self.memo: dict[str, bool] = {}
        self.visiting: set[str] = set()
        self.wildcard_ok = True

    def set_user(self, user: str, *, wildcard_ok: bool = True) -> None:
        self.user = user
        self.user_type = user.partition(":")[0]
        self.user_is_userset = "#" in user
        self.memo = {}
        self.wildcard_ok = wildcard_ok

    # -- tuples -----------------------------------------------------------------------

    def tuple_ok(self, meta: TupleMeta) -> bool:
        if meta.expires_at is not None and meta.expires_at <= self.now:
            return False
        if meta.condition is None:
            return True
        cond: CompiledCondition | None = self.conditions.get(meta.condition)
        if cond is None:
            return False
        return cond.evaluate(meta.context, self.context)

    # -- resolution -------------------------------------------------------------------

    def resolve(self, obj: str, relation: str, depth: int) -> bool | None:
        """True / False, or None when the answer hinges on a cycle (OpenFGA answers such
        a query with "no")."""
        key = obj + "#" + relation
        if self.user_is_userset and key == self.user:
            return True
        known = self.memo.get(key)
        if known is not None:
            return known
        if key in self.visiting:
            return None
        if depth > self.max_depth:
            raise ResolutionLimitError(
                f"resolution depth exceeded {self.max_depth}", code="rebac_depth_exceeded"
            )
        self.work += 1
        if self.work > self.max_work:
            raise ResolutionLimitError(
                f"resolution work budget of {self.max_work} exhausted", code="rebac_work_exceeded"
            )
        rel = self.by_type.get(obj.partition(":")[0], _NO_RELATIONS).get(relation)
        if rel is None:
            return False
        self.visiting.add(key)
        try:
            if rel.is_this:
                result = self.direct(obj, relation, rel, depth)
            else:
                result = self.eval(rel.rewrite, obj, relation, rel, depth)
        finally:
            self.visiting.discard(key)
        # INVARIANT: a definite answer reached with some sub-answers unknown holds
        # whatever those unknowns turn out to be (Kleene logic), so it may be memoised.
        if result is not None:
            self.memo[key] = result
        return result

    def eval(
        self, node: Rewrite, obj: str, relation: str, rel: CompiledRelation, depth: int
    ) -> bool | None:
        if isinstance(node, This):
            return self.direct(obj, relation, rel, depth)
        if isinstance(node, Computed):
            return self.resolve(obj, node.relation, depth + 1)
        if isinstance(node, TupleToUserset):
            return self.ttu(obj, node, depth)
        err: ConditionError | None = None
        unknown = False
        r: bool | None
        if isinstance(node, Union):
            for child in node.children:
                try:
                    r = self.eval(child, obj, relation, rel, depth)
                except ConditionError as exc:
                    err = err or exc
                    continue
                if r:
                    return True
                if r is None:
                    unknown = True
            if err is not None:
                raise err
            return None if unknown else False
        if isinstance(node, Intersection):
            for child in node.children:
                try:
                    r = self.eval(child, obj, relation, rel, depth)
                except ConditionError as exc:
                    err = err or exc
                    continue
                if r is False:
                    return False
                if r is None:
                    unknown = True
            if err is not None:
                raise err
            return None if unknown else True
        assert isinstance(node, Difference)  # noqa: S101 - exhaustive union, for mypy
        base: bool | None = None
        try:
            base = self.eval(node.base, obj, relation, rel, depth)
            if base is False:
                return False
        except ConditionError as exc:
            err = exc
        sub = self.eval(node.subtract, obj, relation, rel, depth)
        if sub:
            return False
        if err is not None:
            raise err
        if sub is None or base is None:
            return None
        return True

    def direct(self, obj: str, relation: str, rel: CompiledRelation, depth: int) -> bool | None:
        reader = self.reader
        err: ConditionError | None = None
        user = self.user
        if self.user_is_userset:
            meta = reader.usersets(obj, relation).get(user, _MISSING)
            if meta is not _MISSING:
                t, _, rest = user.partition(":")
                ur = rest.partition("#")[2]
                cond = meta.condition if meta is not None else None
                if (t, ur, cond) in rel.usersets:
                    try:
                        if meta is None or self.tuple_ok(meta):
                            return True
                    except ConditionError as exc:
                        err = exc
        else:
            bucket = reader.users(obj, relation)
            if bucket:
                ut = self.user_type
                meta = bucket.get(user, _MISSING)
                if meta is None and ut in rel.direct_plain and not user.endswith(":*"):
                    return True
                if meta is not _MISSING:
                    cond = meta.condition if meta is not None else None
                    allowed = rel.wild if user.endswith(":*") else rel.direct
                    if (ut, cond) in allowed:
                        try:
                            if meta is None or self.tuple_ok(meta):
                                return True
                        except ConditionError as exc:
                            err = exc
                if self.wildcard_ok and rel.wild and not user.endswith(":*"):
                    meta = bucket.get(ut + ":*", _MISSING)
                    if meta is not _MISSING:
                        cond = meta.condition if meta is not None else None
                        if (ut, cond) in rel.wild:
                            try:
                                if meta is None or self.tuple_ok(meta):
                                    return True
                            except ConditionError as exc:
                                err = err or exc
        unknown = False
        if rel.usersets:
            sets = reader.usersets(obj, relation)
            if sets:
                plain = rel.usersets_plain
                for userset, meta in list(sets.items()):
                    base, _, urel = userset.partition("#")
                    t = base.partition(":")[0]
                    if meta is None:
                        if urel not in plain.get(t, _NO_NAMES):
                            continue
                    elif (t, urel, meta.condition) not in rel.usersets:
                        continue
                    try:
                        if meta is not None and not self.tuple_ok(meta):
                            continue
                        r = self.resolve(base, urel, depth + 1)
                    except ConditionError as exc:
                        err = err or exc
                        continue
                    if r:
                        return True
                    if r is None:
                        unknown = True
        if err is not None:
            raise err
        return None if unknown else False

    def ttu(self, obj: str, node: TupleToUserset, depth: int) -> bool | None:
        by_type = self.by_type
        tupleset = by_type.get(obj.partition(":")[0], _NO_RELATIONS).get(node.tupleset)
        if tupleset is None:
            return False
        err: ConditionError | None = None
        unknown = False
        computed = node.computed
        parents = self.reader.users(obj, node.tupleset)
        for parent, meta in list(parents.items()):
            ptype, _, pid = parent.partition(":")
            if pid == "*":
                continue
            if meta is None:
                if ptype not in tupleset.direct_plain:
                    continue
            elif (ptype, meta.condition) not in tupleset.direct:
                continue
            if computed not in by_type.get(ptype, _NO_RELATIONS):
                continue
            try:
                if meta is not None and not self.tuple_ok(meta):
                    continue
                r = self.resolve(parent, computed, depth + 1)
            except ConditionError as exc:
                err = err or exc
                continue
            if r:
                return True
            if r is None:
                unknown = True
        if err is not None:
            raise err
        return None if unknown else False
