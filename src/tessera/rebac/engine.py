"""Check, list-objects and list-users over a ``TupleReader`` (OpenFGA semantics).

The engine validates requests and contextual tuples, then gives each request one
``Resolution`` (resolve.py: the walk, cycles, memo, conditions, limits). List-objects
walks tuples backwards from the user to find candidates and checks each; list-users with
a type filter expands the relation forward into a user set (expand.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tessera.clock import Clock
from tessera.rebac.conditions import compile_conditions
from tessera.rebac.errors import (
    InvalidRequest,
    InvalidTuple,
    ResolutionLimitError,
    UnknownRelation,
    UnknownType,
)
from tessera.rebac.memory import MemoryTupleIndex, OverlayReader
from tessera.rebac.model import AuthorizationModel
from tessera.rebac.ports import RelationTuple, TupleReader, is_valid_object_id
from tessera.rebac.resolve import (
    CompiledModel,
    CompiledRelation,
    Limits,
    Resolution,
    split_user,
)

__all__ = ["Limits", "ListResult", "RebacEngine"]

_NO_RELATIONS: dict[str, Any] = {}
_USER_CACHE_SIZE = 65_536


@dataclass(frozen=True, slots=True)
class ListResult:
    """Objects or users found. ``complete`` is False only when ``max_results`` cut the
    list; the items returned are then still all correct."""

    items: tuple[str, ...]
    complete: bool = True


class RebacEngine:
    """Answers relationship queries for one model over one reader.

    ``check``/``list_objects``/``list_users`` follow OpenFGA's Check, ListObjects and
    ListUsers APIs (openfga.dev/api/service); ``expires_at`` on tuples is a Tessera
    extension: an expired tuple is invisible from that instant (``Clock.now()``).
    """

    def __init__(
        self,
        model: AuthorizationModel,
        reader: TupleReader,
        clock: Clock,
        limits: Limits | None = None,
    ) -> None:
        self.model = model
        self.reader = reader
        self.clock = clock
        self.limits = limits or Limits()
        self._conditions = compile_conditions(model.conditions)
        self._rels: dict[tuple[str, str], CompiledRelation] = {
            (td.name, rd.name): CompiledRelation(rd.name, rd.rewrite, rd.restrictions)
            for td in model.types.values()
            for rd in td.relations.values()
        }
        self._compiled = CompiledModel(self._rels, self._conditions)
        self._by_type = self._compiled.by_type
        self._valid_users: dict[str, None] = {}

    # -- validation ----------------------------------------------------------------------

    def _object(self, obj: str) -> str:
        t, colon, i = obj.partition(":")
        if not t or not colon or not i or "#" in obj or i == "*":
            raise InvalidRequest(f"malformed object {obj!r}")
        if t not in self.model.types:
            raise UnknownType(f"type {t!r} is not defined in the model")
        return t

    def _user(self, user: str) -> None:
        if user in self._valid_users:
            return
        t, _, urel = split_user(user)
        td = self.model.types.get(t)
        if td is None:
            raise InvalidRequest(f"user type {t!r} is not defined in the model")
        if urel is not None and urel not in td.relations:
            raise InvalidRequest(f"relation {urel!r} is not defined on type {t!r}")
        if len(self._valid_users) >= _USER_CACHE_SIZE:
            self._valid_users.clear()
        self._valid_users[user] = None

    def validate_tuple(self, t: RelationTuple) -> None:
        """A tuple must fit the model's type restrictions (OpenFGA Write validation)."""
        try:
            otype = self._object(t.object)
            utype, uid, urel = split_user(t.user)
        except InvalidRequest as exc:
            raise InvalidTuple(exc.message) from None
        rel = self._rels.get((otype, t.relation))
        if rel is None:
            raise InvalidTuple(f"relation {t.relation!r} is not defined on type {otype!r}")
        if t.condition is not None and t.condition not in self._conditions:
            raise InvalidTuple(f"condition {t.condition!r} is not defined")
        if not is_valid_object_id(t.object.partition(":")[2]) or (
            uid != "*" and not is_valid_object_id(uid)
        ):
            raise InvalidTuple(f"invalid object id in {t.object!r} or {t.user!r}")
        cond = t.condition
        if urel is not None:
            ok = (utype, urel, cond) in rel.usersets
        elif uid == "*":
            ok = (utype, cond) in rel.wild
        else:
            ok = (utype, cond) in rel.direct
        if not ok:
            raise InvalidTuple(
                f"user {t.user!r} may not be assigned to "
                f"{otype}#{t.relation}" + (f" with {cond}" if cond else "")
            )

    def _reader(self, contextual: Iterable[RelationTuple]) -> TupleReader:
        if not contextual:
            return self.reader
        extra = list(contextual)
        if not extra:
            return self.reader
        for t in extra:
            self.validate_tuple(t)
        return OverlayReader(self.reader, MemoryTupleIndex(extra))

    def _run(
        self, user: str, context: Mapping[str, Any] | None, contextual: Iterable[RelationTuple]
    ) -> Resolution:
        return Resolution(
            self._compiled,
            self._reader(contextual),
            user,
            context,
            self.clock.timestamp(),
            self.limits,
        )

    # -- queries ------------------------------------------------------------------------

    def check(
        self,
        object: str,
        relation: str,
        user: str,
        *,
        context: Mapping[str, Any] | None = None,
        contextual_tuples: Iterable[RelationTuple] = (),
    ) -> bool:
        """OpenFGA Check: is ``user`` related to ``object`` as ``relation``?"""
        otype = self._object(object)
        if relation not in self._by_type.get(otype, _NO_RELATIONS):
            raise InvalidRequest(f"relation {relation!r} is not defined on type {otype!r}")
        if user not in self._valid_users:
            self._user(user)
        run = Resolution(
            self._compiled,
            self._reader(contextual_tuples) if contextual_tuples else self.reader,
            user,
            context,
            self.clock.timestamp(),
            self.limits,
        )
        return run.resolve(object, relation, 0) is True

    def list_objects(
        self,
        object_type: str,
        relation: str,
        user: str,
        *,
        context: Mapping[str, Any] | None = None,
        contextual_tuples: Iterable[RelationTuple] = (),
        max_results: int | None = None,
    ) -> ListResult:
        """OpenFGA ListObjects: every ``object_type`` object ``user`` has ``relation`` on."""
        if object_type not in self.model.types:
            raise UnknownType(f"type {object_type!r} is not defined in the model")
        if (object_type, relation) not in self._rels:
            raise UnknownRelation(f"relation {relation!r} is not defined on {object_type!r}")
        self._user(user)
        run = self._run(user, context, contextual_tuples)
        candidates = self._reverse_candidates(run.reader, object_type, user)
        found: list[str] = []
        for obj in candidates:
            run.visiting.clear()
            run.work = 0
            if run.resolve(obj, relation, 0) is True:
                found.append(obj)
                if max_results is not None and len(found) >= max_results:
                    return ListResult(tuple(found), complete=obj == candidates[-1])
        return ListResult(tuple(found))

    def list_users(
        self,
        object: str,
        relation: str,
        user_filters: Iterable[str],
        *,
        context: Mapping[str, Any] | None = None,
        contextual_tuples: Iterable[RelationTuple] = (),
        max_results: int | None = None,
    ) -> ListResult:
        """OpenFGA ListUsers: users of the filter types (``user`` or ``group#member``)
        related to ``object``. A user reached only through a wildcard is reported as the
        wildcard (``user:*``), not one by one."""
        otype = self._object(object)
        if (otype, relation) not in self._rels:
            raise UnknownRelation(f"relation {relation!r} is not defined on {otype!r}")
        filters: list[tuple[str, str | None]] = []
        for f in user_filters:
            ft, _, fr = f.partition("#")
            if ft not in self.model.types:
                raise UnknownType(f"type {ft!r} is not defined in the model")
            if fr and (ft, fr) not in self._rels:
                raise UnknownRelation(f"relation {fr!r} is not defined on {ft!r}")
            filters.append((ft, fr or None))
        run = self._run(object, context, contextual_tuples)
        found: list[str] = []
        for ftype, frel in filters:
            if frel is None:
                from tessera.rebac.expand import Expander

                found.extend(Expander(run, ftype).expand(object, relation, 0).listing(ftype))
                continue
            ids = dict.fromkeys(
                [*run.reader.users_of_type(ftype), *run.reader.objects_of_type(ftype)]
            )
            candidates = sorted(i + "#" + frel for i in ids)
            self._budget(len(candidates))
            for cand in candidates:
                run.set_user(cand)
                run.visiting.clear()
                run.work = 0
                if run.resolve(object, relation, 0) is True:
                    found.append(cand)
        items = tuple(sorted(dict.fromkeys(found)))
        if max_results is not None and len(items) > max_results:
            return ListResult(items[:max_results], complete=False)
        return ListResult(items)

    def _reverse_candidates(self, reader: TupleReader, object_type: str, user: str) -> list[str]:
        """Objects of ``object_type`` that some chain of tuples connects to ``user``: a
        superset of the answer (every derivation ends in such a chain), then checked one
        by one. Walks tuples backwards from the user: a reached object stands for all
        its usersets (``obj#r`` for every relation r, since rewrites stay on the object)
        and for itself as a parent in tuple-to-userset."""
        base, sep, _ = user.partition("#")
        start = [user, base] if sep else [user, base.partition(":")[0] + ":*"]
        seen = set(start)
        stack = list(start)
        found: set[str] = set()
        if sep and base.partition(":")[0] == object_type:
            found.add(base)
        limit = self.limits.max_candidates
        while stack:
            for key in reader.keys_of_user(stack.pop()):
                obj = key.rpartition("#")[0]
                if obj in seen:
                    continue
                otype = obj.partition(":")[0]
                if otype == object_type:
                    found.add(obj)
                seen.add(obj)
                stack.append(obj)
                for r in self._by_type.get(otype, _NO_RELATIONS):
                    userset = obj + "#" + r
                    if userset not in seen:
                        seen.add(userset)
                        stack.append(userset)
                if len(seen) > limit:
                    self._budget(len(seen))
        return sorted(found)

    def _budget(self, n: int) -> None:
        if n > self.limits.max_candidates:
            raise ResolutionLimitError(
                f"{n} candidates exceed the list budget of {self.limits.max_candidates}",
                code="rebac_list_budget_exceeded",
            )
