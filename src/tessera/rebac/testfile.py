"""Runner for store test files in the format of OpenFGA's CLI (``fga model test``,
``*.fga.yaml``): ``model`` or ``model_file``, ``tuples`` or ``tuple_file``, and ``tests``
with ``check`` / ``list_objects`` / ``list_users`` assertions and ``context``.

``run_store_file(path)`` returns a ``StoreTestReport`` with one ``AssertionResult`` per
assertion; nothing here prints or exits (the ``tessera rebac test`` command formats the
report). A malformed file raises ``StoreFileError`` listing every problem.

Tessera extension: a tuple may carry ``expires_at`` (ISO 8601 with offset); the runner's
clock decides whether it is visible.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tessera.clock import Clock, SystemClock, parse_iso
from tessera.errors import InvalidInput, TesseraError
from tessera.rebac.dsl import parse_dsl
from tessera.rebac.engine import RebacEngine
from tessera.rebac.memory import MemoryTupleIndex
from tessera.rebac.model import AuthorizationModel
from tessera.rebac.modules import load_modular_model
from tessera.rebac.ports import RelationTuple

# libyaml's loader when present: the same safe subset of YAML, about ten times faster on
# store files of thousands of tuples.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _safe_load(text: str) -> Any:
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a safe loader, never yaml.Loader


_STORE_KEYS = {"name", "model", "model_file", "tuples", "tuple_file", "tests"}
_TEST_KEYS = {"name", "description", "tuples", "tuple_file", "check", "list_objects", "list_users"}
_TUPLE_KEYS = {"user", "relation", "object", "condition", "expires_at"}
_CHECK_KEYS = {"user", "object", "assertions", "context", "contextual_tuples"}
_LIST_OBJECTS_KEYS = {"user", "type", "assertions", "context", "contextual_tuples"}
_LIST_USERS_KEYS = {"object", "user_filter", "assertions", "context", "contextual_tuples"}


class StoreFileError(InvalidInput):
    code = "rebac_invalid_store_file"
    title = "Invalid store test file"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "invalid store test file: " + "; ".join(problems[:3]), detail="\n".join(problems)
        )


@dataclass(frozen=True, slots=True)
class AssertionResult:
    test: str
    kind: str  # check | list_objects | list_users
    query: str  # e.g. "user:anne viewer document:1"
    expected: Any
    actual: Any = None
    error: str | None = None  # an error instead of an answer (always a failure)

    @property
    def passed(self) -> bool:
        return self.error is None and self.actual == self.expected


@dataclass(frozen=True, slots=True)
class StoreTestReport:
    name: str
    results: tuple[AssertionResult, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> tuple[AssertionResult, ...]:
        return tuple(r for r in self.results if not r.passed)


def _extra_keys(obj: Any, allowed: set[str], where: str, problems: list[str]) -> bool:
    if not isinstance(obj, Mapping):
        problems.append(f"{where}: must be a mapping")
        return False
    problems.extend(f"{where}: unexpected key {k!r}" for k in obj if k not in allowed)
    return True


def _check_shape(data: Any) -> list[str]:
    problems: list[str] = []
    if not _extra_keys(data, _STORE_KEYS, "store", problems):
        return problems
    if "model" not in data and "model_file" not in data:
        problems.append("store: 'model' or 'model_file' must be present")
    if not isinstance(data.get("tests"), list):
        problems.append("store: 'tests' must be a list")
        return problems
    for i, t in enumerate(data.get("tuples") or []):
        _extra_keys(t, _TUPLE_KEYS, f"tuples[{i}]", problems)
    for ti, test in enumerate(data["tests"]):
        where = f"tests[{ti}]"
        if not _extra_keys(test, _TEST_KEYS, where, problems):
            continue
        for i, t in enumerate(test.get("tuples") or []):
            _extra_keys(t, _TUPLE_KEYS, f"{where}.tuples[{i}]", problems)
        for kind, keys in (
            ("check", _CHECK_KEYS),
            ("list_objects", _LIST_OBJECTS_KEYS),
            ("list_users", _LIST_USERS_KEYS),
        ):
            for i, a in enumerate(test.get(kind) or []):
                if _extra_keys(a, keys, f"{where}.{kind}[{i}]", problems) and (
                    not isinstance(a.get("assertions"), Mapping)
                ):
                    problems.append(f"{where}.{kind}[{i}]: 'assertions' must be a mapping")
    return problems


def _tuple(d: Mapping[str, Any]) -> RelationTuple:
    cond = d.get("condition") or {}
    exp = d.get("expires_at")
    return RelationTuple(
        str(d["object"]),
        str(d["relation"]),
        str(d["user"]),
        cond.get("name"),
        cond.get("context"),
        parse_iso(str(exp)) if exp is not None else None,
    )


def _read_tuple_file(path: Path) -> list[RelationTuple]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        out: list[RelationTuple] = []
        for row in csv.DictReader(text.splitlines()):
            user = f"{row['user_type']}:{row['user_id']}"
            if row.get("user_relation"):
                user += "#" + row["user_relation"]
            ctx = row.get("condition_context")
            out.append(
                RelationTuple(
                    f"{row['object_type']}:{row['object_id']}",
                    row["relation"],
                    user,
                    row.get("condition_name") or None,
                    json.loads(ctx) if ctx else None,
                )
            )
        return out
    items = json.loads(text) if path.suffix == ".json" else _safe_load(text)
    if not isinstance(items, list):
        raise StoreFileError([f"{path.name}: a tuple file must hold a list"])
    return [_tuple(t) for t in items]


def load_model(data: Mapping[str, Any], base_dir: Path) -> AuthorizationModel:
    if "model" in data:
        return parse_dsl(str(data["model"]))
    path = base_dir / str(data["model_file"])
    if path.name == "fga.mod":
        return load_modular_model(path)
    return parse_dsl(path.read_text(encoding="utf-8"))


def _tuples(data: Mapping[str, Any], base_dir: Path) -> list[RelationTuple]:
    if "tuples" in data:
        return [_tuple(t) for t in data.get("tuples") or []]
    if "tuple_file" in data:
        return _read_tuple_file(base_dir / str(data["tuple_file"]))
    return []


def run_store(data: Any, base_dir: Path, clock: Clock | None = None) -> StoreTestReport:
    """Run a parsed store file. Model and tuple errors raise (``ModelError``,
    ``InvalidTuple``, ``StoreFileError``); assertion errors become failed results."""
    problems = _check_shape(data)
    if problems:
        raise StoreFileError(problems)
    clock = clock or SystemClock()
    model = load_model(data, base_dir)
    base_tuples = _tuples(data, base_dir)
    results: list[AssertionResult] = []
    for ti, test in enumerate(data["tests"]):
        name = str(test.get("name") or f"test {ti + 1}")
        index = MemoryTupleIndex()
        engine = RebacEngine(model, index, clock)
        tuples = base_tuples + _tuples(test, base_dir)
        for t in tuples:
            engine.validate_tuple(t)
        index.write(tuples)
        results.extend(_run_test(engine, name, test))
    return StoreTestReport(str(data.get("name") or ""), tuple(results))


def run_store_file(path: str | Path, clock: Clock | None = None) -> StoreTestReport:
    """Load a ``.fga.yaml`` file (``yaml.safe_load``) and run it."""
    p = Path(path)
    try:
        data = _safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise StoreFileError([f"{p.name}: not valid YAML: {exc}"]) from None
    return run_store(data, p.parent, clock)


def _ask(fn: Any) -> tuple[Any, str | None]:
    try:
        return fn(), None
    except TesseraError as exc:
        return None, f"{exc.code}: {exc.message}"


def _run_test(engine: RebacEngine, name: str, test: Mapping[str, Any]) -> list[AssertionResult]:
    out: list[AssertionResult] = []
    for a in test.get("check") or []:
        ctx, extra = a.get("context"), [_tuple(t) for t in a.get("contextual_tuples") or []]
        for relation, expected in a["assertions"].items():
            got, err = _ask(
                lambda a=a, r=relation, c=ctx, x=extra: engine.check(
                    str(a["object"]), r, str(a["user"]), context=c, contextual_tuples=x
                )
            )
            out.append(
                AssertionResult(
                    name, "check", f"{a['user']} {relation} {a['object']}", bool(expected), got, err
                )
            )
    for a in test.get("list_objects") or []:
        ctx, extra = a.get("context"), [_tuple(t) for t in a.get("contextual_tuples") or []]
        for relation, expected in a["assertions"].items():
            got, err = _ask(
                lambda a=a, r=relation, c=ctx, x=extra: sorted(
                    engine.list_objects(
                        str(a["type"]), r, str(a["user"]), context=c, contextual_tuples=x
                    ).items
                )
            )
            out.append(
                AssertionResult(
                    name,
                    "list_objects",
                    f"{a['user']} {relation} {a['type']}:?",
                    sorted(expected or []),
                    got,
                    err,
                )
            )
    for a in test.get("list_users") or []:
        ctx, extra = a.get("context"), [_tuple(t) for t in a.get("contextual_tuples") or []]
        filters = [
            f["type"] + (f"#{f['relation']}" if f.get("relation") else "") for f in a["user_filter"]
        ]
        for relation, expected in a["assertions"].items():
            got, err = _ask(
                lambda a=a, r=relation, c=ctx, x=extra, f=filters: sorted(
                    engine.list_users(str(a["object"]), r, f, context=c, contextual_tuples=x).items
                )
            )
            want = sorted((expected or {}).get("users") or [])
            out.append(
                AssertionResult(
                    name,
                    "list_users",
                    f"{','.join(filters)} {relation} {a['object']}",
                    want,
                    got,
                    err,
                )
            )
    return out
