"""Differential test: the engine's check / list_objects / list_users equal a naive
least-fixpoint oracle on random small models and tuple sets.

Models are generated stratified (a relation depends only on earlier relations, or on
itself through tuples), which is where "least fixpoint" is the unambiguous meaning:
* mode "cyclic": no exclusion; usersets may point back to the relation itself, so data
  cycles (group in group) happen;
* mode "negation": exclusion allowed, every dependency strictly earlier (no cycles).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.clock import ManualClock
from tessera.rebac.engine import RebacEngine
from tessera.rebac.memory import MemoryTupleIndex
from tessera.rebac.model import (
    AuthorizationModel,
    Computed,
    Difference,
    Intersection,
    RelationDef,
    Rewrite,
    This,
    TupleToUserset,
    TypeDef,
    TypeRestriction,
    Union,
)
from tessera.rebac.ports import RelationTuple

USERS = [f"user:{i}" for i in range(4)]  # user:3 is never named by a tuple
OBJECTS = {"grp": [f"grp:{i}" for i in range(3)], "doc": [f"doc:{i}" for i in range(3)]}
# Global order of (type, relation); "p" is the parent relation used by tuple-to-userset.
PAIRS = [("grp", "p"), ("grp", "a"), ("grp", "b"), ("doc", "p"), ("doc", "a"), ("doc", "b")]


@dataclass
class Case:
    model: AuthorizationModel
    tuples: list[RelationTuple]


@st.composite
def rewrites(draw: st.DrawFn, pos: int, mode: str, depth: int = 0) -> Rewrite:
    otype, _ = PAIRS[pos]
    earlier_same = [r for t, r in PAIRS[:pos] if t == otype and r != "p"]
    options = ["this"]
    if earlier_same:
        options.append("computed")
    if any(r != "p" for t, r in PAIRS[:pos] if t == "grp") or mode == "cyclic":
        options.append("ttu")
    if depth < 2:
        options += ["union", "intersection"] + (["difference"] if mode == "negation" else [])
    kind = draw(st.sampled_from(options))
    if kind == "this":
        return This()
    if kind == "computed":
        return Computed(draw(st.sampled_from(earlier_same)))
    if kind == "ttu":
        # parent is always a grp; its relation must be earlier, or (cyclic mode) any grp
        # relation up to and including this one when this is a grp relation.
        limit = pos + 1 if mode == "cyclic" else pos
        targets = [r for t, r in PAIRS[:limit] if t == "grp" and r != "p"]
        if not targets:
            return This()
        return TupleToUserset("p", draw(st.sampled_from(targets)))
    left = draw(rewrites(pos, mode, depth + 1))
    right = draw(rewrites(pos, mode, depth + 1))
    if kind == "union":
        return Union((left, right))
    if kind == "intersection":
        return Intersection((left, right))
    return Difference(left, right)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    mode = draw(st.sampled_from(["cyclic", "negation"]))
    types: dict[str, TypeDef] = {"user": TypeDef("user", {})}
    for otype in ("grp", "doc"):
        types[otype] = TypeDef(otype, {})
    for pos, (otype, rel) in enumerate(PAIRS):
        if rel == "p":
            types[otype].relations["p"] = RelationDef("p", This(), (TypeRestriction("grp"),))
            continue
        rewrite = draw(rewrites(pos, mode))
        limit = pos + 1 if mode == "cyclic" else pos
        usersets = [TypeRestriction(t, r) for t, r in PAIRS[:limit] if r != "p"]
        pool = [TypeRestriction("user"), TypeRestriction("user", wildcard=True), *usersets]
        chosen = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
        types[otype].relations[rel] = RelationDef(rel, rewrite, tuple(chosen))
    model = AuthorizationModel("1.1", types)
    # Tuples: any that fit a relation's restrictions.
    candidates: list[RelationTuple] = []
    for otype, rel in PAIRS:
        rd = types[otype].relations[rel]
        for obj in OBJECTS[otype]:
            for r in rd.restrictions:
                if r.relation is not None:
                    candidates += [
                        RelationTuple(obj, rel, f"{o}#{r.relation}") for o in OBJECTS[r.type]
                    ]
                elif r.wildcard:
                    candidates.append(RelationTuple(obj, rel, "user:*"))
                elif r.type == "user":
                    candidates += [RelationTuple(obj, rel, u) for u in USERS[:3]]
                else:
                    candidates += [RelationTuple(obj, rel, o) for o in OBJECTS[r.type]]
    tuples = (
        draw(st.lists(st.sampled_from(candidates), max_size=14, unique_by=lambda t: t.key))
        if candidates
        else []
    )
    return Case(model, tuples)


# --- the oracle: naive fixpoint, written without looking at the engine ----------------------


def oracle(case: Case) -> dict[tuple[str, str], frozenset[str]]:
    model = case.model
    sets: dict[tuple[str, str], frozenset[str]] = {
        (o, r): frozenset() for t, r in PAIRS for o in OBJECTS[t]
    }
    by_key: dict[tuple[str, str], list[str]] = {}
    for t in case.tuples:
        by_key.setdefault((t.object, t.relation), []).append(t.user)

    def value(node: Rewrite, obj: str, otype: str, rel: str) -> frozenset[str]:
        if isinstance(node, This):
            rd = model.types[otype].relations[rel]
            out: set[str] = set()
            for u in by_key.get((obj, rel), []):
                if u == "user:*":
                    out |= set(USERS)
                elif "#" in u:
                    base, _, urel = u.partition("#")
                    out |= sets[(base, urel)]
                elif u.startswith("user:"):
                    out.add(u)
            del rd
            return frozenset(out)
        if isinstance(node, Computed):
            return sets[(obj, node.relation)]
        if isinstance(node, TupleToUserset):
            acc: set[str] = set()
            for parent in by_key.get((obj, node.tupleset), []):
                acc |= sets[(parent, node.computed)]
            return frozenset(acc)
        if isinstance(node, Union):
            return value(node.children[0], obj, otype, rel) | value(
                node.children[1], obj, otype, rel
            )
        if isinstance(node, Intersection):
            return value(node.children[0], obj, otype, rel) & value(
                node.children[1], obj, otype, rel
            )
        assert isinstance(node, Difference)
        return value(node.base, obj, otype, rel) - value(node.subtract, obj, otype, rel)

    for otype, rel in PAIRS:  # strata in order; iterate each to its fixpoint
        if rel == "p":
            continue
        rd = model.types[otype].relations[rel]
        changed = True
        while changed:
            changed = False
            for obj in OBJECTS[otype]:
                new = value(rd.rewrite, obj, otype, rel)
                if new != sets[(obj, rel)]:
                    sets[(obj, rel)] = new
                    changed = True
    return sets


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_engine_equals_oracle(case: Case) -> None:
    expected = oracle(case)
    engine = RebacEngine(case.model, MemoryTupleIndex(case.tuples), ManualClock())
    wildcard_tuples = any(t.user == "user:*" for t in case.tuples)
    for otype, rel in PAIRS:
        if rel == "p":
            continue
        for user in USERS:
            want = sorted(o for o in OBJECTS[otype] if user in expected[(o, rel)])
            got = [o for o in OBJECTS[otype] if engine.check(o, rel, user)]
            assert got == want, (otype, rel, user)
            listed = engine.list_objects(otype, rel, user)
            assert listed.complete
            assert list(listed.items) == want
        for obj in OBJECTS[otype]:
            users = engine.list_users(obj, rel, ["user"]).items
            concrete = {u for u in users if u != "user:*"}
            assert concrete <= expected[(obj, rel)]
            if not wildcard_tuples:
                assert sorted(users) == sorted(expected[(obj, rel)])
            elif "user:*" in users:
                assert "user:3" in expected[(obj, rel)]
