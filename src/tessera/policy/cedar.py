"""Cedar policy sets with per-request slicing (cedarpy; docs.cedarpolicy.com).

A bundle's policies are parsed once into Cedar's JSON form (EST) and indexed by what their
scope names: the action (``==``, or ``in`` a list or an action group), the resource type
(``is``, or the type of an ``==`` entity), the principal type (likewise) and, for a scope
``principal == T::"id"`` / ``resource == T::"id"``, that entity. A request is authorized
against the *slice* of policies whose scope can match its principal, action and resource.
Scope conditions are exact in Cedar, so a policy left out of the slice could never have
matched: the slice answers exactly like the full set, while a bundle of 1,000 policies costs
about what its applicable few cost. Scopes the index cannot place (``in`` an entity, which
depends on the entity hierarchy) are kept in every slice they might match.

Action groups (``action "docs/read" in ["readers"]`` in the schema) are resolved by Cedar
itself from the schema: the action entities it derives (with the transitive closure of their
groups) are given to every request whose action is in a group, and a policy whose scope
names a group is in the slice of exactly the actions that belong to it.

Slices are built lazily and cached (per action, resource type, principal type, plus the ids
of the entity-specific policies that match). Entities shared by many requests (the principal,
its user, the action) are parsed into a Cedar ``Entities`` handle once and reused, keyed by
their exact JSON text; only the per-request resource is parsed each call.
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
MAX_SHARED: Final = 4096
ANY: Final = "*"
ACTION: Final = "Action"

Uid = tuple[str, str]


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
    actions: frozenset[str] | None  # None: any action (or one the index cannot place)
    resource_types: frozenset[str] | None  # None: any resource type
    principal_types: frozenset[str] | None  # None: any principal type
    principal: Uid | None = None  # ``principal == T::"id"``
    resource: Uid | None = None  # ``resource == T::"id"``


def _uid_of(entity: Any) -> Uid | None:
    if isinstance(entity, Mapping) and "__entity" in entity:
        entity = entity["__entity"]
    if isinstance(entity, Mapping) and isinstance(entity.get("type"), str):
        eid = entity.get("id")
        if isinstance(eid, str):
            return (entity["type"], eid)
    return None


def _entity_scope(part: Mapping[str, Any]) -> tuple[frozenset[str] | None, Uid | None]:
    """(types, uid) an entity scope (principal or resource) is limited to."""
    op = part.get("op")
    if op == "is" and isinstance(part.get("entity_type"), str):
        return frozenset({part["entity_type"]}), None
    if op == "==":
        uid = _uid_of(part.get("entity"))
        if uid is not None:
            return frozenset({uid[0]}), uid
    return None, None  # All, ``in`` an entity (hierarchy), slots: anything


def _scope(est: Mapping[str, Any]) -> _Scope:
    act = est.get("action", {})
    actions: frozenset[str] | None = None
    if act.get("op") in ("==", "in"):
        ents = act.get("entities") if act.get("op") == "in" and "entities" in act else None
        uids = [_uid_of(e) for e in (ents if ents is not None else [act.get("entity")])]
        if all(u is not None and u[0] == ACTION for u in uids):
            names = frozenset(u[1] for u in uids if u is not None)
            # ``==`` names one action; ``in`` names actions or groups (matched by membership)
            actions = names
    rtypes, ruid = _entity_scope(est.get("resource", {}))
    ptypes, puid = _entity_scope(est.get("principal", {}))
    return _Scope(actions, rtypes, ptypes, puid, ruid)


def _matches(
    s: _Scope,
    action: str,
    groups: frozenset[str],
    rtype: str,
    ptype: str | None,
    principal: Uid | None = None,
    resource: Uid | None = None,
) -> bool:
    """Can a policy with scope ``s`` match? ``ptype``/``principal``/``resource`` None: any."""
    if s.actions is not None and action not in s.actions and not (groups & s.actions):
        return False
    if s.resource_types is not None and rtype not in s.resource_types:
        return False
    if ptype is not None and s.principal_types is not None and ptype not in s.principal_types:
        return False
    if principal is not None and s.principal is not None and s.principal != principal:
        return False
    return not (resource is not None and s.resource is not None and s.resource != resource)


def policy_ids(text: str) -> list[str]:
    """Ids of the policies in ``text``: their ``@id`` annotation, else Cedar's positional id."""
    est = json.loads(cedarpy.policies_to_json_str(text))
    return [p.get("annotations", {}).get("id") or pid for pid, p in est["staticPolicies"].items()]


def schema_actions(schema: str | None) -> dict[str, dict[str, Any]]:
    """The action entities Cedar derives from a schema (``action "a" in ["g"]``), by id, each
    with the transitive closure of its groups as ``parents``. Un-namespaced actions only:
    requests name ``Action::"<name>"``."""
    if not schema:
        return {}
    try:
        derived = json.loads(str(cedarpy.Entities.from_json_str("[]", schema)))
    except ValueError as exc:
        raise PolicyError(f"schema.cedarschema: {str(exc)[:300]}") from None
    out: dict[str, dict[str, Any]] = {}
    for ent in derived:
        uid = _uid_of(ent.get("uid"))
        if uid is not None and uid[0] == ACTION:
            out[uid[1]] = {
                "uid": {"type": ACTION, "id": uid[1]},
                "attrs": {},
                "parents": list(ent.get("parents") or []),
            }
    return out


class SharedEntities:
    """Entities repeated across requests (the principal, its user), serialised once."""

    __slots__ = ("json", "uids")

    def __init__(self, entities: Sequence[Mapping[str, Any]]) -> None:
        self.json = json.dumps(list(entities))
        self.uids = frozenset((e["uid"]["type"], e["uid"]["id"]) for e in entities)


class CedarPolicies:
    """One bundle's policy set, parsed and indexed once; immutable and thread-safe."""

    def __init__(
        self,
        sources: Mapping[str, str],
        leaf_actions: Collection[str] = (),
        *,
        schema: str | None = None,
    ) -> None:
        # ``leaf_actions`` (the bundle's mapped actions) is kept for callers; groups are
        # resolved from the schema, so the index no longer needs it.
        del leaf_actions
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
                self._scopes[ident] = _scope(pol)
        actions = schema_actions(schema)
        # An action's groups, from Cedar's own closure; actions in no group need no entity.
        self._groups: dict[str, frozenset[str]] = {}
        self._action_entity: dict[str, dict[str, Any]] = {}
        for aid, ent in actions.items():
            parents = frozenset(
                u[1] for u in map(_uid_of, ent["parents"]) if u is not None and u[0] == ACTION
            )
            if ent["parents"]:
                self._groups[aid] = parents
                self._action_entity[aid] = ent
        self._grouped = list(self._action_entity.values())
        # A condition naming an action entity can ask about any action's groups.
        self._every_action = bool(self._grouped) and any(
            '"type": "Action"' in json.dumps(p.get("conditions", []))
            for p in self._policies.values()
        )
        # Entity-specific policies (``principal ==`` / ``resource ==``), by that entity.
        self._general: list[str] = []
        self._by_entity: dict[Uid, list[str]] = {}
        for pid, s in self._scopes.items():
            if s.principal is not None:
                self._by_entity.setdefault(s.principal, []).append(pid)
            elif s.resource is not None:
                self._by_entity.setdefault(s.resource, []).append(pid)
            else:
                self._general.append(pid)
        self._order = {pid: i for i, pid in enumerate(self._policies)}
        self._bases: dict[tuple[str, str, str], tuple[str, ...]] = {}
        self._slices: dict[tuple[Any, ...], Any] = {}
        self._shared: dict[tuple[str, str], Any] = {}
        # ``_shared`` handles with a request's own entities added, by the exact JSON text
        # of those entities (decisions.md 81: a parse cache, never an answer cache).
        self._with_rest: dict[tuple[tuple[str, str], str], Any] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._policies)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._policies)

    def groups_of(self, action: str) -> frozenset[str]:
        """The action groups ``action`` belongs to (transitively), from the schema."""
        return self._groups.get(action, frozenset())

    def annotation(self, policy_id: str, name: str) -> str | None:
        """The value of annotation ``@name`` on a policy (e.g. ``@approval``), if any."""
        pol = self._policies.get(policy_id)
        value = (pol or {}).get("annotations", {}).get(name)
        return value if isinstance(value, str) else None

    def is_permit(self, policy_id: str) -> bool:
        return (self._policies.get(policy_id) or {}).get("effect") == "permit"

    def slice_ids(
        self,
        action: str,
        resource_type: str,
        principal: Uid | None = None,
        resource: Uid | None = None,
    ) -> list[str]:
        """Ids of the policies that can apply (in bundle order). Without ``principal`` /
        ``resource``: every policy that can apply to some request on (action, resource
        type)."""
        groups = self.groups_of(action)
        ptype = principal[0] if principal is not None else None
        return [
            pid
            for pid, s in self._scopes.items()
            if _matches(s, action, groups, resource_type, ptype, principal, resource)
        ]

    def _key(
        self, action: str, principal: Uid, resource: Uid
    ) -> tuple[tuple[Any, ...], tuple[str, ...]]:
        base = (action, resource[0], principal[0])
        ids = self._bases.get(base)
        groups = self.groups_of(action)
        if ids is None:
            ids = tuple(
                pid
                for pid in self._general
                if _matches(self._scopes[pid], action, groups, resource[0], principal[0])
            )
            with self._lock:
                if len(self._bases) >= MAX_SLICES:
                    self._bases.clear()
                self._bases[base] = ids
        extra: tuple[str, ...] = ()
        for uid in (principal, resource) if principal != resource else (principal,):
            found = self._by_entity.get(uid)
            if found:
                extra += tuple(
                    pid
                    for pid in found
                    if _matches(
                        self._scopes[pid],
                        action,
                        groups,
                        resource[0],
                        principal[0],
                        principal,
                        resource,
                    )
                )
        return ((base, extra) if extra else (base,)), ids + extra

    def _slice(self, action: str, principal: Uid, resource: Uid) -> Any:
        key, ids = self._key(action, principal, resource)
        found = self._slices.get(key)
        if found is not None:
            return found
        ids = tuple(sorted(ids, key=self._order.__getitem__))  # bundle order, as before
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

    def _actions_for(self, action: str) -> list[dict[str, Any]]:
        """The action entities a request needs: its own (with its groups), or every grouped
        action when a policy's condition names an action entity (``Action::"a" in ...``)."""
        if self._every_action:
            return self._grouped
        act = self._action_entity.get(action)
        return [act] if act is not None else []

    def _entities(
        self, action: str, shared: SharedEntities | None, rest: Sequence[Mapping[str, Any]]
    ) -> Any:
        """The request's entities: ``shared`` + action entities (``_actions_for``) +
        ``rest``. The shared part is parsed once per distinct JSON text and reused."""
        acts = self._actions_for(action)
        uids = shared.uids if shared is not None else frozenset()
        collide = any((e["uid"]["type"], e["uid"]["id"]) in uids for e in rest) or any(
            (ACTION, a["uid"]["id"]) in uids for a in acts
        )
        if acts and not collide:
            names = {(ACTION, a["uid"]["id"]) for a in acts}
            collide = any((e["uid"]["type"], e["uid"]["id"]) in names for e in rest)
        if shared is None or collide:
            # Plain path: one JSON document, parsed by Cedar as a whole (duplicates and all).
            listed = json.loads(shared.json) if shared is not None else []
            return json.dumps(listed + acts + list(rest))
        key = (shared.json, action if acts and not self._every_action else "")
        handle = self._shared.get(key)
        if handle is None:
            text = shared.json
            if acts:
                text = json.dumps(json.loads(text) + acts)
            try:
                handle = cedarpy.Entities.from_json_str(text)
            except ValueError:
                return json.dumps(json.loads(text) + list(rest))  # Cedar reports the error
            with self._lock:
                if len(self._shared) >= MAX_SHARED:
                    self._shared.clear()
                self._shared[key] = handle
        if not rest:
            return handle
        delta = json.dumps(list(rest))
        full_key = (key, delta)
        full = self._with_rest.get(full_key)
        if full is not None:
            return full
        try:
            full = handle.with_added_json_str(delta)
        except ValueError:
            return json.dumps(json.loads(str(handle)) + list(rest))  # Cedar reports the error
        with self._lock:
            if len(self._with_rest) >= MAX_SHARED:
                self._with_rest.clear()
            self._with_rest[full_key] = full
        return full

    def authorize(
        self,
        principal: Uid,
        action: str,
        resource: Uid,
        context: Mapping[str, Any],
        entities: Sequence[Mapping[str, Any]],
        *,
        shared: SharedEntities | None = None,
    ) -> CedarAnswer:
        """Cedar authorization of one request against its slice; its entities are
        ``shared`` (see ``SharedEntities``) followed by ``entities``. Raises nothing for
        evaluation errors: they come back in ``errors`` (and Cedar skips that policy)."""
        request = {
            "principal": {"type": principal[0], "id": principal[1]},
            "action": {"type": ACTION, "id": action},
            "resource": {"type": resource[0], "id": resource[1]},
            # as text: cedarpy would serialise a dict the same way, after copying the request
            "context": json.dumps(context),
        }
        result = cedarpy.is_authorized(
            request,
            self._slice(action, principal, resource),
            self._entities(action, shared, entities),
        )
        diag = result.diagnostics
        return CedarAnswer(result.allowed, tuple(diag.reasons), tuple(diag.errors))


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
