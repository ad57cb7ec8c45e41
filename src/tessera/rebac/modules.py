"""Modular models (OpenFGA schema 1.2): an ``fga.mod`` manifest lists module files; each
file starts with ``module NAME`` and holds types, ``extend type`` blocks and conditions.
Spec: https://openfga.dev/docs/modeling/modular-models

``parse_fga_mod(text)`` reads the manifest (positions kept for errors);
``combine_modules({path: text})`` merges module files into one ``AuthorizationModel``
whose types, extended relations and conditions remember their ``Source`` (module, file).
Every problem of every file is reported at once in ``ModelError.issues`` (``file`` set).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tessera.rebac.dsl import ParsedFile, parse_file
from tessera.rebac.dslexpr import ParseError
from tessera.rebac.errors import ModelError, ModelIssue
from tessera.rebac.model import AuthorizationModel, Condition, Pos, Source, TypeDef
from tessera.rebac.validate import model_issues

_STR = "tag:yaml.org,2002:str"
_FLOAT = "tag:yaml.org,2002:float"
_BAD_PATH = re.compile(r"(^|[/\\])\.\.([/\\]|$)|^[/\\]|%2e|%2f|%5c|\\", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ModItem:
    value: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class FgaMod:
    schema: ModItem
    contents: tuple[ModItem, ...]


def _pos(node: yaml.Node) -> Pos:
    return Pos(node.start_mark.line, node.start_mark.column, node.end_mark.column)


def _text(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else type(node).__name__


def parse_fga_mod(text: str) -> FgaMod:
    """Read an ``fga.mod`` manifest: ``schema: '1.2'`` and ``contents`` (a list of
    ``.fga`` paths relative to the manifest, no ``..``, no absolute paths)."""
    try:
        root = yaml.compose(text)  # nodes with positions; no object construction
    except yaml.YAMLError as exc:
        raise ModelError([ModelIssue("syntax", f"fga.mod is not valid YAML: {exc}")]) from None
    issues: list[ModelIssue] = []

    def issue(message: str, pos: Pos) -> None:
        issues.append(ModelIssue("fga-mod", message, pos.line, pos.column, pos.end))

    if not isinstance(root, yaml.MappingNode):
        raise ModelError([ModelIssue("fga-mod", "fga.mod must be a mapping")])
    fields = {k.value: (k, v) for k, v in root.value if isinstance(k, yaml.ScalarNode)}
    schema: ModItem | None = None
    contents: list[ModItem] = []
    if "schema" not in fields:
        issue("missing schema field", Pos())
    else:
        node = fields["schema"][1]
        if not isinstance(node, yaml.ScalarNode) or node.tag not in (_STR, _FLOAT):
            issue(f"unexpected schema type, expected string got value {_text(node)}", _pos(node))
        elif node.value != "1.2":
            issue("unsupported schema version, fga.mod only supported in version `1.2`", _pos(node))
        else:
            schema = ModItem(node.value, _pos(node))
    if "contents" not in fields:
        issue("missing contents field", Pos())
    else:
        node = fields["contents"][1]
        if not isinstance(node, yaml.SequenceNode):
            issue(
                f"unexpected contents type, expected list of strings got value {_text(node)}",
                _pos(node),
            )
        else:
            for item in node.value:
                value = _text(item)
                if not isinstance(item, yaml.ScalarNode) or item.tag != _STR:
                    issue(
                        f"unexpected contents item type, expected string got value {value}",
                        _pos(item),
                    )
                elif not value.endswith(".fga"):
                    issue(f"contents items should use fga file extension, got {value}", _pos(item))
                elif _BAD_PATH.search(value):
                    issue(f"invalid contents item {value}", _pos(item))
                else:
                    contents.append(ModItem(value, _pos(item)))
    if issues:
        raise ModelError(issues)
    if schema is None:  # unreachable: a missing or bad schema is an issue above
        raise ModelError([ModelIssue("fga-mod", "missing schema field")])
    return FgaMod(schema, tuple(contents))


def _in_file(obj: Any, file: str) -> Any:
    """``obj`` with every ``Pos`` inside it marked with ``file``."""
    if isinstance(obj, Pos):
        return dataclasses.replace(obj, file=file)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: _in_file(getattr(obj, f.name), file) for f in dataclasses.fields(obj)}
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, tuple):
        return tuple(_in_file(x, file) for x in obj)
    if isinstance(obj, dict):
        return {k: _in_file(v, file) for k, v in obj.items()}
    return obj


def combine_modules(files: Mapping[str, str], *, validate: bool = True) -> AuthorizationModel:
    """Merge module files (path → DSL text) into one schema 1.2 model. Files are read in
    path order; the first definition of a type or condition wins."""
    issues: list[ModelIssue] = []
    types: dict[str, TypeDef] = {}
    conditions: dict[str, Condition] = {}
    extensions: list[tuple[Source, TypeDef]] = []

    def issue(kind: str, message: str, pos: Pos) -> None:
        issues.append(ModelIssue(kind, message, pos.line, pos.column, pos.end, pos.file))

    for path in sorted(files):
        try:
            parsed: ParsedFile = parse_file(files[path], module_mode=True)
        except ParseError as exc:
            issues.append(dataclasses.replace(exc.issue, file=path))
            continue
        if parsed.module is None:
            issue("not-a-module", "file is not a module", Pos(file=path))
            continue
        source = Source(parsed.module, path)
        issues.extend(dataclasses.replace(i, file=path) for i in parsed.issues)
        for td in parsed.model.types.values():
            td = dataclasses.replace(_in_file(td, path), source=source)
            if td.name in types:
                first = types[td.name].pos
                issue("duplicated-error", f"the type `{td.name}` is a duplicate.", first)
            else:
                types[td.name] = td
        for cond in parsed.model.conditions.values():
            cond = dataclasses.replace(_in_file(cond, path), source=source)
            if cond.name in conditions:
                issue("duplicated-error", f"duplicate condition {cond.name}", cond.pos)
            else:
                conditions[cond.name] = cond
        extensions.extend((source, _in_file(ext, path)) for ext in parsed.extensions)
    for source, ext in extensions:
        target = types.get(ext.name)
        if target is None:
            issue("invalid-type", f"extended type {ext.name} does not exist", ext.pos)
            continue
        for rd in ext.relations.values():
            if rd.name in target.relations:
                issue(
                    "duplicated-error",
                    f"relation {rd.name} already exists on type {ext.name}",
                    rd.pos,
                )
            else:
                target.relations[rd.name] = dataclasses.replace(rd, source=source)
    model = AuthorizationModel("1.2", types, conditions)
    if validate:
        issues.extend(model_issues(model))
    if issues:
        raise ModelError(issues)
    return model


def modules_of(model: AuthorizationModel) -> list[str]:
    """Names of the modules a combined model was built from, sorted."""
    names = {td.source.module for td in model.types.values() if td.source}
    names |= {c.source.module for c in model.conditions.values() if c.source}
    names |= {
        rd.source.module for td in model.types.values() for rd in td.relations.values() if rd.source
    }
    return sorted(names)


def load_modular_model(manifest: str | Path) -> AuthorizationModel:
    """Read an ``fga.mod`` and the module files it lists (relative to it)."""
    path = Path(manifest)
    mod = parse_fga_mod(path.read_text(encoding="utf-8"))
    files: dict[str, str] = {}
    for item in mod.contents:
        try:
            files[item.value] = (path.parent / item.value).read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelError(
                [
                    ModelIssue(
                        "fga-mod",
                        f"cannot read {item.value}: {exc.strerror}",
                        item.pos.line,
                        item.pos.column,
                        item.pos.end,
                    )
                ]
            ) from None
    return combine_modules(files)


def module_file_issues(text: str) -> list[ModelIssue]:
    """Problems of one module file on its own (syntax, duplicates inside the file)."""
    try:
        parsed = parse_file(text, module_mode=True)
    except ParseError as exc:
        return [exc.issue]
    if parsed.module is None:
        return [ModelIssue("not-a-module", "file is not a module")]
    return parsed.issues


def without_sources(model: AuthorizationModel) -> AuthorizationModel:
    """``model`` with module/file origins dropped (to compare with a combined DSL)."""
    types = {
        name: dataclasses.replace(
            td,
            source=None,
            relations={r: dataclasses.replace(rd, source=None) for r, rd in td.relations.items()},
        )
        for name, td in model.types.items()
    }
    conditions = {name: dataclasses.replace(c, source=None) for name, c in model.conditions.items()}
    return AuthorizationModel(model.schema_version, types, conditions)
