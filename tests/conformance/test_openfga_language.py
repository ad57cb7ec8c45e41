"""OpenFGA's language corpus (openfga/language tests/data) against Tessera's DSL parser,
validator, JSON conversion, renderer and store-file runner.

Errors are compared by 0-based line, column and kind (OpenFGA ``errorType``; ``syntax``
for grammar errors), never by message text. For syntax cases OpenFGA's ANTLR parser
reports every error after recovery; Tessera stops at the first, so only the first
expected error is compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tessera.clock import ManualClock
from tessera.rebac.dsl import parse_dsl
from tessera.rebac.errors import ModelError
from tessera.rebac.jsonmodel import model_from_json, model_to_json
from tessera.rebac.modules import (
    combine_modules,
    module_file_issues,
    modules_of,
    parse_fga_mod,
    without_sources,
)
from tessera.rebac.ports import is_valid_object_id
from tessera.rebac.render import render_dsl, render_modules
from tessera.rebac.testfile import StoreFileError, run_store_file

DATA = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "corpora"
    / "openfga-language"
    / "tests"
    / "data"
)

# Case name -> one-line reason it is not supported (none at present).
UNSUPPORTED: dict[str, str] = {}

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"language corpus not at {DATA}")


def _cases(name: str) -> list[dict[str, Any]]:
    path = DATA / name
    return yaml.safe_load(path.read_text()) if path.exists() else []


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"][:80] for c in cases]


def _skip_unsupported(case: dict[str, Any]) -> None:
    if case["name"] in UNSUPPORTED:
        pytest.skip(UNSUPPORTED[case["name"]])


def _issues(dsl: str, *, module_file: bool = False) -> list[tuple[int, int, str]]:
    if module_file:
        return sorted((i.line, i.column, i.kind) for i in module_file_issues(dsl))
    try:
        parse_dsl(dsl)
    except ModelError as exc:
        return sorted((i.line, i.column, i.kind) for i in exc.issues)
    return []


SEMANTIC = _cases("dsl-semantic-validation-cases.yaml")
SYNTAX = _cases("dsl-syntax-validation-cases.yaml")


@pytest.mark.parametrize("case", SEMANTIC, ids=_ids(SEMANTIC))
def test_dsl_semantic_validation(case: dict[str, Any]) -> None:
    _skip_unsupported(case)
    expected = sorted(
        (
            e["line"]["start"],
            e["column"]["start"],
            (e.get("metadata") or {}).get("errorType") or "syntax",
        )
        for e in case.get("expected_errors") or []
    )
    assert _issues(case["dsl"]) == expected


@pytest.mark.parametrize("case", SYNTAX, ids=_ids(SYNTAX))
def test_dsl_syntax_validation(case: dict[str, Any]) -> None:
    _skip_unsupported(case)
    expected = case.get("expected_errors") or []
    # A file that starts with `module` is one file of a modular model: checked on its own.
    got = _issues(case["dsl"], module_file=case["dsl"].lstrip().startswith("module "))
    if not expected:
        assert got == []
        return
    first = expected[0]
    assert got, "expected an error"
    assert got[0][:2] == (first["line"]["start"], first["column"]["start"])
    kind = (first.get("metadata") or {}).get("errorType")
    if kind:
        assert got[0][2] == kind


def _normalise(j: dict[str, Any]) -> dict[str, Any]:
    """Drop what Tessera does not model (module / source_info metadata)."""
    j.setdefault("type_definitions", [])
    for td in j["type_definitions"]:
        md = td.get("metadata")
        if md:
            md.pop("module", None)
            md.pop("source_info", None)
            for r in (md.get("relations") or {}).values():
                r.pop("module", None)
                r.pop("source_info", None)
            if not md.get("relations"):
                td["metadata"] = None
        td.setdefault("metadata", None)
    for c in (j.get("conditions") or {}).values():
        c.pop("metadata", None)
    return j


TRANSFORMER = (
    sorted(p for p in (DATA / "transformer").glob("*") if p.is_dir()) if DATA.is_dir() else []
)


@pytest.mark.parametrize("folder", TRANSFORMER, ids=[p.name for p in TRANSFORMER])
def test_dsl_json_round_trip(folder: Path) -> None:
    dsl = (folder / "authorization-model.fga").read_text()
    expected = json.loads((folder / "authorization-model.json").read_text())
    # These files test the transformer, not validity, so validation is off here.
    model = parse_dsl(dsl, validate=False)
    assert _normalise(model_to_json(model)) == _normalise(expected)
    assert model_from_json(expected, validate=False) == model
    assert parse_dsl(render_dsl(model), validate=False) == model


JSON_TO_DSL = _cases("json-syntax-transformer-validation-cases.yaml")


@pytest.mark.parametrize("case", JSON_TO_DSL, ids=_ids(JSON_TO_DSL))
def test_json_to_dsl(case: dict[str, Any]) -> None:
    model = model_from_json(json.loads(case["json"]), validate=False)
    if case.get("valid", True):
        assert model_to_json(parse_dsl(render_dsl(model), validate=False)) is not None
    else:
        with pytest.raises(ModelError) as info:
            render_dsl(model)
        assert info.value.issues[0].kind == "unsupported-dsl"
        assert info.value.issues[0].message == case["error_message"]


JSON_VALIDATION = _cases("json-validation-cases.yaml")


@pytest.mark.parametrize("case", JSON_VALIDATION, ids=_ids(JSON_VALIDATION))
def test_json_validation(case: dict[str, Any]) -> None:
    _skip_unsupported(case)
    expected = [
        (e.get("metadata") or {}).get("errorType") for e in case.get("expected_errors") or []
    ]
    try:
        model = model_from_json(json.loads(case["json"]))
        if model.schema_version == "1.2":
            render_modules(model)  # a modular model must map back to one module per file
        got: list[str] = []
    except ModelError as exc:
        got = [i.kind for i in exc.issues]
    assert got == expected


OBJECT_IDS = _cases("object-id-validation-cases.yaml")


def test_object_id_validation() -> None:
    assert OBJECT_IDS
    wrong = [c["name"] for c in OBJECT_IDS if is_valid_object_id(c["object_id"]) != c["valid"]]
    assert wrong == []


STORES = sorted((DATA / "stores").glob("*/store.fga.yaml")) if DATA.is_dir() else []


@pytest.mark.parametrize("path", STORES, ids=[p.parent.name for p in STORES])
def test_store_files(path: Path) -> None:
    errors_file = path.parent / "expected_errors.json"
    if errors_file.exists():
        expected = json.loads(errors_file.read_text())
        with pytest.raises(StoreFileError) as info:
            run_store_file(path, ManualClock())
        assert len(info.value.problems) == len(expected)
    else:
        report = run_store_file(path, ManualClock())
        assert report.results
        assert report.passed, report.failures


MODULES = (
    sorted(p for p in (DATA / "transformer-module").glob("*") if p.is_dir())
    if DATA.is_dir()
    else []
)


@pytest.mark.parametrize("folder", MODULES, ids=[p.name for p in MODULES])
def test_modular_models(folder: Path) -> None:
    files = {p.name: p.read_text() for p in sorted((folder / "module").glob("*.fga"))}
    errors = folder / "expected_errors.json"
    if errors.exists():
        expected = json.loads(errors.read_text())
        with pytest.raises(ModelError) as info:
            combine_modules(files)
        got = sorted((i.file, i.line, i.column) for i in info.value.issues)
        assert got == sorted(
            (e["file"], e["line"]["start"], e["column"]["start"]) for e in expected
        )
        syntax = {(e["file"], e["line"]["start"]) for e in expected if e.get("type") == "syntax"}
        assert syntax == {(i.file, i.line) for i in info.value.issues if i.kind == "syntax"}
        return
    expected_json = json.loads((folder / "authorization-model.json").read_text())
    # The JSON of 06 has an unused condition, which only whole-model validation rejects.
    model = model_from_json(expected_json, validate=False)
    assert model_to_json(model) == expected_json
    assert modules_of(model) == json.loads((folder / "expected_modules.json").read_text())
    if files:
        assert combine_modules(render_modules(model), validate=False) == model
        combined = combine_modules(files)
        assert combined == model
        for name in ("combined.fga", "combined-sourceinfo.fga"):
            assert parse_dsl((folder / name).read_text()) == without_sources(combined)


FGA_MOD = _cases("fga-mod-transformer-cases.yaml")


def _mod_json(item: Any) -> dict[str, Any]:
    return {
        "value": item.value,
        "line": {"start": item.pos.line, "end": item.pos.line},
        "column": {"start": item.pos.column, "end": item.pos.end},
    }


@pytest.mark.parametrize("case", FGA_MOD, ids=_ids(FGA_MOD))
def test_fga_mod(case: dict[str, Any]) -> None:
    expected = case.get("expected_errors")
    if expected:
        with pytest.raises(ModelError) as info:
            parse_fga_mod(case["modFile"])
        got = sorted((i.line, i.column) for i in info.value.issues)
        assert got == sorted((e["line"]["start"], e["column"]["start"]) for e in expected)
        return
    mod = parse_fga_mod(case["modFile"])
    want = json.loads(case["json"])
    assert _mod_json(mod.schema) == want["schema"]
    assert [_mod_json(c) for c in mod.contents] == want["contents"]["value"]
