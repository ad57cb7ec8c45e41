"""Bundles: validation reports every problem; slicing answers like the full policy set."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.policy.bundle import BundleError, load_bundle, read_bundle_dir
from tessera.policy.cedar import CedarPolicies
from tessera.policy.testcases import run_bundle_tests

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.mark.parametrize("name", ["policy-bundle", "authzen-todo", "authzen-search"])
def test_example_bundles_validate_and_their_tests_pass(name: str) -> None:
    bundle = load_bundle(read_bundle_dir(EXAMPLES / name))
    results = run_bundle_tests(bundle)
    assert results, "every example ships test cases"
    assert [r for r in results if not r.passed] == []


def test_every_problem_is_reported() -> None:
    files = read_bundle_dir(EXAMPLES / "policy-bundle")
    files["bundle.yaml"] = files["bundle.yaml"].replace("relation: viewer", "relation: nope")
    files["agents.cedar"] += (
        "\npermit (principal, action, resource) when { principal.nope == 1 };\n"
    )
    del files["schema.cedarschema"]
    with pytest.raises(BundleError) as info:
        load_bundle(files)
    text = " | ".join(info.value.problems)
    assert "schema.cedarschema is missing" in text
    assert "relation 'nope' is not in the model" in text


def test_policies_are_validated_against_the_schema() -> None:
    files = read_bundle_dir(EXAMPLES / "policy-bundle")
    files["agents.cedar"] += (
        "\npermit (principal is agent, action, resource) when { principal.nope == 1 };\n"
    )
    with pytest.raises(BundleError) as info:
        load_bundle(files)
    assert any("agents.cedar" in p for p in info.value.problems)


def test_a_broken_model_is_reported_with_its_position() -> None:
    files = read_bundle_dir(EXAMPLES / "policy-bundle")
    files["model.fga"] = "model\n  schema 1.1\ntype doc\n  relations\n    define viewer: [nobody]\n"
    with pytest.raises(BundleError) as info:
        load_bundle(files)
    assert any(p.startswith("model.fga:") for p in info.value.problems)


def _policies(n: int) -> str:
    out = []
    for i in range(n):
        out.append(
            f'@id("p{i}")\npermit (principal, action == Action::"a{i % 50}", resource is r{i % 7})'
            f" when {{ principal.level > {i % 10} }};"
        )
    out.append('@id("all")\nforbid (principal, action, resource) when { principal.level > 98 };')
    return "\n".join(out)


def test_slices_answer_like_the_full_policy_set() -> None:
    actions = [f"a{i}" for i in range(50)]
    sliced = CedarPolicies({"p.cedar": _policies(300)}, actions)
    assert len(sliced) == 301
    assert len(sliced.slice_ids("a3", "r3")) < 20
    for level in (0, 5, 99):
        for action in ("a3", "a10", "a49"):
            for rtype in ("r0", "r3"):
                entities = [
                    {"uid": {"type": "u", "id": "x"}, "attrs": {"level": level}, "parents": []},
                    {"uid": {"type": rtype, "id": "1"}, "attrs": {}, "parents": []},
                ]
                got = sliced.authorize(("u", "x"), action, (rtype, "1"), {}, entities)
                import cedarpy

                full = cedarpy.is_authorized(
                    {
                        "principal": 'u::"x"',
                        "action": f'Action::"{action}"',
                        "resource": f'{rtype}::"1"',
                        "context": {},
                    },
                    _policies(300),
                    entities,
                )
                assert got.allowed == full.allowed
