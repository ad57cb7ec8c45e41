"""Relationship API ``/rebac/v1``: models, tuples, check, list-objects, list-users.

The shapes follow OpenFGA's HTTP API (tuple keys ``object``/``relation``/``user``,
``condition: {name, context}``, ``contextual_tuples``) with Tessera's consistency tokens:
every write answers ``Tessera-Consistency-Token``; a query that passes it back as
``consistency_token`` is answered from state at least that fresh. Admin-token protected
like ``/admin/v1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tessera.clock import iso
from tessera.http.admin import CT_HEADER, Actor, TesseraDep
from tessera.rebac.ports import RelationTuple
from tessera.rebac.service import TupleChanges
from tessera.rebac.storage import MAX_OBJECT, MAX_RELATION, MAX_USER, StoredModel, tuple_to_dict

router = APIRouter(
    prefix="/rebac/v1",
    tags=["rebac"],
    responses={
        400: {"description": "invalid input (problem+json)"},
        401: {"description": "admin token required"},
        404: {"description": "no authorization model applied"},
        422: {"description": "resolution limit exceeded"},
        503: {"description": "relationship state is stale (fail closed)"},
    },
)

_CT_PATTERN = r"^ct1\.[A-Za-z0-9_-]{1,28}$"
_NO_CTRL = r"^[^\x00-\x1f\x7f]*$"
Token = Annotated[
    str | None,
    Field(None, pattern=_CT_PATTERN, description="answer at least as fresh as this write"),
]
Context = Annotated[
    dict[str, Any] | None, Field(None, description="request context for conditions")
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConditionIn(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=_NO_CTRL)
    context: dict[str, Any] | None = None


class TupleKeyIn(_Strict):
    object: str = Field(min_length=3, max_length=MAX_OBJECT, pattern=_NO_CTRL)
    relation: str = Field(min_length=1, max_length=MAX_RELATION, pattern=_NO_CTRL)
    user: str = Field(min_length=3, max_length=MAX_USER, pattern=_NO_CTRL)

    def to_tuple(self) -> RelationTuple:
        return RelationTuple(self.object, self.relation, self.user)


class TupleIn(TupleKeyIn):
    condition: ConditionIn | None = None
    expires_at: datetime | None = Field(
        None, description="Tessera extension: RFC 3339 with offset; invisible from then on"
    )

    def to_tuple(self) -> RelationTuple:
        cond = self.condition
        return RelationTuple(
            self.object,
            self.relation,
            self.user,
            cond.name if cond else None,
            cond.context if cond else None,
            self.expires_at,
        )


class ConditionOut(BaseModel):
    name: str
    context: dict[str, Any]


class TupleOut(BaseModel):
    object: str
    relation: str
    user: str
    condition: ConditionOut | None = None
    expires_at: str | None = None


class ModelApply(_Strict):
    """Exactly one of ``dsl`` (OpenFGA DSL 1.1 text) or ``json`` (OpenFGA's JSON model:
    ``schema_version``, ``type_definitions``, ``conditions``)."""

    dsl: str | None = Field(None, min_length=1, max_length=256 * 1024)
    json_model: dict[str, Any] | None = Field(None, alias="json")

    @model_validator(mode="after")
    def _one(self) -> ModelApply:
        if (self.dsl is None) == (self.json_model is None):
            raise ValueError("give exactly one of dsl or json")
        return self


class ModelOut(BaseModel):
    id: str
    dsl: str
    json_model: dict[str, Any] = Field(alias="json")
    created_at: str
    active: bool

    model_config = ConfigDict(populate_by_name=True)


class WriteIn(_Strict):
    writes: list[TupleIn] = Field(default_factory=list, max_length=1000)
    deletes: list[TupleKeyIn] = Field(default_factory=list, max_length=1000)


class DeleteIn(_Strict):
    tuples: list[TupleKeyIn] = Field(min_length=1, max_length=1000)


class WriteOut(BaseModel):
    written: int
    deleted: int
    consistency_token: str | None


class TuplePageOut(BaseModel):
    tuples: list[TupleOut]
    next_cursor: str | None


class CheckIn(_Strict):
    user: str = Field(min_length=3, max_length=MAX_USER)
    relation: str = Field(min_length=1, max_length=MAX_RELATION)
    object: str = Field(min_length=3, max_length=MAX_OBJECT)
    context: Context = None
    contextual_tuples: list[TupleIn] = Field(default_factory=list, max_length=100)
    consistency_token: Token = None


class CheckOut(BaseModel):
    allowed: bool
    consistency_token: str | None = Field(description="the log position the answer reflects")


class ListObjectsIn(_Strict):
    user: str = Field(min_length=3, max_length=MAX_USER)
    relation: str = Field(min_length=1, max_length=MAX_RELATION)
    type: str = Field(min_length=1, max_length=MAX_OBJECT)
    context: Context = None
    contextual_tuples: list[TupleIn] = Field(default_factory=list, max_length=100)
    max_results: int | None = Field(None, ge=1, le=10_000)
    consistency_token: Token = None


class ListObjectsOut(BaseModel):
    objects: list[str]
    complete: bool
    consistency_token: str | None


class ListUsersIn(_Strict):
    object: str = Field(min_length=3, max_length=MAX_OBJECT)
    relation: str = Field(min_length=1, max_length=MAX_RELATION)
    user_filters: list[str] = Field(
        min_length=1, max_length=10, description="types (`user`) or usersets (`group#member`)"
    )
    context: Context = None
    contextual_tuples: list[TupleIn] = Field(default_factory=list, max_length=100)
    max_results: int | None = Field(None, ge=1, le=10_000)
    consistency_token: Token = None


class ListUsersOut(BaseModel):
    users: list[str]
    complete: bool
    consistency_token: str | None


def _model_out(m: StoredModel) -> dict[str, Any]:
    return {
        "id": m.id,
        "dsl": m.dsl,
        "json": m.json,
        "created_at": iso(m.created_at),
        "active": m.active,
    }


def _written(response: Response, value: TupleChanges, token: str | None) -> dict[str, Any]:
    if token:
        response.headers[CT_HEADER] = token
    return {"written": value.written, "deleted": value.deleted, "consistency_token": token}


def _tuples(items: Sequence[TupleIn]) -> list[RelationTuple]:
    return [t.to_tuple() for t in items]


# -- models -------------------------------------------------------------------------------


@router.post(
    "/models",
    status_code=201,
    response_model=ModelOut,
    responses={409: {"description": "the active policy bundle pins another model"}},
)
def apply_model(
    body: ModelApply,
    tessera: TesseraDep,
    actor: Actor,
    response: Response,
    force: Annotated[
        bool,
        Query(
            description="apply even though the active policy bundle pins another model: "
            "relation-mapped decisions then deny (model_mismatch) until a bundle pinning "
            "this model is applied"
        ),
    ] = False,
) -> dict[str, Any]:
    """Validate a model and make it the active one (OpenFGA WriteAuthorizationModel).
    Refused with 409 ``policy_model_mismatch`` when the active policy bundle pins another
    model, unless ``force=true`` (decisions.md 89)."""
    source: str | dict[str, Any] = body.dsl if body.dsl is not None else body.json_model or {}
    w = tessera.rebac.apply_model(source, actor=actor, force=force)
    if w.consistency_token:
        response.headers[CT_HEADER] = w.consistency_token
    return _model_out(w.value)


@router.get("/models", response_model=list[ModelOut])
def list_models(
    tessera: TesseraDep,
    _actor: Actor,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[dict[str, Any]]:
    """Applied models, newest first."""
    return [_model_out(m) for m in tessera.rebac.list_models(limit)]


@router.get("/models/active", response_model=ModelOut)
def active_model(tessera: TesseraDep, _actor: Actor) -> dict[str, Any]:
    """The model that checks and writes use now."""
    return _model_out(tessera.rebac.active_model())


# -- tuples -------------------------------------------------------------------------------


@router.post("/tuples/write", response_model=WriteOut)
def write_tuples(
    body: WriteIn, tessera: TesseraDep, actor: Actor, response: Response
) -> dict[str, Any]:
    """Write and delete tuples in one transaction, all or nothing (OpenFGA Write). A
    tuple the active model does not allow is refused with ``rebac_invalid_tuple``."""
    w = tessera.rebac.write_tuples(
        _tuples(body.writes), [d.to_tuple() for d in body.deletes], actor=actor
    )
    return _written(response, w.value, w.consistency_token)


@router.post("/tuples/delete", response_model=WriteOut)
def delete_tuples(
    body: DeleteIn, tessera: TesseraDep, actor: Actor, response: Response
) -> dict[str, Any]:
    """Delete tuples by key in one transaction; missing keys are ignored."""
    w = tessera.rebac.delete_tuples([d.to_tuple() for d in body.tuples], actor=actor)
    return _written(response, w.value, w.consistency_token)


@router.get("/tuples", response_model=TuplePageOut)
def read_tuples(
    tessera: TesseraDep,
    _actor: Actor,
    object: Annotated[
        str | None, Query(max_length=MAX_OBJECT, description="`type:id`, or `type:` for a type")
    ] = None,
    relation: Annotated[str | None, Query(max_length=MAX_RELATION)] = None,
    user: Annotated[str | None, Query(max_length=MAX_USER)] = None,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Stored tuples in key order (OpenFGA Read), from the store."""
    page = tessera.rebac.read_tuples(
        object=object, relation=relation, user=user, cursor=cursor, limit=limit
    )
    return {"tuples": [tuple_to_dict(t) for t in page.tuples], "next_cursor": page.next_cursor}


# -- queries ------------------------------------------------------------------------------


@router.post("/check", response_model=CheckOut)
def check(body: CheckIn, tessera: TesseraDep, _actor: Actor) -> dict[str, Any]:
    """Is ``user`` related to ``object`` as ``relation``? (OpenFGA Check)"""
    r = tessera.rebac.check(
        body.user,
        body.relation,
        body.object,
        context=body.context,
        contextual_tuples=_tuples(body.contextual_tuples),
        at_least=body.consistency_token,
    )
    return {"allowed": r.allowed, "consistency_token": r.consistency_token}


@router.post("/list-objects", response_model=ListObjectsOut)
def list_objects(body: ListObjectsIn, tessera: TesseraDep, _actor: Actor) -> dict[str, Any]:
    """Every object of ``type`` that ``user`` has ``relation`` on (OpenFGA ListObjects)."""
    a = tessera.rebac.list_objects(
        body.user,
        body.relation,
        body.type,
        context=body.context,
        contextual_tuples=_tuples(body.contextual_tuples),
        max_results=body.max_results,
        at_least=body.consistency_token,
    )
    return {
        "objects": list(a.result.items),
        "complete": a.result.complete,
        "consistency_token": a.consistency_token,
    }


@router.post("/list-users", response_model=ListUsersOut)
def list_users(body: ListUsersIn, tessera: TesseraDep, _actor: Actor) -> dict[str, Any]:
    """Users of the filter types related to ``object`` (OpenFGA ListUsers); a user reached
    only through a wildcard is reported as the wildcard."""
    a = tessera.rebac.list_users(
        body.object,
        body.relation,
        body.user_filters,
        context=body.context,
        contextual_tuples=_tuples(body.contextual_tuples),
        max_results=body.max_results,
        at_least=body.consistency_token,
    )
    return {
        "users": list(a.result.items),
        "complete": a.result.complete,
        "consistency_token": a.consistency_token,
    }
