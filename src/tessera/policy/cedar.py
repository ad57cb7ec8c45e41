"""Cedar policy sets with per-request slicing (cedarpy; docs.cedarpolicy.com).

A bundle's policies are parsed once into Cedar's JSON form (EST) and indexed by the
action and resource type their scope names. A request is authorized against the *slice*
of policies that can apply to its (action, resource type): policies whose scope names
that action (or all actions, or an action we cannot place, such as an action group) and
that resource type (or any). Scope conditions are exact in Cedar, so a policy left out of
the slice could never have matched: the slice answers exactly like the full set, but a
bundle of 1,000 policies costs about what its relevant few cost. Slices are built
lazily and cached.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import cedarpy

from tessera.errors import InvalidInput

MAX_SLICES: Final = 4096
ANY: Final = "*"


class PolicyError(InvalidInput):
    """Cedar policies or schema that do not parse or validate."""

    code = "policy_invalid"
    title = "Invalid policy"


@dataclass(frozen=True, slots=True)
class CedarAnswer:
    allowed: bool
    policies: tuple[str, ...]  # ids of the policies that determined the answer
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Scope:
    actions: frozenset[str] | None  # None: any action
    resource_types: frozenset[str] | None  # None: any resource type


def _scope(est: Mapping[str, Any], leaf_actions: Collection[str]) -> _Scope:
    act = est.get("action", {})
    actions: frozenset[str] | None = None
    if act.get("op") == "==":
        actions = frozenset({act["entity"]["id"]})
    elif act.get("op") == "in":
        ents = act.get("entities") or [act.get("entity")]
        ids = frozenset(e["id"] for e in ents if e)
        # An id that is not a known action may be an action group: keep the policy always.
        actions = ids if ids <= set(leaf_actions) else None
    res = est.get("resource", {})
    rtypes: frozenset[str] | None = None
    if res.get("op") == "is":
        rtypes = frozenset({res["entity_type"]})
    elif res.get("op") == "==" and "entity" in res:
        rtypes = frozenset({res["entity"]["type"]})
    return _Scope(actions, rtypes)


def policy_ids(text: str) -> list[str]:
    """Ids of the policies in ``text``: their ``@id`` annotation, else Cedar's positional id."""
    est = json.loads(cedarpy.policies_to_json_str(text))
    return [p.get("annotations", {}).get("id") or pid for pid, p in est["staticPolicies"].items()]


class CedarPolicies:
    """One bundle's policy set, parsed and indexed once; immutable and thread-safe."""

    def __init__(self, sources: Mapping[str, str], leaf_actions: Collection[str]) -> None:
        self._policies: dict[str, dict[str, Any]] = {}
        self._scopes: dict[str, _Scope] = {}
        for name, text in sorted(sources.items()):
            try:
                est = json.loads(cedarpy.policies_to_json_str(text))
            except (ValueError, RuntimeError) as exc:
                raise PolicyError(f"{name}: {str(exc)[:300]}") from None
            if est.get("templates"):
                raise PolicyError(f"{name}: policy templates are not supported")
            for pid, pol in est["staticPolicies"].items():
                ident = pol.get("annotations", {}).get("id") or f"{name}:{pid}"
                if ident in self._policies:
                    raise PolicyError(f"{name}: duplicate policy id {ident!r}")
                self._policies[ident] = pol
                self._scopes[ident] = _scope(pol, leaf_actions)
        self._slices: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._policies)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._policies)

    def annotation(self, policy_id: str, name: str) -> str | None:
        """The value of annotation ``@name`` on a policy (e.g. ``@approval``), if any."""
        pol = self._policies.get(policy_id)
        value = (pol or {}).get("annotations", {}).get(name)
        return value if isinstance(value, str) else None

    def is_permit(self, policy_id: str) -> bool:
        return (self._policies.get(policy_id) or {}).get("effect") == "permit"

    def slice_ids(self, action: str, resource_type: str) -> list[str]:
        return [
            pid
            for pid, s in self._scopes.items()
            if (s.actions is None or action in s.actions)
            and (s.resource_types is None or resource_type in s.resource_types)
        ]

    def _slice(self, action: str, resource_type: str) -> Any:
        key = (action, resource_type)
        found = self._slices.get(key)
        if found is not None:
            return found
        ids = self.slice_ids(action, resource_type)
        doc = {
            "staticPolicies": {pid: self._policies[pid] for pid in ids},
            "templates": {},
            "templateLinks": [],
        }
        built = cedarpy.PolicySet.from_json_str(json.dumps(doc))
        with self._lock:
            if len(self._slices) >= MAX_SLICES:
                self._slices.clear()
            self._slices[key] = built
        return built

    def authorize(
        self,
        principal: tuple[str, str],
        action: str,
        resource: tuple[str, str],
        context: Mapping[str, Any],
        entities: Sequence[Mapping[str, Any]],
    ) -> CedarAnswer:
        """Cedar authorization of one request against its slice. Raises nothing for
        evaluation errors: they come back in ``errors`` (and Cedar skips that policy)."""
        request = {
            "principal": _uid(*principal),
            "action": _uid("Action", action),
            "resource": _uid(*resource),
            "context": dict(context),
        }
        # Entities as a JSON string: cedarpy would serialise a list the same way, slower.
        result = cedarpy.is_authorized(
            request, self._slice(action, resource[0]), json.dumps(list(entities))
        )
        diag = result.diagnostics
        return CedarAnswer(result.allowed, tuple(diag.reasons), tuple(diag.errors))


def _uid(etype: str, eid: str) -> str:
    return f"{etype}::{json.dumps(eid)}"


def validate_cedar(sources: Mapping[str, str], schema: str) -> list[str]:
    """Every problem of the policies against the schema (empty when valid)."""
    try:
        cedarpy.Schema.from_str(schema)
    except ValueError as exc:
        return [f"schema.cedarschema: {str(exc)[:300]}"]
    problems: list[str] = []
    for name, text in sorted(sources.items()):
        try:
            result = cedarpy.validate_policies(text, schema)
        except (ValueError, RuntimeError) as exc:
            problems.append(f"{name}: {str(exc)[:300]}")
            continue
        if not result.validation_passed:
            problems.extend(f"{name}: {e.error}"[:400] for e in result.errors)
    return problems
