"""The typed in-memory authorization model (OpenFGA schema 1.1).

A model is a set of types; each type has relations; each relation has a rewrite tree
(``This`` for direct assignment, ``Computed``, ``TupleToUserset``, ``Union``,
``Intersection``, ``Difference``) and, when the tree contains ``This``, the type
restrictions that say which users may be assigned directly. Positions (``Pos``) are kept
for error reporting and ignored by equality.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Pos:
    """0-based line and column of a symbol in the DSL text; ``end`` is exclusive."""

    line: int = 0
    column: int = 0
    end: int = 0
    file: str | None = None  # the module file, for modular models


NOWHERE = Pos()


@dataclass(frozen=True, slots=True)
class This:
    """Direct assignment (``[user, group#member]``)."""

    pos: Pos = field(default=NOWHERE, compare=False)


@dataclass(frozen=True, slots=True)
class Computed:
    """Another relation on the same object."""

    relation: str
    pos: Pos = field(default=NOWHERE, compare=False)


@dataclass(frozen=True, slots=True)
class TupleToUserset:
    """``computed from tupleset``: for each object related by ``tupleset``, its ``computed``."""

    tupleset: str
    computed: str
    pos: Pos = field(default=NOWHERE, compare=False)  # the whole "a from b"
    tupleset_pos: Pos = field(default=NOWHERE, compare=False)


@dataclass(frozen=True, slots=True)
class Union:
    children: tuple[Rewrite, ...]


@dataclass(frozen=True, slots=True)
class Intersection:
    children: tuple[Rewrite, ...]


@dataclass(frozen=True, slots=True)
class Difference:
    base: Rewrite
    subtract: Rewrite


Rewrite = This | Computed | TupleToUserset | Union | Intersection | Difference


@dataclass(frozen=True, slots=True)
class TypeRestriction:
    """One entry of a direct assignment: ``user``, ``user:*``, ``group#member``, each
    optionally ``with condition``."""

    type: str
    relation: str | None = None
    wildcard: bool = False
    condition: str | None = None
    pos: Pos = field(default=NOWHERE, compare=False)
    condition_pos: Pos = field(default=NOWHERE, compare=False)

    def label(self) -> str:
        base = self.type + (":*" if self.wildcard else "")
        if self.relation:
            base += "#" + self.relation
        return base


@dataclass(frozen=True, slots=True)
class Source:
    """Where a modular model's type, relation or condition was written."""

    module: str
    file: str


@dataclass(frozen=True, slots=True)
class RelationDef:
    name: str
    rewrite: Rewrite
    restrictions: tuple[TypeRestriction, ...] = ()
    pos: Pos = field(default=NOWHERE, compare=False)
    source: Source | None = None  # set when added by ``extend type`` in another module


@dataclass(frozen=True, slots=True)
class TypeDef:
    name: str
    relations: dict[str, RelationDef] = field(default_factory=dict)
    pos: Pos = field(default=NOWHERE, compare=False)
    source: Source | None = None


@dataclass(frozen=True, slots=True)
class ConditionParam:
    name: str
    type_name: str  # int, uint, double, bool, string, bytes, duration, timestamp,
    #                 ipaddress, any, list, map
    generic: str | None = None  # element type of list<T> / map<T>


@dataclass(frozen=True, slots=True)
class Condition:
    name: str
    params: dict[str, ConditionParam]
    expression: str
    pos: Pos = field(default=NOWHERE, compare=False)
    source: Source | None = None


@dataclass(frozen=True, slots=True)
class AuthorizationModel:
    schema_version: str
    types: dict[str, TypeDef]
    conditions: dict[str, Condition] = field(default_factory=dict)

    def relation(self, type_name: str, relation: str) -> RelationDef | None:
        td = self.types.get(type_name)
        return None if td is None else td.relations.get(relation)


def walk(rewrite: Rewrite) -> list[Rewrite]:
    """Every node of a rewrite tree, pre-order."""
    out: list[Rewrite] = []
    stack: list[Rewrite] = [rewrite]
    while stack:
        node = stack.pop()
        out.append(node)
        if isinstance(node, Union | Intersection):
            stack.extend(reversed(node.children))
        elif isinstance(node, Difference):
            stack.extend((node.subtract, node.base))
    return out
