"""The bundle's pinned ReBAC model against the model relations are answered with
(decisions.md 85): the digest ignores type order, and the ReBAC stage denies with
``model_mismatch`` instead of checking relations against another model."""

from __future__ import annotations

from pathlib import Path

from tessera.clock import ManualClock
from tessera.pdp.agents import Caller
from tessera.pdp.model import parse_evaluation
from tessera.pdp.pipeline import DecisionPoint, StaticBundle
from tessera.pdp.ports import EngineRelations
from tessera.policy.bundle import load_bundle, read_bundle_dir
from tessera.rebac import MemoryTupleIndex, RebacEngine, RelationTuple, parse_dsl
from tessera.rebac.jsonmodel import model_digest

BUNDLE = Path(__file__).resolve().parents[3] / "examples" / "policy-bundle"
CALLER = Caller("svc_1", "pep", "token")
A = "model\n  schema 1.1\ntype user\ntype document\n  relations\n    define viewer: [user]\n"
B = "model\n  schema 1.1\ntype document\n  relations\n    define viewer: [user]\ntype user\n"
C = A.replace("define viewer: [user]", "define viewer: [user, document]")


def test_the_digest_names_the_model_not_its_text() -> None:
    assert model_digest(parse_dsl(A)) == model_digest(parse_dsl(B))  # type order
    assert model_digest(parse_dsl(A)) != model_digest(parse_dsl(C))
    assert model_digest(parse_dsl(A)).startswith("sha256:")


def _ask(pdp: DecisionPoint, action: str) -> tuple[str, list[str]]:
    req = parse_evaluation(
        {
            "subject": {"type": "user", "id": "alice"},
            "action": {"name": action},
            "resource": {"type": "document", "id": "1"},
        }
    )
    d = pdp.decide(req, CALLER)
    return d.verdict, [r.code for r in d.reasons]


def test_relations_are_checked_only_against_the_pinned_model() -> None:
    bundle = load_bundle(read_bundle_dir(BUNDLE))
    assert bundle.rebac_model is not None
    assert bundle.rebac_model_digest == model_digest(bundle.rebac_model)
    clock = ManualClock()
    tuples = MemoryTupleIndex([RelationTuple("document:1", "viewer", "user:alice")])
    pinned = EngineRelations(RebacEngine(bundle.rebac_model, tuples, clock))
    other_model = parse_dsl(
        A.replace("define viewer: [user]", "define viewer: [user]\n    define editor: [user]")
    )
    other = EngineRelations(RebacEngine(other_model, tuples, clock))
    pdp = DecisionPoint(StaticBundle(bundle), clock, relations=pinned)
    assert _ask(pdp, "docs/read") == ("allow", ["permit"])
    pdp.relations = other  # another model is active: alice is a viewer there too
    verdict, codes = _ask(pdp, "docs/read")
    assert (verdict, codes) == ("deny", ["model_mismatch"])
    d = pdp.decide(
        parse_evaluation(
            {
                "subject": {"type": "user", "id": "alice"},
                "action": {"name": "docs/read"},
                "resource": {"type": "document", "id": "1"},
            }
        ),
        CALLER,
    )
    assert "the bundle pins ReBAC model sha256:" in d.reasons[0].message
    assert [s.stage for s in d.trace] == ["rebac"]  # no relation was evaluated
    assert _ask(pdp, "docs/search") == ("allow", ["permit"])  # Cedar only: no relation
