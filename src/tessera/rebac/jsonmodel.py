"""Conversion between the typed model and OpenFGA's JSON authorization-model shape
(``schema_version``, ``type_definitions[].relations`` / ``metadata``, ``conditions``),
as returned by OpenFGA's ReadAuthorizationModel API."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from tessera.rebac.errors import ModelError, ModelIssue
from tessera.rebac.model import (
    AuthorizationModel,
    Computed,
    Condition,
    ConditionParam,
    Difference,
    Intersection,
    RelationDef,
    Rewrite,
    Source,
    This,
    TupleToUserset,
    TypeDef,
    TypeRestriction,
    Union,
)

JsonObject = dict[str, Any]


def _rewrite_to_json(node: Rewrite) -> JsonObject:
    if isinstance(node, This):
        return {"this": {}}
    if isinstance(node, Computed):
        return {"computedUserset": {"relation": node.relation}}
    if isinstance(node, TupleToUserset):
        return {
            "tupleToUserset": {
                "tupleset": {"relation": node.tupleset},
                "computedUserset": {"relation": node.computed},
            }
        }
    if isinstance(node, Union):
        return {"union": {"child": [_rewrite_to_json(c) for c in node.children]}}
    if isinstance(node, Intersection):
        return {"intersection": {"child": [_rewrite_to_json(c) for c in node.children]}}
    return {
        "difference": {
            "base": _rewrite_to_json(node.base),
            "subtract": _rewrite_to_json(node.subtract),
        }
    }


def _restriction_to_json(r: TypeRestriction) -> JsonObject:
    out: JsonObject = {"type": r.type}
    if r.relation:
        out["relation"] = r.relation
    if r.wildcard:
        out["wildcard"] = {}
    if r.condition:
        out["condition"] = r.condition
    return out


def _param_to_json(p: ConditionParam) -> JsonObject:
    out: JsonObject = {"type_name": "TYPE_NAME_" + p.type_name.upper()}
    if p.generic:
        out["generic_types"] = [{"type_name": "TYPE_NAME_" + p.generic.upper()}]
    return out


def _source_json(source: Source | None, out: JsonObject) -> JsonObject:
    if source is not None:
        out["module"] = source.module
        out["source_info"] = {"file": source.file}
    return out


def _source(meta: Any) -> Source | None:
    if isinstance(meta, Mapping) and isinstance(meta.get("module"), str):
        file = (meta.get("source_info") or {}).get("file")
        return Source(meta["module"], str(file or ""))
    return None


def model_to_json(model: AuthorizationModel) -> JsonObject:
    """The OpenFGA JSON shape of ``model`` (``metadata`` is null for a type with no
    directly assignable relation and no module, as OpenFGA writes it)."""
    tds: list[JsonObject] = []
    for td in model.types.values():
        relations = {name: _rewrite_to_json(rd.rewrite) for name, rd in td.relations.items()}
        meta = {
            name: _source_json(
                rd.source,
                {"directly_related_user_types": [_restriction_to_json(r) for r in rd.restrictions]},
            )
            for name, rd in td.relations.items()
        }
        metadata: JsonObject | None = _source_json(td.source, {})
        if meta:
            metadata = {**(metadata or {}), "relations": meta}
        tds.append({"type": td.name, "relations": relations, "metadata": metadata or None})
    out: JsonObject = {"schema_version": model.schema_version, "type_definitions": tds}
    if model.conditions:
        out["conditions"] = {}
        for c in model.conditions.values():
            cj: JsonObject = {
                "name": c.name,
                "expression": c.expression,
                "parameters": {p.name: _param_to_json(p) for p in c.params.values()},
            }
            if c.source is not None:
                cj["metadata"] = _source_json(c.source, {})
            out["conditions"][c.name] = cj
    return out


def model_digest(model: AuthorizationModel) -> str:
    """``sha256:<hex>`` of the model's OpenFGA JSON with types and conditions in name order:
    two models that define the same types, relations and conditions have the same digest,
    whichever order their DSL text listed the types in (decisions.md 85)."""
    data = model_to_json(model)
    data["type_definitions"] = sorted(data["type_definitions"], key=lambda td: str(td["type"]))
    body = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def _bad(message: str) -> ModelError:
    return ModelError([ModelIssue("invalid-json", message)])


def _name(value: Any, what: str) -> Any:
    """``value`` if it is None or a non-empty string; anything else is malformed."""
    if value is None or (isinstance(value, str) and value):
        return value
    raise _bad(f"a {what} name must be a non-empty string")


def _rel_name(obj: Any, where: str) -> str:
    if not isinstance(obj, Mapping) or not isinstance(obj.get("relation"), str):
        raise _bad(f"{where}: expected an object with a 'relation'")
    return str(obj["relation"])


def _rewrite_from_json(obj: Any) -> Rewrite:
    if not isinstance(obj, Mapping) or len(obj) != 1:
        raise _bad("a relation rewrite must have exactly one key")
    ((key, val),) = obj.items()
    if key == "this":
        return This()
    if key == "computedUserset":
        return Computed(_rel_name(val, key))
    if key == "tupleToUserset":
        if not isinstance(val, Mapping):
            raise _bad("tupleToUserset must be an object")
        return TupleToUserset(
            _rel_name(val.get("tupleset"), "tupleset"),
            _rel_name(val.get("computedUserset"), "computedUserset"),
        )
    if key in ("union", "intersection"):
        children = val.get("child") if isinstance(val, Mapping) else None
        if not isinstance(children, list) or not children:
            raise _bad(f"{key} needs a non-empty 'child' list")
        parts = tuple(_rewrite_from_json(c) for c in children)
        return Union(parts) if key == "union" else Intersection(parts)
    if key == "difference":
        if not isinstance(val, Mapping):
            raise _bad("difference must be an object")
        return Difference(
            _rewrite_from_json(val.get("base")), _rewrite_from_json(val.get("subtract"))
        )
    raise _bad(f"unknown rewrite {key!r}")


def _param_from_json(name: str, obj: Any) -> ConditionParam:
    if not isinstance(obj, Mapping) or not isinstance(obj.get("type_name"), str):
        raise _bad(f"condition parameter {name!r} needs a type_name")
    tname = str(obj["type_name"]).removeprefix("TYPE_NAME_").lower()
    generic: str | None = None
    gens = obj.get("generic_types")
    if gens:
        generic = str(gens[0]["type_name"]).removeprefix("TYPE_NAME_").lower()
    return ConditionParam(name, tname, generic)


def model_from_json(data: Mapping[str, Any], *, validate: bool = True) -> AuthorizationModel:
    """Build a model from OpenFGA's JSON shape (the AuthorizationModel message of
    openfga/api). Raises ``ModelError`` for anything malformed, never another error."""
    if not isinstance(data, Mapping):
        raise _bad("an authorization model must be a JSON object")
    try:
        model = _from_json(data)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        raise _bad(f"malformed authorization model: {type(exc).__name__}: {exc}") from None
    if validate:
        from tessera.rebac.validate import validate_model

        validate_model(model)
    return model


def _from_json(data: Mapping[str, Any]) -> AuthorizationModel:
    version = data.get("schema_version")
    if not version:
        raise ModelError([ModelIssue("schema-version-required", "schema version required")])
    if version not in ("1.1", "1.2"):
        raise ModelError([ModelIssue("invalid-schema", f"invalid schema {version}")])
    types: dict[str, TypeDef] = {}
    for tdj in data.get("type_definitions") or []:
        name = tdj.get("type")
        if not isinstance(name, str):
            raise _bad("a type definition needs a 'type'")
        meta = ((tdj.get("metadata") or {}).get("relations")) or {}
        rels: dict[str, RelationDef] = {}
        for rname, rj in (tdj.get("relations") or {}).items():
            restrictions = tuple(
                TypeRestriction(
                    _name(r["type"], "type"),
                    _name(r.get("relation") or None, "relation"),
                    "wildcard" in r,
                    _name(r.get("condition") or None, "condition"),
                )
                for r in ((meta.get(rname) or {}).get("directly_related_user_types") or [])
            )
            rname = _name(rname, "relation")
            rels[rname] = RelationDef(
                rname, _rewrite_from_json(rj), restrictions, source=_source(meta.get(rname))
            )
        if name in types:
            raise ModelError([ModelIssue("duplicated-error", f"the type `{name}` is a duplicate.")])
        types[name] = TypeDef(name, rels, source=_source(tdj.get("metadata")))
    conditions: dict[str, Condition] = {}
    for cname, cj in (data.get("conditions") or {}).items():
        if cj.get("name", cname) != cname:
            raise ModelError(
                [
                    ModelIssue(
                        "different-nested-condition-name",
                        f"condition key is `{cname}` but nested name property is {cj.get('name')}",
                    )
                ]
            )
        params = {
            _name(p, "parameter"): _param_from_json(p, pj)
            for p, pj in (cj.get("parameters") or {}).items()
        }
        expression = cj.get("expression")
        if not isinstance(expression, str) or not expression.strip():
            raise _bad(f"condition {cname!r} needs an expression")
        conditions[cname] = Condition(cname, params, expression, source=_source(cj.get("metadata")))
    return AuthorizationModel(str(version), types, conditions)
