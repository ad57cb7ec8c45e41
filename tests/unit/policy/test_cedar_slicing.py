"""Cedar slicing (per action, resource type, principal type and named entity) and action
groups resolved from the schema: a slice always answers like the whole policy set."""

from __future__ import annotations

import json
from typing import Any

import cedarpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.clock import ManualClock
from tessera.pdp.agents import Caller
from tessera.pdp.model import parse_evaluation
from tessera.pdp.pipeline import DecisionPoint, StaticBundle
from tessera.pdp.ports import MemoryAttributes
from tessera.policy.bundle import BundleError, load_bundle
from tessera.policy.cedar import CedarPolicies, SharedEntities, schema_actions

SCHEMA = """
entity user { role?: String };
entity agent { depth?: Long };
entity document { classification?: String };
entity folder;
action "all";
action "readers" in ["all"];
action "writers" in ["all"];
action "docs/read", "docs/search" in ["readers"]
  appliesTo { principal: [user, agent], resource: [document, folder], context: {} };
action "docs/publish" in ["writers"]
  appliesTo { principal: [user, agent], resource: [document, folder], context: {} };
action "mail/send"
  appliesTo { principal: [user, agent], resource: [document, folder], context: {} };
"""

POLICIES = """
@id("readers-read")
permit (principal is user, action in Action::"readers", resource is document);

@id("editors-write")
permit (principal is user, action in [Action::"writers", Action::"mail/send"], resource)
when { principal has role && principal.role == "editor" };

@id("no-secrets-for-writers")
forbid (principal, action in Action::"writers", resource is document)
when { resource has classification && resource.classification == "secret" };

@id("frozen")
forbid (principal == user::"mallory", action in Action::"all", resource);

@id("bob-publishes-plan")
permit (principal == user::"bob", action == Action::"docs/publish", resource == document::"plan");
"""

MANIFEST = """name: groups
actions:
  docs/read: {relation: null}
  docs/search: {relation: null}
  docs/publish: {relation: null}
  mail/send: {relation: null}
"""

CALLER = Caller("svc_1", "gw", "token")


def _point() -> DecisionPoint:
    bundle = load_bundle(
        {"bundle.yaml": MANIFEST, "schema.cedarschema": SCHEMA, "p.cedar": POLICIES}
    )
    users = {"alice": {"role": "editor"}, "bob": {}, "mallory": {"role": "editor"}}
    attrs = MemoryAttributes({"user": users, "document": {"s": {"classification": "secret"}}})
    return DecisionPoint(StaticBundle(bundle, 1), ManualClock(), attributes=attrs)


def _decide(point: DecisionPoint, who: str, action: str, doc: str) -> tuple[str, list[str]]:
    req = parse_evaluation(
        {
            "subject": {"type": "user", "id": who},
            "action": {"name": action},
            "resource": {"type": "document", "id": doc},
        }
    )
    d = point.decide(req, CALLER)
    return d.verdict, [r.message if r.stage == "policy" else r.code for r in d.reasons]


def test_schema_groups_are_cedars_closure() -> None:
    acts = schema_actions(SCHEMA)
    parents = {a: sorted(p["id"] for p in e["parents"]) for a, e in acts.items()}
    assert parents["docs/read"] == ["all", "readers"]
    assert parents["docs/publish"] == ["all", "writers"]
    assert parents["mail/send"] == []
    cedar = load_bundle(
        {"bundle.yaml": MANIFEST, "schema.cedarschema": SCHEMA, "p.cedar": POLICIES}
    ).cedar
    assert cedar.groups_of("docs/search") == {"readers", "all"}


def test_policies_permit_and_forbid_through_action_groups() -> None:
    point = _point()
    assert _decide(point, "bob", "docs/read", "d") == ("allow", ["readers-read"])
    assert _decide(point, "bob", "docs/search", "d") == ("allow", ["readers-read"])
    # docs/publish is a writer, not a reader: bob has no role, so nothing permits
    assert _decide(point, "bob", "docs/publish", "d")[0] == "deny"
    assert _decide(point, "alice", "docs/publish", "d") == ("allow", ["editors-write"])
    assert _decide(point, "alice", "docs/publish", "s") == ("deny", ["no-secrets-for-writers"])
    # mail/send is in no group: the writers' forbid does not reach it
    assert _decide(point, "alice", "mail/send", "s") == ("allow", ["editors-write"])
    # a group of groups: mallory is frozen for every action under "all"
    assert _decide(point, "mallory", "docs/read", "d") == ("deny", ["frozen"])
    assert _decide(point, "mallory", "docs/publish", "d") == ("deny", ["frozen"])
    assert _decide(point, "mallory", "mail/send", "d") == ("allow", ["editors-write"])
    assert _decide(point, "bob", "docs/publish", "plan") == ("allow", ["bob-publishes-plan"])


def test_slices_follow_groups_and_named_entities() -> None:
    cedar = load_bundle(
        {"bundle.yaml": MANIFEST, "schema.cedarschema": SCHEMA, "p.cedar": POLICIES}
    ).cedar
    assert cedar.slice_ids("mail/send", "document") == ["editors-write"]
    assert cedar.slice_ids("docs/read", "folder") == ["frozen"]
    assert cedar.slice_ids("docs/read", "document", ("user", "bob"), ("document", "d")) == [
        "readers-read"
    ]
    assert "bob-publishes-plan" in cedar.slice_ids(
        "docs/publish", "document", ("user", "bob"), ("document", "plan")
    )
    assert "bob-publishes-plan" not in cedar.slice_ids(
        "docs/publish", "document", ("user", "bob"), ("document", "other")
    )
    assert cedar.slice_ids("docs/read", "folder", ("agent", "a"), ("folder", "f")) == []


def test_a_group_the_schema_does_not_declare_is_invalid() -> None:
    bad = 'permit (principal, action in Action::"nobody", resource);'
    with pytest.raises(BundleError):
        load_bundle({"bundle.yaml": MANIFEST, "schema.cedarschema": SCHEMA, "p.cedar": bad})


# -- property: any slice answers like the whole set ---------------------------------------

ACTIONS = ["docs/read", "docs/search", "docs/publish", "mail/send"]
SCOPE_ACTIONS = [
    "action",
    *[f'action == Action::"{a}"' for a in ACTIONS],
    'action in Action::"readers"',
    'action in Action::"writers"',
    'action in Action::"all"',
    'action in [Action::"mail/send", Action::"readers"]',
]
SCOPE_PRINCIPALS = [
    "principal",
    "principal is user",
    "principal is agent",
    'principal == user::"u1"',
    'principal == agent::"a1"',
    'principal in folder::"f1"',
]
SCOPE_RESOURCES = [
    "resource",
    "resource is document",
    "resource is folder",
    'resource == document::"d1"',
    'resource == folder::"f1"',
    'resource is document in folder::"f1"',
]
CONDITIONS = [
    "",
    " when { principal has depth && principal.depth > 1 }",
    ' unless { resource has classification && resource.classification == "secret" }',
    ' when { Action::"docs/read" in Action::"all" }',
    " when { context has k && context.k == 1 }",
]

policy = st.tuples(
    st.sampled_from(["permit", "forbid"]),
    st.sampled_from(SCOPE_PRINCIPALS),
    st.sampled_from(SCOPE_ACTIONS),
    st.sampled_from(SCOPE_RESOURCES),
    st.sampled_from(CONDITIONS),
)
request = st.tuples(
    st.sampled_from([("user", "u1"), ("user", "u2"), ("agent", "a1"), ("folder", "f1")]),
    st.sampled_from(ACTIONS),
    st.sampled_from([("document", "d1"), ("document", "d2"), ("folder", "f1"), ("user", "u1")]),
    st.sampled_from([0, 3]),
    st.sampled_from([{}, {"k": 1}]),
)


def _text(policies: list[tuple[str, ...]]) -> str:
    return "\n".join(
        f'@id("p{i}")\n{effect} ({p}, {a}, {r}){c};'
        for i, (effect, p, a, r, c) in enumerate(policies)
    )


@settings(max_examples=120, deadline=None)
@given(st.lists(policy, min_size=1, max_size=12), st.lists(request, min_size=1, max_size=8))
def test_any_slice_answers_like_the_whole_set(
    policies: list[tuple[str, ...]], requests: list[Any]
) -> None:
    text = _text(policies)
    sliced = CedarPolicies({"p.cedar": text}, schema=SCHEMA)
    actions = list(schema_actions(SCHEMA).values())
    for principal, action, resource, depth, ctx in requests:
        ents: list[dict[str, Any]] = [
            {
                "uid": {"type": principal[0], "id": principal[1]},
                "attrs": {"depth": depth},
                "parents": [],
            }
        ]
        rest = []
        if resource != principal:
            attrs = {"classification": "secret"} if resource[1] == "d2" else {}
            rest.append(
                {"uid": {"type": resource[0], "id": resource[1]}, "attrs": attrs, "parents": []}
            )
        got = sliced.authorize(principal, action, resource, ctx, rest, shared=SharedEntities(ents))
        full = cedarpy.is_authorized(
            {
                "principal": {"type": principal[0], "id": principal[1]},
                "action": {"type": "Action", "id": action},
                "resource": {"type": resource[0], "id": resource[1]},
                "context": ctx,
            },
            text,
            json.dumps(ents + actions + rest),
        )
        assert got.allowed == full.allowed, (text, principal, action, resource)
        named = full.diagnostics.id_annotations_by_reason
        assert set(got.policies) == {named[r] for r in full.diagnostics.reasons}
        assert bool(got.errors) == bool(full.diagnostics.errors)


def test_request_entities_are_reused_only_for_the_same_text() -> None:
    """The parsed (shared + request entities) handle is kept by the request entities' exact
    JSON text: the same resource with other attributes is parsed again and answered anew."""
    cedar = CedarPolicies({"p.cedar": POLICIES}, schema=SCHEMA)
    alice = SharedEntities(
        [{"uid": {"type": "user", "id": "alice"}, "attrs": {"role": "editor"}, "parents": []}]
    )

    def publish(attrs: dict[str, Any]) -> bool:
        rest = [{"uid": {"type": "document", "id": "x"}, "attrs": attrs, "parents": []}]
        return cedar.authorize(
            ("user", "alice"), "docs/publish", ("document", "x"), {}, rest, shared=alice
        ).allowed

    assert publish({}) is True
    assert publish({"classification": "secret"}) is False
    assert publish({}) is True
    assert publish({"classification": "secret"}) is False


def test_read_only_directory_entries_key_the_principal_exactly() -> None:
    from types import MappingProxyType

    from tessera.pdp.pipeline import _text

    assert _text(None) == "null"
    assert _text(MappingProxyType({"a": 1, "b": [True]})) == json.dumps({"a": 1, "b": [True]})
    assert _text(MappingProxyType({"a": True})) != _text(MappingProxyType({"a": 1}))
