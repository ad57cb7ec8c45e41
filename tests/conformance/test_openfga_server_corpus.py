"""OpenFGA's own server test corpus (consolidated_1_1_tests.yaml, abac_tests.yaml) run
through Tessera's parser and engine.

Format: OpenFGA server tests (camelCase keys). Each test has stages; tuples accumulate
across stages in one store while the model changes per stage. Numeric error codes map to
Tessera error kinds as in ``_CODE`` below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tessera.clock import ManualClock
from tessera.errors import TesseraError
from tessera.rebac.dsl import parse_dsl
from tessera.rebac.engine import RebacEngine
from tessera.rebac.errors import (
    ConditionError,
    InvalidRequest,
    InvalidTuple,
    ModelError,
    ResolutionLimitError,
    UnknownRelation,
    UnknownType,
)
from tessera.rebac.memory import MemoryTupleIndex
from tessera.rebac.ports import RelationTuple

CORPORA = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpora" / "openfga"
FILES = ("consolidated_1_1_tests.yaml", "abac_tests.yaml")

# Test name -> one-line reason it is not supported. Keep empty when possible.
UNSUPPORTED: dict[str, str] = {}


def _code(exc: Exception) -> int:
    """OpenFGA ErrorCode for a Tessera error (openfga/api errors.proto)."""
    if isinstance(exc, UnknownType):
        return 2021  # type_not_found
    if isinstance(exc, UnknownRelation):
        return 2022  # relation_not_found
    if isinstance(exc, InvalidTuple):
        return 2027  # invalid_tuple
    if isinstance(exc, ResolutionLimitError):
        return 2002  # authorization_model_resolution_too_complex
    if isinstance(exc, ModelError):
        return 2001  # invalid_authorization_model
    if isinstance(exc, InvalidRequest | ConditionError):
        return 2000  # validation_error
    return -1


def _load() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for name in FILES:
        path = CORPORA / name
        if path.exists():
            for test in yaml.safe_load(path.read_text())["tests"]:
                out.append((f"{name.split('_')[0]}/{test['name']}", test))
    return out


CASES = _load()


def _tuple(d: dict[str, Any]) -> RelationTuple:
    cond = d.get("condition") or {}
    return RelationTuple(
        d["object"], d["relation"], d["user"], cond.get("name"), cond.get("context")
    )


def _ctx(a: dict[str, Any], req: dict[str, Any]) -> dict[str, Any] | None:
    ctx = a.get("context", req.get("context"))
    return dict(ctx) if ctx else None


def _contextual(a: dict[str, Any], req: dict[str, Any]) -> list[RelationTuple]:
    items = a.get("contextualTuples") or req.get("contextualTuples") or []
    return [_tuple(t) for t in items]


def _outcome(fn: Any, expect: Any, code: int | None, what: str, failures: list[str]) -> None:
    try:
        got = fn()
    except TesseraError as exc:
        if code is None or _code(exc) != code:
            failures.append(
                f"{what}: raised {type(exc).__name__} ({_code(exc)}) {exc}; "
                f"expected {expect!r}/{code}"
            )
        return
    if code is not None:
        failures.append(f"{what}: returned {got!r}, expected error {code}")
    elif got != expect:
        failures.append(f"{what}: got {got!r}, expected {expect!r}")


def _run_assertions(
    engine: RebacEngine, stage: dict[str, Any], where: str, failures: list[str]
) -> int:
    count = 0
    for a in stage.get("checkAssertions") or []:
        t = a["tuple"]
        count += 1
        _outcome(
            lambda t=t, a=a: engine.check(
                t["object"],
                t["relation"],
                t["user"],
                context=_ctx(a, t),
                contextual_tuples=_contextual(a, t),
            ),
            a.get("expectation"),
            a.get("errorCode"),
            f"{where}: check {t['object']}#{t['relation']}@{t['user']} ctx={_ctx(a, t)}",
            failures,
        )
    for a in stage.get("listObjectsAssertions") or []:
        r = a["request"]
        count += 1
        _outcome(
            lambda r=r, a=a: sorted(
                engine.list_objects(
                    r["type"],
                    r["relation"],
                    r["user"],
                    context=_ctx(a, r),
                    contextual_tuples=_contextual(a, r),
                ).items
            ),
            sorted(a.get("expectation") or []),
            a.get("errorCode"),
            f"{where}: list_objects {r['type']}#{r['relation']}@{r['user']} ctx={_ctx(a, r)}",
            failures,
        )
    for a in stage.get("listUsersAssertions") or []:
        r = a["request"]
        count += 1
        _outcome(
            lambda r=r, a=a: sorted(
                engine.list_users(
                    r["object"],
                    r["relation"],
                    r["filters"],
                    context=_ctx(a, r),
                    contextual_tuples=_contextual(a, r),
                ).items
            ),
            sorted(a.get("expectation") or []),
            a.get("errorCode"),
            f"{where}: list_users {r['object']}#{r['relation']} {r['filters']} ctx={_ctx(a, r)}",
            failures,
        )
    return count


def run_test(test: dict[str, Any]) -> tuple[int, list[str]]:
    """Run every stage; return (assertions run, failure descriptions)."""
    index = MemoryTupleIndex()
    clock = ManualClock()
    failures: list[str] = []
    count = 0
    for si, stage in enumerate(test["stages"]):
        try:
            model = parse_dsl(stage["model"])
        except ModelError as exc:
            failures.append(f"stage {si}: model rejected: {exc.detail}")
            continue
        engine = RebacEngine(model, index, clock)
        tuples = [_tuple(t) for t in stage.get("tuples") or []]
        for t in tuples:
            try:
                engine.validate_tuple(t)
            except TesseraError as exc:
                failures.append(f"stage {si}: tuple {t.key} rejected: {exc}")
        index.write(tuples)

        count += _run_assertions(engine, stage, f"stage {si}", failures)
    return count, failures


@pytest.mark.skipif(not CASES, reason=f"OpenFGA corpus not found at {CORPORA}")
@pytest.mark.parametrize(
    ("name", "test"), CASES or [("none", {})], ids=[c[0] for c in CASES] or ["none"]
)
def test_openfga_server_case(name: str, test: dict[str, Any]) -> None:
    if name.split("/", 1)[1] in UNSUPPORTED:
        pytest.skip(UNSUPPORTED[name.split("/", 1)[1]])
    count, failures = run_test(test)
    assert count > 0
    assert not failures, "\n".join(failures)


@pytest.mark.skipif(not CASES, reason=f"OpenFGA corpus not found at {CORPORA}")
def test_corpus_totals() -> None:
    """Guards against silently losing assertions (README: 360+125 check, 270+75
    list-objects, 295+91 list-users)."""
    total = sum(run_test(t)[0] for name, t in CASES if name.split("/", 1)[1] not in UNSUPPORTED)
    assert total == 360 + 125 + 270 + 75 + 295 + 91
