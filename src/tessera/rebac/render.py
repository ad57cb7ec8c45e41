"""Render a model as DSL text (schema 1.1), the inverse of ``parse_dsl``.

The DSL can only write a direct assignment ``[...]`` in first position (the relation
itself, the first operand of its operator, recursively); a JSON model with ``this``
elsewhere raises ``ModelError`` (kind ``unsupported-dsl``), as OpenFGA's transformer does.
Direct assignment inside a union or intersection is moved to the front (both commute).
"""

from __future__ import annotations

from tessera.rebac.errors import ModelError, ModelIssue
from tessera.rebac.model import (
    AuthorizationModel,
    Computed,
    Condition,
    Intersection,
    RelationDef,
    Rewrite,
    Source,
    This,
    TupleToUserset,
    TypeDef,
    Union,
)


class _Unsupported(Exception):
    pass


def _restrictions(rd: RelationDef) -> str:
    parts = [r.label() + (f" with {r.condition}" if r.condition else "") for r in rd.restrictions]
    return "[" + ", ".join(parts) + "]"


def _render(node: Rewrite, rd: RelationDef, first: bool, nested: bool) -> str:
    if isinstance(node, This):
        if not first:
            raise _Unsupported
        return _restrictions(rd)
    if isinstance(node, Computed):
        return node.relation
    if isinstance(node, TupleToUserset):
        return f"{node.computed} from {node.tupleset}"
    if isinstance(node, Union | Intersection):
        children = list(node.children)
        direct = [c for c in children if isinstance(c, This)]
        if direct:
            children = direct + [c for c in children if not isinstance(c, This)]
        op = " or " if isinstance(node, Union) else " and "
        text = op.join(_render(c, rd, first and i == 0, True) for i, c in enumerate(children))
    else:
        text = (
            _render(node.base, rd, first, True)
            + " but not "
            + _render(node.subtract, rd, False, True)
        )
    return f"({text})" if nested else text


def _define(td: TypeDef, rd: RelationDef) -> str:
    try:
        body = _render(rd.rewrite, rd, True, False)
    except _Unsupported:
        raise ModelError(
            [
                ModelIssue(
                    "unsupported-dsl",
                    f"the '{rd.name}' relation definition under the "
                    f"'{td.name}' type is not supported by the OpenFGA DSL syntax yet",
                )
            ]
        ) from None
    return f"    define {rd.name}: {body}"


def _type_block(td: TypeDef, relations: list[RelationDef], keyword: str = "type") -> list[str]:
    lines = [f"{keyword} {td.name}"]
    if relations:
        lines.append("  relations")
    lines.extend(_define(td, rd) for rd in relations)
    return lines


def _conditions(conditions: list[Condition]) -> list[str]:
    lines: list[str] = []
    for c in conditions:
        params = ", ".join(
            p.name + ": " + p.type_name + (f"<{p.generic}>" if p.generic else "")
            for p in c.params.values()
        )
        lines.append(f"condition {c.name}({params}) {{")
        lines.extend("  " + line.strip() for line in c.expression.splitlines())
        lines.append("}")
    return lines


def render_modules(model: AuthorizationModel) -> dict[str, str]:
    """A modular model back to its module files (path → DSL text). A file holding more
    than one module cannot be written (``multiple-modules-in-file``)."""
    modules: dict[str, set[str]] = {}
    blocks: dict[str, list[str]] = {}

    def add(source: Source | None, lines: list[str]) -> None:
        if source is None:
            raise ModelError([ModelIssue("unsupported-dsl", "an element has no module")])
        modules.setdefault(source.file, set()).add(source.module)
        blocks.setdefault(source.file, []).extend(["", *lines])

    for td in model.types.values():
        add(td.source, _type_block(td, [rd for rd in td.relations.values() if not rd.source]))
        extended: dict[Source, list[RelationDef]] = {}
        for rd in td.relations.values():
            if rd.source is not None:
                extended.setdefault(rd.source, []).append(rd)
        for source, rels in extended.items():
            add(source, _type_block(td, rels, "extend type"))
    for c in model.conditions.values():
        add(c.source, _conditions([c]))
    bad = sorted(f for f, names in modules.items() if len(names) > 1)
    if bad:
        raise ModelError(
            [
                ModelIssue(
                    "multiple-modules-in-file",
                    f"file {f} would contain multiple module definitions "
                    f"({', '.join(sorted(modules[f]))}) when transforming to DSL. "
                    "Only one module can be defined per file.",
                )
                for f in bad
            ]
        )
    return {
        f: f"module {next(iter(modules[f]))}\n" + "\n".join(lines) + "\n"
        for f, lines in blocks.items()
    }


def render_dsl(model: AuthorizationModel) -> str:
    lines = ["model", "  schema " + model.schema_version]
    for td in model.types.values():
        lines.extend(_type_block(td, list(td.relations.values())))
    lines.extend(_conditions(list(model.conditions.values())))
    return "\n".join(lines) + "\n"
