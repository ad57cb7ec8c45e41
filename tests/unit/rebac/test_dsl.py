"""DSL parser, validator, JSON conversion and renderer."""

from __future__ import annotations

import pytest

from tessera.rebac import ModelError, model_from_json, model_to_json, parse_dsl, render_dsl
from tessera.rebac.model import Difference, This, TupleToUserset, Union

SRC = """# a comment
model
  schema 1.1
type user
type folder
  relations
    define parent: [folder]
    define viewer: [user, user:*] or viewer from parent # trailing comment
type doc
  relations
    define parent: [folder]
    define blocked: [user]
    define viewer: ([user with cond] or viewer from parent) but not blocked
condition cond(x: int, tags: list<string>) {
  x < 10 && "a" in tags
}
"""


def test_parse_shapes() -> None:
    m = parse_dsl(SRC)
    viewer = m.types["folder"].relations["viewer"]
    assert isinstance(viewer.rewrite, Union)
    assert viewer.rewrite.children == (This(), TupleToUserset("parent", "viewer"))
    assert [r.label() for r in viewer.restrictions] == ["user", "user:*"]
    doc = m.types["doc"].relations["viewer"]
    assert isinstance(doc.rewrite, Difference)
    assert doc.restrictions[0].condition == "cond"
    assert m.conditions["cond"].params["tags"].generic == "string"


def test_round_trips() -> None:
    m = parse_dsl(SRC)
    assert model_from_json(model_to_json(m)) == m
    assert parse_dsl(render_dsl(m)) == m


@pytest.mark.parametrize(
    ("text", "line", "column", "kind"),
    [
        (
            "model\n  schema 1.1\ntype user\n  relations\n    define a: [user] and b or c\n",
            4,
            26,
            "syntax",
        ),  # at the blank before 'or', as OpenFGA reports it
        (
            "model\n  schema 1.1\ntype user\n  relations\n    define a: [nope]\n",
            4,
            15,
            "invalid-type",
        ),
        (
            "model\n  schema 1.1\ntype user\n  relations\n    define a: b\n",
            4,
            14,
            "missing-definition",
        ),
        (
            "model\n  schema 1.1\ntype t\n  relations\n    define a: b\n    define b: a\n",
            4,
            11,
            "relation-no-entry-point",
        ),
    ],
)
def test_errors_carry_position_and_kind(text: str, line: int, column: int, kind: str) -> None:
    with pytest.raises(ModelError) as info:
        parse_dsl(text)
    issue = info.value.issues[0]
    assert (issue.line, issue.column, issue.kind) == (line, column, kind)
    assert info.value.code == "rebac_invalid_model"


def test_bad_cel_is_a_model_error() -> None:
    from tessera.clock import ManualClock
    from tessera.rebac import MemoryTupleIndex, RebacEngine

    text = (
        "model\n  schema 1.1\ntype user\ntype d\n  relations\n"
        "    define v: [user with c]\ncondition c(x: int) {\n  x <\n}\n"
    )
    with pytest.raises(ModelError) as info:
        parse_dsl(text)
    assert [i.kind for i in info.value.issues] == ["invalid-condition"]
    unvalidated = parse_dsl(text, validate=False)
    with pytest.raises(ModelError):
        RebacEngine(unvalidated, MemoryTupleIndex(), ManualClock())


def test_braces_inside_cel_strings_do_not_end_the_condition() -> None:
    m = parse_dsl(
        "model\n  schema 1.1\ntype user\ntype d\n  relations\n"
        '    define v: [user with c]\ncondition c(x: string) {\n  x == "}{" || x == "{"\n}\n'
    )
    assert m.conditions["c"].expression == 'x == "}{" || x == "{"'
