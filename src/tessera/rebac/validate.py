"""Semantic validation of a parsed model (the rules OpenFGA enforces on write).

Issue kinds use OpenFGA's ``errorType`` names so the language corpus can be compared:
``reserved-type-keywords``, ``reserved-relation-keywords``, ``invalid-name``,
``duplicated-error``, ``missing-definition``, ``invalid-type``, ``invalid-relation-type``,
``invalid-relation-on-tupleset``, ``tupleuserset-not-direct``, ``relation-no-entry-point``,
``condition-not-defined``, ``condition-not-used``.
"""

from __future__ import annotations

import re

import cel

from tessera.rebac.errors import ModelError, ModelIssue
from tessera.rebac.model import (
    AuthorizationModel,
    Computed,
    Condition,
    Difference,
    Intersection,
    Pos,
    RelationDef,
    Rewrite,
    This,
    TupleToUserset,
    TypeDef,
    Union,
    walk,
)

_TYPE_NAME = re.compile(r"[^:#@*\s]{1,254}")
_RELATION_NAME = re.compile(r"[^:#@*\s]{1,50}")
_RESERVED = frozenset({"self", "this"})


def _issue(kind: str, message: str, pos: Pos) -> ModelIssue:
    return ModelIssue(kind, message, pos.line, pos.column, pos.end, pos.file)


def model_issues(model: AuthorizationModel) -> list[ModelIssue]:
    """Every semantic problem of ``model`` (empty when valid)."""
    issues: list[ModelIssue] = []
    used_conditions: set[str] = set()
    for td in model.types.values():
        if td.name in _RESERVED:
            issues.append(
                _issue("reserved-type-keywords", "a type cannot be named 'self' or 'this'.", td.pos)
            )
        elif not _TYPE_NAME.fullmatch(td.name):
            issues.append(
                _issue("invalid-name", f"type '{td.name}' does not match naming rule", td.pos)
            )
        for rd in td.relations.values():
            if rd.name in _RESERVED:
                issues.append(
                    _issue(
                        "reserved-relation-keywords",
                        "a relation cannot be named 'self' or 'this'.",
                        rd.pos,
                    )
                )
            elif not _RELATION_NAME.fullmatch(rd.name):
                issues.append(
                    _issue(
                        "invalid-name", f"relation '{rd.name}' does not match naming rule", rd.pos
                    )
                )
            issues.extend(_relation_issues(model, td, rd, used_conditions))
    for cond in model.conditions.values():
        issues.extend(_condition_issues(cond))
        if cond.name not in used_conditions:
            issues.append(
                _issue(
                    "condition-not-used",
                    f"`{cond.name}` condition is not used in the model.",
                    cond.pos,
                )
            )
    if not issues:
        issues.extend(_entrypoint_issues(model))
    return issues


_PARAM_TYPES = frozenset(
    {
        "int",
        "uint",
        "double",
        "bool",
        "string",
        "bytes",
        "duration",
        "timestamp",
        "ipaddress",
        "any",
        "list",
        "map",
    }
)


def _condition_issues(cond: Condition) -> list[ModelIssue]:
    out: list[ModelIssue] = []
    for p in cond.params.values():
        generic_ok = (p.generic is None) == (p.type_name not in ("list", "map")) and (
            p.generic is None or p.generic in _PARAM_TYPES - {"list", "map"}
        )
        if p.type_name not in _PARAM_TYPES or not generic_ok:
            out.append(
                _issue(
                    "invalid-condition",
                    f"condition `{cond.name}`: parameter `{p.name}` has an unsupported type",
                    cond.pos,
                )
            )
    try:
        cel.compile(cond.expression)
    except ValueError as exc:
        out.append(_issue("invalid-condition", f"condition `{cond.name}`: {exc}", cond.pos))
    return out


def validate_model(model: AuthorizationModel) -> None:
    """Raise ``ModelError`` listing every problem, or return when the model is valid."""
    issues = model_issues(model)
    if issues:
        raise ModelError(issues)


def _relation_issues(
    model: AuthorizationModel, td: TypeDef, rd: RelationDef, used_conditions: set[str]
) -> list[ModelIssue]:
    out: list[ModelIssue] = []
    seen: set[str] = set()
    first_pos: dict[str, Pos] = {}
    for r in rd.restrictions:
        label = r.label() + (f" with {r.condition}" if r.condition else "")
        if label in seen:
            out.append(
                _issue(
                    "duplicated-error",
                    f"the type restriction `{r.label()}` is a "
                    f"duplicate in the relation `{rd.name}`.",
                    first_pos[label],
                )
            )
        seen.add(label)
        first_pos.setdefault(label, r.pos)
        target = model.types.get(r.type)
        if target is None:
            out.append(_issue("invalid-type", f"`{r.type}` is not a valid type.", r.pos))
        elif r.relation is not None and r.relation not in target.relations:
            out.append(
                _issue(
                    "invalid-relation-type",
                    f"`{r.relation}` is not a valid relation for `{r.type}`.",
                    r.pos,
                )
            )
        if r.condition is not None:
            used_conditions.add(r.condition)
            if r.condition not in model.conditions:
                out.append(
                    _issue(
                        "condition-not-defined",
                        f"`{r.condition}` is not a defined condition in the model.",
                        r.condition_pos,
                    )
                )
    out.extend(_duplicate_partials(rd))
    for node in walk(rd.rewrite):
        if isinstance(node, Computed) and node.relation not in td.relations:
            out.append(
                _issue(
                    "missing-definition",
                    f"the relation `{node.relation}` does not exist.",
                    node.pos,
                )
            )
        elif isinstance(node, TupleToUserset):
            out.extend(_ttu_issues(model, td, node))
    return out


def _duplicate_partials(rd: RelationDef) -> list[ModelIssue]:
    out: list[ModelIssue] = []
    for node in walk(rd.rewrite):
        children: tuple[Rewrite, ...]
        if isinstance(node, Union | Intersection):
            children = node.children
        elif isinstance(node, Difference):
            children = (node.base, node.subtract)
        else:
            continue
        seen: set[Rewrite] = set()
        for child in children:
            if isinstance(child, Computed | TupleToUserset):
                if child in seen:
                    first = next(c for c in children if c == child)
                    text = (
                        child.relation
                        if isinstance(child, Computed)
                        else f"{child.computed} from {child.tupleset}"
                    )
                    out.append(
                        _issue(
                            "duplicated-error",
                            f"the partial relation definition "
                            f"`{text}` is a duplicate in the relation "
                            f"`{rd.name}`.",
                            first.pos,
                        )
                    )
                seen.add(child)
    return out


def _ttu_issues(model: AuthorizationModel, td: TypeDef, node: TupleToUserset) -> list[ModelIssue]:
    tupleset = td.relations.get(node.tupleset)
    if tupleset is None:
        return [
            _issue(
                "invalid-relation-type",
                f"`{node.tupleset}` is not a valid relation for `{td.name}`.",
                node.pos,
            )
        ]
    direct_only = isinstance(tupleset.rewrite, This) and all(
        r.relation is None and not r.wildcard for r in tupleset.restrictions
    )
    if not direct_only:
        return [
            _issue(
                "tupleuserset-not-direct",
                f"`{node.tupleset}` relation used inside from allows only direct relation.",
                node.tupleset_pos,
            )
        ]
    types = [r.type for r in tupleset.restrictions]
    if any(t in model.types and node.computed in model.types[t].relations for t in types):
        return []
    return [
        _issue(
            "invalid-relation-on-tupleset",
            f"the `{node.computed}` relation definition on type `{td.name}` is not "
            f"valid: `{node.computed}` does not exist on `{node.tupleset}`, which is "
            f"of type `{t}`.",
            node.pos,
        )
        for t in types
    ]


# --- entry points -------------------------------------------------------------------------


def _entrypoint_issues(model: AuthorizationModel) -> list[ModelIssue]:
    """A relation must be satisfiable by some finite chain of tuples ending in a concrete
    user (OpenFGA: "impossible relation ... (no entrypoint)" / "(potential loop)")."""
    out: list[ModelIssue] = []
    looping = _computed_cycles(model)
    for td in model.types.values():
        for rd in td.relations.values():
            if (td.name, rd.name) in looping and any(isinstance(n, This) for n in walk(rd.rewrite)):
                out.append(
                    _issue(
                        "relation-no-entry-point",
                        f"`{rd.name}` is an impossible relation for `{td.name}` (potential loop).",
                        rd.pos,
                    )
                )
            elif not _has_entry(model, td.name, rd, rd.rewrite, {(td.name, rd.name)}):
                out.append(
                    _issue(
                        "relation-no-entry-point",
                        f"`{rd.name}` is an impossible relation for `{td.name}`.",
                        rd.pos,
                    )
                )
    return out


def _relation_entry(
    model: AuthorizationModel, type_name: str, relation: str, visiting: set[tuple[str, str]]
) -> bool:
    key = (type_name, relation)
    rd = model.relation(type_name, relation)
    if rd is None or key in visiting:
        return False
    visiting.add(key)
    try:
        return _has_entry(model, type_name, rd, rd.rewrite, visiting)
    finally:
        visiting.discard(key)


def _has_entry(
    model: AuthorizationModel,
    type_name: str,
    rd: RelationDef,
    node: Rewrite,
    visiting: set[tuple[str, str]],
) -> bool:
    if isinstance(node, This):
        for r in rd.restrictions:
            if r.relation is None:
                return True
            if _relation_entry(model, r.type, r.relation, visiting):
                return True
        return False
    if isinstance(node, Computed):
        return _relation_entry(model, type_name, node.relation, visiting)
    if isinstance(node, TupleToUserset):
        ts = model.relation(type_name, node.tupleset)
        for r in ts.restrictions if ts else ():
            if _relation_entry(model, r.type, node.computed, visiting):
                return True
        return False
    if isinstance(node, Union):
        return any(_has_entry(model, type_name, rd, c, visiting) for c in node.children)
    if isinstance(node, Intersection):
        return all(_has_entry(model, type_name, rd, c, visiting) for c in node.children)
    # A difference needs an entry point on both sides, as OpenFGA's validator requires.
    return _has_entry(model, type_name, rd, node.base, visiting) and _has_entry(
        model, type_name, rd, node.subtract, visiting
    )


def _computed_cycles(model: AuthorizationModel) -> set[tuple[str, str]]:
    """Relations on a cycle of same-object references (``x: [user] or y``, ``y: [user]
    or x``). OpenFGA rejects such a cycle as a potential loop when the relation also has a
    direct assignment; cycles of pure rewrites are judged by the entry-point rule."""
    edges: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for td in model.types.values():
        for rd in td.relations.values():
            edges[(td.name, rd.name)] = [
                (td.name, n.relation)
                for n in walk(rd.rewrite)
                if isinstance(n, Computed) and n.relation in td.relations
            ]
    out: set[tuple[str, str]] = set()
    for start in edges:
        # Is start reachable from itself? Models are small; a DFS per node is enough.
        stack = list(edges[start])
        seen: set[tuple[str, str]] = set()
        while stack:
            node = stack.pop()
            if node == start:
                out.add(start)
                break
            if node in seen:
                continue
            seen.add(node)
            stack.extend(edges.get(node, ()))
    return out
