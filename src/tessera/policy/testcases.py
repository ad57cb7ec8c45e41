"""Bundle test files (``tests/*.yaml``): requests and the decisions they must get.

File format::

    tuples:                      # optional ReBAC tuples (the bundle's .fga model)
      - {object: "doc:1", relation: viewer, user: "user:alice"}
    attributes:                  # optional directory: type -> id -> attributes
      user: {alice: {role: admin}}
    cases:
      - name: alice reads doc 1
        request: {subject: {...}, action: {...}, resource: {...}, context: {...}}
        expect: allow            # allow | deny | approval_required
        reasons: [policy-id]     # optional: each must be a reason code or policy id

Cases run through the same pipeline as the server (without agent tokens: subjects of
type ``agent`` need a session token and are not supported in test files).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from tessera.clock import SystemClock
from tessera.errors import TesseraError
from tessera.pdp.agents import Caller
from tessera.pdp.model import parse_evaluation
from tessera.pdp.pipeline import DecisionPoint, StaticBundle
from tessera.pdp.ports import EngineRelations, MemoryAttributes
from tessera.policy.bundle import PolicyBundle
from tessera.rebac import MemoryTupleIndex, RebacEngine, RelationTuple

_TEST_CALLER = Caller("bundle-test", "bundle-test", "test")
_VERDICTS = ("allow", "deny", "approval_required")


@dataclass(frozen=True)
class CaseResult:
    file: str
    name: str
    passed: bool
    expected: str
    actual: str
    reasons: tuple[str, ...]
    problem: str = ""


def _tuples(raw: Any) -> list[RelationTuple]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError("tuples must be a list")
    return [RelationTuple(str(t["object"]), str(t["relation"]), str(t["user"])) for t in raw]


def run_test_file(bundle: PolicyBundle, name: str, text: str) -> list[CaseResult]:
    """Run one test file; malformed files give one failed result naming the problem."""
    try:
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
            raise ValueError("a test file needs a list of cases")
        tuples = _tuples(data.get("tuples"))
        attrs = MemoryAttributes(data.get("attributes") or {})
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        return [CaseResult(name, "(file)", False, "", "", (), f"invalid test file: {exc}"[:300])]
    clock = SystemClock()
    relations = None
    if bundle.rebac_model is not None:
        relations = EngineRelations(
            RebacEngine(bundle.rebac_model, MemoryTupleIndex(tuples), clock)
        )
    pdp = DecisionPoint(StaticBundle(bundle), clock, relations=relations, attributes=attrs)
    out = []
    for i, case in enumerate(data["cases"]):
        cname = (
            str(case.get("name", f"case {i + 1}")) if isinstance(case, dict) else f"case {i + 1}"
        )
        try:
            if not isinstance(case, dict) or case.get("expect") not in _VERDICTS:
                raise ValueError(f"expect must be one of {list(_VERDICTS)}")
            decision = pdp.decide(parse_evaluation(case.get("request")), _TEST_CALLER)
        except (ValueError, TesseraError) as exc:
            out.append(CaseResult(name, cname, False, "", "", (), str(exc)[:300]))
            continue
        got = tuple(
            r.message if r.code in ("permit", "forbid") else r.code for r in decision.reasons
        )
        wanted = [str(r) for r in case.get("reasons") or []]
        missing = [r for r in wanted if r not in got]
        passed = decision.verdict == case["expect"] and not missing
        problem = f"missing reasons {missing}" if missing else ""
        out.append(CaseResult(name, cname, passed, case["expect"], decision.verdict, got, problem))
    return out


def run_bundle_tests(bundle: PolicyBundle) -> list[CaseResult]:
    results: list[CaseResult] = []
    for name, text in sorted(bundle.test_files().items()):
        results.extend(run_test_file(bundle, name, text))
    return results
